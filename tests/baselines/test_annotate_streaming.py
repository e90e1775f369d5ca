"""Annotating an .h5ad in bounded memory: row chunks read from the file, the matrix copied as
bytes, only per-cell outputs written; the result equals the in-memory path's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import cellfoundry as cf
import cellfoundry.data.matrix as matrix
from cellfoundry.outputs import write_annotated_h5ad, write_predictions
from tests.conftest import make_counts_adata

CLI = [sys.executable, "-m", "cellfoundry.cli"]
N_CELLS, CHUNK = 3000, 700  # several chunks, the last one partial


def _annotate_cli(files: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [*CLI, "annotate", str(files["query"]), "--model", str(files["model"]), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _query() -> ad.AnnData:
    q = make_counts_adata(n_cells=N_CELLS, n_genes=120, n_types=3, seed=11)
    q.raw = q.copy()  # counts in raw (the matrix the model reads), X and a layer log-normalised
    q.X = sp.csr_matrix(np.log1p(q.X.toarray() / q.X.sum(axis=1).A * 1e4), dtype=np.float32)
    q.layers["lognorm"] = q.X.copy()
    rng = np.random.default_rng(0)
    q.obsm["X_pca"] = rng.normal(size=(N_CELLS, 5)).astype(np.float32)
    q.obs["batch"] = pd.Categorical(rng.choice(["a", "b"], N_CELLS))
    q.obs["depth"] = np.asarray(q.X.sum(axis=1)).ravel()
    q.obsp["distances"] = sp.random(N_CELLS, N_CELLS, density=0.001, format="csr", random_state=1)
    q.uns["project"] = {"name": "scale test", "n": 3}
    q.uns["cellfoundry"] = {"old": "replaced by the annotation"}
    return q


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("stream")
    ref = make_counts_adata(n_cells=400, n_genes=120, n_types=3, seed=5)
    cf.train(ref, "cell_type", "logreg", out=d / "model", n_features=None)
    _query().write_h5ad(d / "query.h5ad", compression="gzip")
    return {"dir": d, "model": d / "model", "query": d / "query.h5ad"}


def _in_memory(files: dict[str, Path]) -> ad.AnnData:
    """The path without streaming: the whole AnnData in memory, annotated, written, read back."""
    adata = ad.read_h5ad(files["query"])
    result = cf.annotate(adata, files["model"])
    path = files["dir"] / "in_memory.h5ad"
    result.to_adata(adata).write_h5ad(path)
    return ad.read_h5ad(path)


def _assert_same_adata(a: ad.AnnData, b: ad.AnnData) -> None:
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)
    assert set(a.obsm) == set(b.obsm)
    for k in a.obsm:
        np.testing.assert_array_equal(a.obsm[k], b.obsm[k])
    assert (a.X != b.X).nnz == 0
    assert set(a.layers) == set(b.layers)
    assert (a.layers["lognorm"] != b.layers["lognorm"]).nnz == 0
    assert a.raw is not None and b.raw is not None
    assert (a.raw.X != b.raw.X).nnz == 0
    assert (a.obsp["distances"] != b.obsp["distances"]).nnz == 0
    assert set(a.uns) == set(b.uns)
    assert a.uns["project"] == b.uns["project"]
    ca, cb = a.uns["cellfoundry"], b.uns["cellfoundry"]
    assert set(ca) == set(cb) and "old" not in ca
    _assert_same_uns(ca, cb)


def _assert_same_uns(a: object, b: object) -> None:
    """Equal uns entries, nested dicts (e.g. marker_overlap per type) compared key by key."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b)
        for k in a:
            _assert_same_uns(a[k], b[k])
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_cli_streamed_output_equals_the_in_memory_path(files) -> None:
    out = files["dir"] / "streamed.h5ad"
    proc = _annotate_cli(files, "--out", str(out), "--chunk-size", str(CHUNK))
    assert proc.returncode == 0, proc.stderr
    streamed = ad.read_h5ad(out)
    assert "predicted_cell_type" in streamed.obs and "batch" in streamed.obs
    _assert_same_adata(streamed, _in_memory(files))


def _datasets(f: h5py.File, group: str) -> dict[str, h5py.Dataset]:
    out: dict[str, h5py.Dataset] = {}
    f[group].visititems(
        lambda name, obj: out.setdefault(name, obj) if isinstance(obj, h5py.Dataset) else None
    )
    return out


