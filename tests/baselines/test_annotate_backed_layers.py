"""A backed .h5ad keeps layers, obsp, varm and varp on disk, as X: a million-cell file with
``layers['counts']`` beside log-normalised X and a kNN graph in obsp is annotated without reading
either (anndata's backed reader loads them whole); the output holds their stored bytes."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from anndata.abc import CSRDataset

import cellfoundry as cf
from cellfoundry.data.io import close_backed, read_data
from cellfoundry.data.report import validate
from cellfoundry.outputs import write_annotated_h5ad
from tests.conftest import make_counts_adata

N_CELLS, N_GENES, CHUNK, K = 20_000, 120, 1_000, 30


def _query(n_cells: int = N_CELLS) -> ad.AnnData:
    """Log-normalised X, raw counts in layers['counts'], a kNN graph, gene loadings."""
    q = make_counts_adata(n_cells=n_cells, n_genes=N_GENES, n_types=3, seed=11)
    q.layers["counts"] = q.X.copy()
    x = q.X.copy()
    x.data = np.log1p(x.data / np.repeat(x.sum(axis=1).A1, np.diff(x.indptr)) * 1e4)
    q.X = x.astype(np.float32)
    rng = np.random.default_rng(0)
    rows = np.repeat(np.arange(n_cells), K)
    cols = rng.integers(0, n_cells, n_cells * K)
    vals = rng.random(n_cells * K).astype(np.float32)
    q.obsp["connectivities"] = sp.csr_matrix((vals, (rows, cols)), shape=(n_cells, n_cells))
    q.varm["PCs"] = rng.normal(size=(N_GENES, 20))
    q.varp["gene_corr"] = rng.normal(size=(N_GENES, N_GENES))
    return q


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("backed_layers")
    ref = make_counts_adata(n_cells=400, n_genes=N_GENES, n_types=3, seed=5)
    cf.train(ref, "cell_type", "logreg", out=d / "model", n_features=None)
    q = _query()
    q.write_h5ad(d / "query.h5ad")
    bare = q.copy()
    del bare.layers["counts"], bare.obsp["connectivities"]
    bare.write_h5ad(d / "bare.h5ad")
    return {"dir": d, "model": d / "model", "query": d / "query.h5ad", "bare": d / "bare.h5ad"}


def _stored_bytes(m: sp.csr_matrix) -> int:
    return int(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes)


def test_backed_read_leaves_layers_obsp_varm_varp_on_disk(files: dict[str, Path]) -> None:
    mem = ad.read_h5ad(files["query"])
    adata = read_data(files["query"], backed=True)
    assert adata.isbacked
    assert isinstance(adata.layers["counts"], CSRDataset)
    assert isinstance(adata.obsp["connectivities"], CSRDataset)
    assert isinstance(adata.varm["PCs"], h5py.Dataset)
    assert isinstance(adata.varp["gene_corr"], h5py.Dataset)
    # subsets taken into memory read just their rows, again and again (anndata closes its own
    # handle on every to_memory; the backed elements have theirs)
    for sel in (slice(100, 350), np.array([19_999, 3, 512, 7]), slice(0, 10)):
        part = adata[sel].to_memory()
        want = mem[sel]
        assert (part.layers["counts"] != want.layers["counts"]).nnz == 0
        assert (part.obsp["connectivities"] != want.obsp["connectivities"]).nnz == 0
        assert (part.X != want.X).nnz == 0
        np.testing.assert_array_equal(part.varm["PCs"], mem.varm["PCs"])
    genes = adata[:, [5, 2]].to_memory()
    np.testing.assert_array_equal(genes.varm["PCs"], mem.varm["PCs"][[5, 2]])
    np.testing.assert_array_equal(genes.varp["gene_corr"], mem.varp["gene_corr"][[5, 2]][:, [5, 2]])
    # closing releases every handle: the file opens for writing
    close_backed(adata)
    close_backed(adata)  # twice is fine
    with h5py.File(files["query"], "r+"):
        pass


def _annotate_peak(path: Path, model: Path) -> tuple[int, cf.AnnotationResult]:
    tracemalloc.reset_peak()
    start = tracemalloc.get_traced_memory()[0]
    result = cf.annotate(path, model, chunk_size=CHUNK)
    return tracemalloc.get_traced_memory()[1] - start, result


def test_a_large_layer_and_knn_graph_are_not_read_when_annotating(
    files: dict[str, Path],
) -> None:
    """Peak Python allocation of the streamed annotation with the layer and graph present stays
    within a small share of their size above the same file without them (anndata's backed
    reader would add all of both)."""
    mem = ad.read_h5ad(files["query"])
    extra = _stored_bytes(mem.layers["counts"]) + _stored_bytes(mem.obsp["connectivities"])
    del mem
    tracemalloc.start()
    try:
        _annotate_peak(files["bare"], files["model"])  # warm-up: imports, caches
        bare, _ = _annotate_peak(files["bare"], files["model"])
        layered, result = _annotate_peak(files["query"], files["model"])
        bare_again, _ = _annotate_peak(files["bare"], files["model"])
    finally:
        tracemalloc.stop()
    assert result.n_cells == N_CELLS
    base = max(bare, bare_again)
    assert layered - base < 0.25 * extra, (layered, base, extra)
    # the same calls as the file without the layer and graph (X is the matrix used)
    np.testing.assert_array_equal(
        result.to_frame()["predicted_cell_type"].astype(str),
        cf.annotate(files["bare"], files["model"]).to_frame()["predicted_cell_type"].astype(str),
    )


def _same_stored_bytes(src: h5py.File, dst: h5py.File, group: str) -> None:
    names: dict[str, h5py.Dataset] = {}
    src[group].visititems(
        lambda n, o: names.setdefault(n, o) if isinstance(o, h5py.Dataset) else None
    )
    assert names, group
    for name, ds in names.items():
        copy = dst[f"{group}/{name}"]
        assert (copy.chunks, copy.compression, copy.dtype, copy.shape) == (
            ds.chunks,
            ds.compression,
            ds.dtype,
            ds.shape,
        )
        if ds.chunks is None:
            assert ds[()].tobytes() == copy[()].tobytes(), f"{group}/{name}"
            continue
        for i in range(ds.id.get_num_chunks()):
            offset = ds.id.get_chunk_info(i).chunk_offset
            assert ds.id.read_direct_chunk(offset) == copy.id.read_direct_chunk(offset)


def test_cli_output_holds_the_layer_and_graph_bytes(files: dict[str, Path]) -> None:
    out = files["dir"] / "annotated.h5ad"
    cmd = [sys.executable, "-m", "cellfoundry.cli", "annotate", str(files["query"])]
    cmd += ["--model", str(files["model"]), "--out", str(out), "--chunk-size", str(CHUNK)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with h5py.File(files["query"], "r") as src, h5py.File(out, "r") as dst:
        for group in ("X", "layers", "obsp", "varm", "varp"):
            _same_stored_bytes(src, dst, group)
    res = ad.read_h5ad(out)
    assert "predicted_cell_type" in res.obs and res.n_obs == N_CELLS


def test_annotating_in_place_closes_every_handle(files: dict[str, Path]) -> None:
    path = files["dir"] / "in_place.h5ad"
    _query(n_cells=500).write_h5ad(path)
    result = cf.annotate(path, files["model"])
    assert result.adata is not None and isinstance(result.adata.layers["counts"], CSRDataset)
    write_annotated_h5ad(result, path)  # the backed handles must go before the file is written
    res = ad.read_h5ad(path)
    assert "predicted_cell_type" in res.obs and "counts" in res.layers


def test_dense_layers_stay_on_disk_and_csc_layers_are_loaded(tmp_path: Path) -> None:
    """A dense layer is a backed h5py dataset read in row chunks; a CSC layer (whose rows span
    the whole matrix) is loaded as anndata loads it. Both give the same rows as in memory."""
    from cellfoundry.data.matrix import iter_row_chunks

    a = make_counts_adata(n_cells=300, n_genes=40, seed=2)
    a.layers["dense"] = a.X.toarray()
    a.layers["csc"] = sp.csc_matrix(a.X)
    path = tmp_path / "mixed.h5ad"
    a.write_h5ad(path)
    adata = read_data(path, backed=True)
    assert isinstance(adata.layers["dense"], h5py.Dataset)
    assert sp.issparse(adata.layers["csc"])
    for source in ("layers/dense", "layers/csc"):
        rows = sp.vstack([r for _, r in iter_row_chunks(adata, source, chunk_size=70)])
        assert (rows != a.X).nnz == 0, source
    report = validate(adata)
    assert {m.source: m.kind for m in report.matrices}["layers/dense"] == "raw_counts"
    close_backed(adata)
