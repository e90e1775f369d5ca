"""SCimilarity preprocessing and embedding on real cells, against the official code."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scim_helpers import official, real_gene_order, synthetic_genes, write_official_checkpoint

from cellfoundry.errors import CoverageError, DataError
from cellfoundry.models.scimilarity import SCimilarityModel
from cellfoundry.models.scimilarity.preprocess import iter_lognorm, plan, preprocess

N_CELLS = 500


def _official_lognorm(counts: sp.csr_matrix, symbols: list[str], genes: list[str]) -> np.ndarray:
    """The official order: align_dataset (symbols in var.index, counts layer) then lognorm_counts."""
    utils = official("utils")
    q = ad.AnnData(X=counts.copy(), var=pd.DataFrame(index=symbols))
    q.layers["counts"] = counts.copy()
    q = utils.lognorm_counts(utils.align_dataset(q, genes))
    assert list(q.var_names) == genes
    return np.asarray(q.X.toarray() if sp.issparse(q.X) else q.X)


@pytest.fixture(scope="module")
def pbmc_sub(shared_dir: Path) -> ad.AnnData:
    a = ad.read_h5ad(shared_dir / "data" / "pbmc3k_labeled_counts.h5ad")
    return a[:N_CELLS].copy()


def test_pbmc3k_ensembl_names_equal_official(pbmc_sub: ad.AnnData, shared_dir: Path) -> None:
    """pbmc3k: Ensembl var_names, symbols in var['gene_symbols'] -> matched by symbol."""
    genes = real_gene_order(shared_dir)
    ours = preprocess(pbmc_sub, genes)
    assert ours.shape == (N_CELLS, 28231) and ours.dtype == np.float32
    expected = _official_lognorm(
        sp.csr_matrix(pbmc_sub.X), pbmc_sub.var["gene_symbols"].tolist(), genes
    )
    assert np.abs(ours.toarray() - expected).max() <= 1e-5
    # the per-cell total is over the aligned genes only: expm1 rows sum to 1e4
    np.testing.assert_allclose(np.expm1(ours.toarray().astype(np.float64)).sum(1), 1e4, rtol=1e-4)
    missing = set(genes) - set(pbmc_sub.var["gene_symbols"])
    cols = [i for i, g in enumerate(genes) if g in missing]
    assert len(cols) > 8000 and ours[:, cols].nnz == 0  # zero-filled


def test_celltypist_sample_symbols_equal_official(shared_dir: Path) -> None:
    a = ad.read_h5ad(shared_dir / "data" / "celltypist_sample_unlabeled.h5ad")[:200].copy()
    genes = real_gene_order(shared_dir)
    p = plan(a, genes)
    assert p.n_present == 19530
    ours = preprocess(a, genes)
    expected = _official_lognorm(sp.csr_matrix(a.X), list(a.var_names), genes)
    assert np.abs(ours.toarray() - expected).max() <= 1e-5


def test_embeddings_on_real_cells_equal_official_pipeline(
    pbmc_sub: ad.AnnData, shared_dir: Path, tmp_path: Path
) -> None:
    """Whole path: our embed(adata) == official CellEmbedding on the official preprocessing."""
    genes = real_gene_order(shared_dir)
    folder = write_official_checkpoint(tmp_path / "m", genes, [48, 40, 32], 16, seed=5)
    ce = official("cell_embedding").CellEmbedding(str(folder))
    x = _official_lognorm(sp.csr_matrix(pbmc_sub.X), pbmc_sub.var["gene_symbols"].tolist(), genes)
    expected = ce.get_embeddings(x.astype(np.float32))
    m = SCimilarityModel.load(folder)
    got = m.embed(pbmc_sub, batch_size=64)
    assert got.shape == (N_CELLS, 16) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-5


def test_backed_file_streams_in_bounded_chunks(
    pbmc_sub: ad.AnnData, tmp_path: Path, tiny_folder: Path
) -> None:
    genes = synthetic_genes(64)
    rng = np.random.default_rng(0)
    counts = sp.csr_matrix(rng.poisson(0.7, (300, 80)).astype(np.float32))
    names = [*genes[::-1][:60], *[f"OTHER{i}" for i in range(20)]]
    path = tmp_path / "q.h5ad"
    ad.AnnData(X=counts, var=pd.DataFrame(index=names)).write_h5ad(path)
    m = SCimilarityModel.load(tiny_folder)
    in_mem = m.embed(ad.read_h5ad(path), batch_size=300)
    backed = ad.read_h5ad(path, backed="r")
    p = plan(backed, genes)
    sizes = [x.shape[0] for _, x in iter_lognorm(backed, p, chunk_size=64)]
    assert max(sizes) == 64 and sum(sizes) == 300
    streamed = m.embed(backed, batch_size=7)
    assert np.abs(streamed - in_mem).max() <= 1e-6
    backed.file.close()


def test_symbols_match_case_sensitively(tiny_folder: Path) -> None:
    genes = synthetic_genes(64)
    names = [g.lower() if i == 0 else g for i, g in enumerate(genes)]
    x = sp.csr_matrix(np.full((3, 64), 2.0, dtype=np.float32))
    out = preprocess(ad.AnnData(X=x, var=pd.DataFrame(index=names)), genes)
    assert out[:, 0].nnz == 0 and out[:, 1:].nnz == 3 * 63  # like the official align_dataset


def test_refusals_are_clear(tiny_folder: Path) -> None:
    genes = synthetic_genes(64)
    m = SCimilarityModel.load(tiny_folder)
    few = ad.AnnData(
        X=sp.csr_matrix(np.ones((4, 10), np.float32)),
        var=pd.DataFrame(index=[f"NOPE{i}" for i in range(9)] + [genes[0]]),
    )
    with pytest.raises(CoverageError, match="SCimilarity genes") as e:
        m.embed(few)
    assert e.value.hint
    lognormed = ad.AnnData(
        X=sp.csr_matrix(
            np.log1p(np.random.default_rng(0).poisson(1, (20, 64))).astype(np.float32) * 0.9
        ),
        var=pd.DataFrame(index=genes),
    )
    with pytest.raises(DataError, match="raw counts"):
        m.embed(lognormed)


def test_memory_does_not_grow_with_cells(tmp_path: Path) -> None:
    """Embedding a backed file: peak traced memory is about the same for 2,500 and 10,000 cells."""
    import tracemalloc

    genes = synthetic_genes(500)
    m = SCimilarityModel.from_random(genes, seed=1)
    rng = np.random.default_rng(0)
    block = sp.random(2500, 500, density=0.2, format="csr", random_state=rng, dtype=np.float32)
    block.data = np.ceil(block.data * 5)
    peaks = []
    for reps in (1, 4):
        path = tmp_path / f"cells{reps}.h5ad"
        ad.AnnData(
            X=sp.vstack([block] * reps, format="csr"), var=pd.DataFrame(index=genes)
        ).write_h5ad(path)
        backed = ad.read_h5ad(path, backed="r")
        m.embed(backed[:100], batch_size=64)  # one-time caches are not counted
        tracemalloc.start()
        emb = m.embed(backed, batch_size=512)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        backed.file.close()
        assert emb.shape == (2500 * reps, 16)
    full_matrix = 4 * block.nnz * 8  # what holding all 10,000 cells as CSR would take
    assert peaks[1] - peaks[0] < 0.1 * full_matrix, peaks
