"""Shared fixtures: the real data folder (skips when absent) and small synthetic AnnData."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import settings

# Timing varies on a shared 2-core machine: no per-example deadlines (speed lives in benchmarks/).
settings.register_profile("cellfoundry", deadline=None)
settings.load_profile("cellfoundry")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CELLFOUNDRY_SHARED", ROOT.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared` beside the repository (real datasets, vocabularies, specs), or skip."""
    if not (SHARED / "data").is_dir():
        pytest.skip(f"real data folder {SHARED} is absent (CI always has it)")
    return SHARED


@pytest.fixture(scope="session")
def pbmc3k(shared_dir: Path) -> ad.AnnData:
    """The real PBMC 3k counts with 8 labelled cell types (read once per session; do not modify)."""
    return ad.read_h5ad(shared_dir / "data" / "pbmc3k_labeled_counts.h5ad")


def make_counts_adata(
    n_cells: int = 300, n_genes: int = 200, n_types: int = 3, seed: int = 0, symbols: bool = True
) -> ad.AnnData:
    """Synthetic raw counts where each cell type over-expresses its own block of genes."""
    rng = np.random.default_rng(seed)
    types = rng.integers(0, n_types, n_cells)
    base = rng.gamma(0.6, 1.0, n_genes)
    block = n_genes // (n_types + 1)
    rates = np.tile(base, (n_cells, 1))
    for t in range(n_types):
        rates[types == t, t * block : (t + 1) * block] *= 8.0
    depth = rng.integers(800, 3000, n_cells)
    rates = rates / rates.sum(axis=1, keepdims=True) * depth[:, None]
    counts = rng.poisson(rates).astype(np.float32)
    names = (
        [f"GENE{i}" for i in range(n_genes)]
        if symbols
        else [f"ENSG{i:011d}" for i in range(n_genes)]
    )
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical([f"type_{t}" for t in types])},
        index=[f"cell{i}" for i in range(n_cells)],
    )
    return ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=names))


@pytest.fixture
def counts_adata() -> ad.AnnData:
    return make_counts_adata()


# --- No silent skips: under CI=true a skip fails the run unless it is on tests/skip_allowlist.txt ---

_ALLOWLIST = ROOT / "tests" / "skip_allowlist.txt"
_skipped: list[tuple[str, str]] = []


def _allowed_skips() -> dict[str, str]:
    """Node-id prefixes allowed to skip, each with its reason (lines `node id | reason`)."""
    allowed: dict[str, str] = {}
    for line in _ALLOWLIST.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            node, _, reason = line.partition("|")
            if not reason.strip():
                raise ValueError(f"{_ALLOWLIST}: '{line}' has no reason after '|'")
            allowed[node.strip()] = reason.strip()
    return allowed


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append((report.nodeid, str(reason)))


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _ci() or not _skipped:
        return
    allowed = _allowed_skips()
    bad = [(n, r) for n, r in _skipped if not any(n.startswith(a) for a in allowed)]
    if bad:
        lines = "\n".join(f"  {n}: {r}" for n, r in bad)
        print(
            f"\nCI=true and {len(bad)} test(s) skipped that are not on {_ALLOWLIST.name}:\n{lines}\n"
            "Fix the cause of each skip, or add it to the allowlist with its reason."
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
