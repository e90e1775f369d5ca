"""Values the validation could not see: it samples the first ``matrix.SAMPLE_ROWS`` cells, so a
negative value, NaN or Inf further down must still be refused, naming the cell and gene: never a
crash (before, for a negative count: scikit-learn's "Input X contains NaN" ValueError from its
log) and never a silent answer (before, NaN and Inf were read as 0)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import cellfoundry as cf
from cellfoundry.data.matrix import SAMPLE_ROWS
from tests.conftest import make_counts_adata

N = SAMPLE_ROWS + 600
ROW = SAMPLE_ROWS + 321


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("m") / "model"
    ref = make_counts_adata(n_cells=400, n_genes=120, n_types=4, seed=1)
    cf.train(ref, "cell_type", "logreg", out=out, n_features=None)
    return out


def _query(tmp_path: Path, value: float) -> tuple[Path, str, str]:
    q = make_counts_adata(n_cells=N, n_genes=120, n_types=4, seed=2)
    x = sp.csr_matrix(q.X, dtype=np.float32)
    at = int(x.indptr[ROW])
    x.data[at] = value
    q.X = x
    path = tmp_path / "q.h5ad"
    q.write_h5ad(path)
    return path, str(q.obs_names[ROW]), str(q.var_names[int(x.indices[at])])


@pytest.mark.parametrize("value", [-50.0, -1.0])
@pytest.mark.parametrize("chunk_size", [500, 10_000])
def test_a_negative_count_past_the_sample_is_refused_with_its_cell(
    model_dir: Path, tmp_path: Path, value: float, chunk_size: int
) -> None:
    path, cell, gene = _query(tmp_path, value)
    assert cf.inspect(path).ok  # the sample holds no negative value
    with pytest.raises(cf.DataError) as err:
        cf.annotate(path, model_dir, chunk_size=chunk_size)
    e = err.value
    assert e.code == "negative_values"
    assert f"cell '{cell}' (row {ROW:,}), gene '{gene}'" in e.message and f"{value:g}" in e.message
    assert e.hint and "never negative" in e.hint


def _annotate_cli(path: Path, model: Path, out: Path) -> subprocess.CompletedProcess[str]:
    args = ["annotate", str(path), "--model", str(model), "--out", str(out)]
    return subprocess.run(
        [sys.executable, "-m", "cellfoundry.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_cli_says_it_in_one_line(model_dir: Path, tmp_path: Path) -> None:
    path, cell, _ = _query(tmp_path, -3.0)
    proc = _annotate_cli(path, model_dir, tmp_path / "out.csv")
    assert proc.returncode == 2, proc.stderr
    assert f"cell '{cell}'" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------ NaN and Inf past the sample, on real PBMC 3k
# Before: NaN and +Inf there were read as 0 by ``transform`` (the cell annotated as if those genes
# had no counts, no warning) and -Inf was called a "negative value"; a refit's reference and the
# ortholog mapping carried them on; the Geneformer tokenizer refused the chunk without saying
# where ("negative or non-finite values in the raw-count matrix", code invalid_data).


@pytest.fixture(scope="module")
def pbmc_model(pbmc3k: ad.AnnData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pbmc") / "model"
    cf.train(pbmc3k, "cell_type", "logreg", out=out, n_features=1000)
    return out


def _plant(
    adata: ad.AnnData, value: float, row: int = ROW, below: int | None = None
) -> tuple[ad.AnnData, str, str]:
    """A copy of ``adata`` with ``value`` as the first stored value of ``row`` (of a gene before
    column ``below``), with that cell's and gene's names."""
    out = adata.copy()
    x = sp.csr_matrix(out.X, dtype=np.float32, copy=True)
    lo, hi = int(x.indptr[row]), int(x.indptr[row + 1])
    at = lo if below is None else lo + int(np.flatnonzero(x.indices[lo:hi] < below)[0])
    x.data[at] = value
    out.X = x
    return out, str(out.obs_names[row]), str(out.var_names[int(x.indices[at])])


def _where(value: float, cell: str, gene: str) -> str:
    shown = "NaN" if np.isnan(value) else ("Inf" if value > 0 else "-Inf")
    return f"the first {shown} at cell '{cell}' (row {ROW:,}), gene '{gene}'"


NON_FINITE = [np.nan, np.inf, -np.inf]


@pytest.mark.parametrize("value", NON_FINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("chunk_size", [500, 10_000])
def test_nan_or_inf_past_the_sample_is_refused_with_its_cell(
    pbmc3k: ad.AnnData, pbmc_model: Path, tmp_path: Path, value: float, chunk_size: int
) -> None:
    q, cell, gene = _plant(pbmc3k, value)
    path = tmp_path / "q.h5ad"
    q.write_h5ad(path)
    assert cf.inspect(path).ok  # the validation's sample (the first 2,000 cells) is clean
    with pytest.raises(cf.DataError) as err:
        cf.annotate(path, pbmc_model, chunk_size=chunk_size)
    e = err.value
    first = ROW // chunk_size * chunk_size
    last = min(first + chunk_size, q.n_obs)
    n_nan = int(np.isnan(value))
    assert e.code == "non_finite_values"
    assert e.message == (
        f"X holds NaN or Inf values past the cells the validation sampled: 1 in cells "
        f"{first + 1:,}-{last:,} ({n_nan} NaN, {1 - n_nan} Inf), {_where(value, cell, gene)}"
    )
    assert e.hint == "replace NaN/Inf, e.g. with 0, or give the raw counts in layers['counts']"
    # the same file without the planted value is annotated
    clean = tmp_path / "clean.h5ad"
    pbmc3k.write_h5ad(clean)
    assert len(cf.annotate(clean, pbmc_model, chunk_size=chunk_size).labels) == pbmc3k.n_obs


def test_the_cli_says_nan_in_one_line(pbmc3k: ad.AnnData, pbmc_model: Path, tmp_path: Path) -> None:
    q, cell, gene = _plant(pbmc3k, np.nan)
    path = tmp_path / "q.h5ad"
    q.write_h5ad(path)
    out = tmp_path / "out.csv"
    proc = _annotate_cli(path, pbmc_model, out)
    assert proc.returncode == 2, proc.stderr
    # the progress bar's line ends in a carriage return, not a newline: the error follows it
    err = proc.stderr[proc.stderr.index("error: ") :]
    lines = err.splitlines()
    assert lines[0].startswith("error: X holds NaN or Inf values past the cells")
    assert lines[0].endswith(_where(np.nan, cell, gene))
    assert (
        lines[1]
        == "  fix: replace NaN/Inf, e.g. with 0, or give the raw counts in layers['counts']"
    )
    assert "Traceback" not in proc.stderr and not out.exists()


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_the_geneformer_token_stream_refuses_it_too(
    pbmc3k: ad.AnnData, shared_dir: Path, value: float
) -> None:
    from cellfoundry.models.geneformer.dictionaries import load_dictionaries
    from cellfoundry.models.geneformer.tokenizer import RankValueTokenizer

    tokenizer = RankValueTokenizer(
        load_dictionaries(shared_dir / "vocab" / "geneformer_v1", 25426), 2048
    )
    q, cell, gene = _plant(pbmc3k, value)
    plan = tokenizer.plan(q)
    with pytest.raises(cf.DataError) as err:
        for _ in tokenizer.iter_tokens(q, plan, chunk_size=1024):
            pass
    assert err.value.code == "non_finite_values"
    assert "in cells 2,049-2,638" in err.value.message
    assert err.value.message.endswith(_where(value, cell, gene))


def test_a_refit_reference_with_nan_past_the_sample_is_refused(tmp_path: Path) -> None:
    """The reference of a query-aware refit is read by its own stream (before: the NaN became a
    0 count in the refit model's training cells)."""
    from cellfoundry.models.baselines.refit import clear_refit_cache

    clear_refit_cache()
    ref = make_counts_adata(n_cells=N, n_genes=400, n_types=3, seed=21)
    cf.train(ref, "cell_type", "logreg", out=tmp_path / "m", n_features=None)
    qry = make_counts_adata(n_cells=80, n_genes=400, n_types=3, seed=22)[:, :200].copy()
    bad, cell, gene = _plant(ref, np.nan, below=200)  # a gene the query shares
    with pytest.raises(cf.DataError) as err:
        cf.annotate(qry, tmp_path / "m", reference=bad)
    assert err.value.code == "non_finite_values"
    assert err.value.message.endswith(_where(np.nan, cell, gene))
    assert cf.annotate(qry, tmp_path / "m", reference=ref).gene_panel_mode == "refit"


def test_the_ortholog_mapping_refuses_it_before_mapping(
    pbmc3k: ad.AnnData, shared_dir: Path
) -> None:
    """Mouse genes are mapped to human ones before any model reads them: the check names the
    mouse gene (a many-to-one sum could otherwise hide a negative value in a positive one)."""
    from cellfoundry.data.species import to_human_space
    from tests.species_data import mouseify

    mouse = mouseify(pbmc3k, shared_dir, symbol_column="gene_symbols")
    bad, cell, gene = _plant(mouse, np.nan)
    assert gene in set(mouse.var_names) and gene not in set(pbmc3k.var["gene_symbols"])
    with pytest.raises(cf.DataError) as err:
        to_human_space(bad)
    assert err.value.code == "non_finite_values"
    assert err.value.message.endswith(_where(np.nan, cell, gene))
    neg, cell, gene = _plant(mouse, -4.0)
    with pytest.raises(cf.DataError) as err:
        to_human_space(neg)
    assert err.value.code == "negative_values" and f"cell '{cell}'" in err.value.message
    # a report's mapping of the first cells (max_cells) reads only those cells
    human, _ = to_human_space(bad, max_cells=500)
    assert human.n_obs == 500 and list(human.obs_names) == list(bad.obs_names[:500])