def test_matrices_are_copied_as_stored_bytes(files) -> None:
    out = files["dir"] / "bytes.h5ad"
    result = cf.annotate(files["query"], files["model"], chunk_size=CHUNK)
    write_annotated_h5ad(result, out)
    with h5py.File(files["query"]) as src, h5py.File(out) as dst:
        for group in ("X", "layers", "raw", "var", "obsp", "obsm/X_pca"):
            names = (
                _datasets(src, group) if isinstance(src[group], h5py.Group) else {"": src[group]}
            )
            assert names, group
            for name, ds in names.items():
                copy = dst[f"{group}/{name}"] if name else dst[group]
                # same storage (chunking, compression) and the same stored bytes of every chunk
                assert (copy.chunks, copy.compression, copy.dtype) == (
                    ds.chunks,
                    ds.compression,
                    ds.dtype,
                )
                if ds.chunks is None:
                    assert ds[()].tobytes() == copy[()].tobytes()
                    continue
                for i in range(ds.id.get_num_chunks()):
                    info = ds.id.get_chunk_info(i)
                    assert ds.id.read_direct_chunk(info.chunk_offset) == copy.id.read_direct_chunk(
                        info.chunk_offset
                    ), f"{group}/{name} chunk {i}"
            attrs = [
                {k: np.asarray(v).tolist() for k, v in f[group].attrs.items()} for f in (src, dst)
            ]
            assert attrs[0] == attrs[1]


def test_prediction_tables_without_the_matrix(files) -> None:
    d = files["dir"]
    proc = _annotate_cli(
        files,
        "--out",
        f"{d}/labels.parquet",
        "--predictions",
        f"{d}/labels.tsv",
        "--chunk-size",
        "500",
    )
    assert proc.returncode == 0, proc.stderr
    assert not list(d.glob("labels*.h5ad"))
    expected = cf.annotate(files["query"], files["model"]).to_frame()
    parquet = pd.read_parquet(d / "labels.parquet")
    pd.testing.assert_frame_equal(parquet, expected)
    tsv = pd.read_csv(d / "labels.tsv", sep="\t", index_col=0)
    assert list(tsv.index) == list(expected.index)
    assert list(tsv.columns) == list(expected.columns)
    np.testing.assert_array_equal(
        tsv["predicted_cell_type"].to_numpy(),
        expected["predicted_cell_type"].astype(str).to_numpy(),
    )
    np.testing.assert_allclose(
        tsv["prediction_confidence"], expected["prediction_confidence"], rtol=1e-6
    )
    bad = _annotate_cli(files, "--out", str(d / "x.xlsx"))
    assert bad.returncode == 2 and ".parquet" in bad.stderr
    with pytest.raises(cf.DataError, match="table format"):
        write_predictions(cf.annotate(files["query"], files["model"]), d / "labels.json")


def test_reads_are_chunk_bounded_and_the_matrix_is_never_loaded(files, monkeypatch) -> None:
    reads: list[tuple[int, int]] = []
    real = matrix._read_backed_csr

    def spy(m, start: int, stop: int) -> sp.csr_matrix:
        reads.append((start, stop))
        return real(m, start, stop)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the whole AnnData was loaded")

    backed = ad.read_h5ad(files["query"], backed="r")
    dataset_type = type(backed.X)
    backed.file.close()
    whole = dataset_type.to_memory

    def refuse_matrix(self, *args: object, **kwargs: object) -> object:
        # anndata itself loads small sparse obsp entries when opening; the matrices must not be
        assert self.group.name not in ("/X", "/raw/X"), f"{self.group.name} was loaded whole"
        return whole(self, *args, **kwargs)

    monkeypatch.setattr(matrix, "_read_backed_csr", spy)
    monkeypatch.setattr(ad.AnnData, "to_memory", refuse)
    monkeypatch.setattr(dataset_type, "to_memory", refuse_matrix)
    result = cf.annotate(files["query"], files["model"], chunk_size=CHUNK)
    write_annotated_h5ad(result, files["dir"] / "bounded.h5ad")
    # the validation samples the first rows (at most matrix.SAMPLE_ROWS, whatever the file's size);
    # every other read is one chunk at most, and no read takes the whole matrix
    assert N_CELLS > matrix.SAMPLE_ROWS
    samples = [r for r in reads if r[0] == 0 and CHUNK < r[1] <= matrix.SAMPLE_ROWS]
    rest = [r for r in reads if r not in samples]
    assert reads and max(stop - start for start, stop in rest) <= CHUNK
    assert all(stop - start < N_CELLS for start, stop in reads)
    # the prediction pass reads every cell exactly once, in order, one chunk at a time
    expected = [(s, min(s + CHUNK, N_CELLS)) for s in range(0, N_CELLS, CHUNK)]
    assert reads[-len(expected) :] == expected
    assert result.n_cells == N_CELLS
