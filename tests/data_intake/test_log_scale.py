"""Any normalisation: log base and per-cell total detected, converted to log1p CP10k or refused.

Every input is built from the real PBMC 3k counts with scanpy / numpy; the reference for a
conversion is scanpy's own ``normalize_total(target_sum=1e4)`` + ``log1p`` of the counts.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

import cellfoundry as cf
from cellfoundry.data.prepare import features, plan_input
from cellfoundry.data.report import validate
from cellfoundry.errors import DataError


@pytest.fixture(scope="module")
def counts(pbmc3k: ad.AnnData) -> ad.AnnData:
    """400 real cells, genes expressed in at least one of them, float64 counts."""
    a = pbmc3k[:400].copy()
    a.X = sp.csr_matrix(a.X, dtype=np.float64)
    keep = np.asarray((a.X > 0).sum(axis=0)).ravel() > 0
    return a[:, keep].copy()


def scanpy_log1p_cp10k(a: ad.AnnData) -> np.ndarray:
    b = ad.AnnData(sp.csr_matrix(a.X, dtype=np.float64))
    sc.pp.normalize_total(b, target_sum=1e4)
    sc.pp.log1p(b)
    return np.asarray(b.X.toarray())


def with_x(a: ad.AnnData, x: sp.spmatrix | np.ndarray) -> ad.AnnData:
    return ad.AnnData(X=sp.csr_matrix(x, dtype=np.float32), obs=a.obs.copy(), var=a.var.copy())


def converted(a: ad.AnnData) -> np.ndarray:
    """The features every baseline sees for ``a`` (all its genes, in order)."""
    plan = plan_input(a, list(a.var_names), key_kind="ensembl", min_coverage=0.0)
    return np.asarray(features(a, plan).toarray())


def scanpy_log(a: ad.AnnData, target: float | None, base: float | None) -> sp.csr_matrix:
    b = ad.AnnData(sp.csr_matrix(a.X, dtype=np.float64))
    sc.pp.normalize_total(b, target_sum=target)
    sc.pp.log1p(b, base=base)
    return sp.csr_matrix(b.X)


def log1p_of_counts(a: ad.AnnData) -> sp.csr_matrix:
    x = sp.csr_matrix(a.X, dtype=np.float64, copy=True)
    x.data = np.log1p(x.data)
    return x


CASES: dict[str, tuple[Callable[[ad.AnnData], sp.csr_matrix], str, str]] = {
    "log1p CPM": (lambda a: scanpy_log(a, 1e6, None), "e", "1e6"),
    "log2 CP10k": (lambda a: scanpy_log(a, 1e4, 2), "2", "1e4"),
    "log10 CP10k": (lambda a: scanpy_log(a, 1e4, 10), "10", "1e4"),
    "log1p median total": (lambda a: scanpy_log(a, None, None), "e", "median"),
    "log1p of raw counts": (log1p_of_counts, "e", "none"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_log_scale_detected_and_converted_exactly(name: str, counts: ad.AnnData) -> None:
    make, base, target = CASES[name]
    a = with_x(counts, make(counts))
    info = validate(a).matrix("X")
    assert info is not None and info.kind == "log_normalized"
    assert (info.log_base, info.log_target, info.log_gene_subset) == (base, target, False)
    np.testing.assert_allclose(converted(a), scanpy_log1p_cp10k(counts), atol=1e-5)


@pytest.mark.parametrize(("target", "base"), [(1e4, None), (1e6, 2)])
def test_gene_subset_gets_a_plausible_scale(target: float, base: float | None, counts) -> None:
    """Log-normalised over all genes, then only 1,500 genes kept (as many shared files are)."""
    full = scanpy_log(counts, target, base)
    top = np.sort(np.argsort(-np.asarray(counts.X.sum(axis=0)).ravel())[:1500])
    a = with_x(counts[:, top], full[:, top])
    info = validate(a).matrix("X")
    assert info is not None and info.log_gene_subset and info.log_target_sum == target
    assert info.log_base == ("e" if base is None else str(base))
    # converted with the file's own totals (over all genes), not re-normalised over the subset
    np.testing.assert_allclose(converted(a), scanpy_log1p_cp10k(counts)[:, top], atol=1e-5)


def test_low_depth_ambient_corrected_counts_are_counts(counts: ad.AnnData) -> None:
    """SoupX-style correction of thinned counts: non-integer, small values, yet counts."""
    rng = np.random.default_rng(0)
    thin = counts.X.copy()
    thin.data = rng.binomial(thin.data.astype(np.int64), 0.04).astype(np.float64)
    thin.eliminate_zeros()
    ambient = np.asarray(counts.X.sum(axis=0)).ravel()
    ambient /= ambient.sum()
    depth = np.asarray(thin.sum(axis=1)).ravel()
    rho = rng.uniform(0.05, 0.2, thin.shape[0])  # contamination share per cell
    dense = thin.toarray()
    corrected = np.where(dense > 0, np.maximum(dense - (rho * depth)[:, None] * ambient, 0), 0)
    x = sp.csr_matrix(corrected)
    x.eliminate_zeros()
    assert x.data.max() < 30 and np.mean(x.data != np.round(x.data)) > 0.9  # low depth, non-integer
    a = with_x(counts, x)
    rep = validate(a)
    assert rep.matrix("X").kind == "noninteger_counts" and rep.chosen["counts"] == "X"
    ref = ad.AnnData(a.X.astype(np.float64), var=a.var.copy())
    np.testing.assert_allclose(converted(a), scanpy_log1p_cp10k(ref), atol=1e-5)


def test_sct_like_residuals_and_scaled_data_are_refused(counts: ad.AnnData) -> None:
    res = ad.AnnData(sp.csr_matrix(counts.X, dtype=np.float64))
    sc.experimental.pp.normalize_pearson_residuals(res)  # SCTransform-like residuals
    scaled = ad.AnnData(scanpy_log(counts, 1e4, None))
    sc.pp.scale(scaled)
    for x in (res.X, scaled.X):
        a = ad.AnnData(X=np.asarray(x, dtype=np.float32), obs=counts.obs.copy(), var=counts.var)
        rep = validate(a)
        assert rep.matrix("X").kind == "scaled" and not rep.ok
        with pytest.raises(DataError) as err:
            plan_input(a, list(a.var_names), key_kind="ensembl")
        assert "raw counts" in str(err.value.hint)


def test_log_values_without_a_scale_are_refused_with_a_hint(counts: ad.AnnData) -> None:
    """log1p values rounded to two decimals (a CSV export) of a gene subset: no scale fits."""
    full = scanpy_log(counts, 1e4, None)
    top = np.sort(np.argsort(-np.asarray(counts.X.sum(axis=0)).ravel())[:1500])
    x = full[:, top].copy()
    x.data = np.round(x.data, 2)
    a = with_x(counts[:, top], x)
    rep = validate(a)
    info = rep.matrix("X")
    assert info is not None and info.kind == "log_normalized" and info.log_target == "unknown"
    assert any(m.code == "log_scale_unknown" for m in rep.messages)
    with pytest.raises(DataError) as err:
        plan_input(a, list(a.var_names), key_kind="ensembl")
    assert err.value.code == "unknown_normalisation" and "target_sum=1e4" in str(err.value.hint)


def test_annotating_log2_cp10k_equals_annotating_counts(pbmc3k: ad.AnnData, tmp_path) -> None:
    ref = pbmc3k[400:1400].copy()
    cf.train(ref, "cell_type", "logreg", out=tmp_path / "m", n_features=300)
    q = pbmc3k[:400].copy()
    log2 = ad.AnnData(
        X=scanpy_log(q, 1e4, 2).astype(np.float32), obs=q.obs.copy(), var=q.var.copy()
    )
    np.testing.assert_allclose(
        cf.annotate(log2, tmp_path / "m").probabilities,
        cf.annotate(q, tmp_path / "m").probabilities,
        atol=1e-4,
    )


def test_real_log_normalised_files_get_plausible_scales(shared_dir: Path, tmp_path) -> None:
    data = shared_dir / "data"
    sym = cf.inspect(data / "symphony_pbmcs_small_lognorm.h5ad").matrix("X")
    assert sym is not None and sym.kind == "log_normalized"
    assert (sym.log_base, sym.log_target, sym.log_gene_subset) == ("e", "1e4", True)
    for name in ("scClassify_wang_subset", "scClassify_xin_subset"):
        m = cf.inspect(data / f"{name}.h5ad").matrix("X")
        assert m is not None and (m.log_base, m.log_target) == ("2", "1e6"), name
    # a small panel of a log2-CPM file still gets its scale (its cells' totals stay far below 1e4)
    xin = ad.read_h5ad(data / "scClassify_xin_subset.h5ad")
    keep = np.sort(np.random.default_rng(0).choice(xin.n_vars, 98, replace=False))
    small = validate(xin[:, keep].copy()).matrix("X")
    assert small is not None and (small.log_base, small.log_target) == ("2", "1e6")
    # `cellfoundry inspect` shows what was found
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cellfoundry.cli",
            "inspect",
            str(data / "scClassify_xin_subset.h5ad"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "log2(1 + x), per-cell total 1,000,000" in out.stdout
    assert "log_scale_converted" in out.stdout
