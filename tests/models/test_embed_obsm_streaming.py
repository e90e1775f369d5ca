"""`cellfoundry embed` writes obsm into a byte copy of the input, one block of rows at a time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pytest
from safetensors.numpy import save_file

from cellfoundry.data.h5ad_copy import ObsmWriter, copy_h5ad
from cellfoundry.data.io import read_data
from cellfoundry.errors import ModelError
from cellfoundry.models.embedding_annotators import embed_cells
from tests.conftest import make_counts_adata
from tests.models.test_embed_cli_toy import run_cli
from tests.models.toy_foundation import ToySCimilarity, install_toy_families

N_CELLS, BATCH = 700, 64


@pytest.fixture(autouse=True)
def _toys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_toy_families(monkeypatch)
    monkeypatch.setenv("CELLFOUNDRY_HOME", str(tmp_path / "home"))


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    return lambda *args: run_cli(list(args), monkeypatch, capsys)


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    a = make_counts_adata(n_cells=N_CELLS, n_genes=80, seed=4)
    a.obsm["X_pca"] = np.random.default_rng(0).normal(size=(N_CELLS, 3)).astype(np.float32)
    path = tmp_path / "cells.h5ad"
    a.write_h5ad(path, compression="gzip")
    return path, ToySCimilarity.write(tmp_path / "ckpt", list(a.var_names), dim=5)


def test_obsm_is_written_in_row_blocks_into_a_byte_copy(
    data: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Callable
) -> None:
    path, ckpt = data
    blocks: list[tuple[int, int]] = []
    write = ObsmWriter.__setitem__

    def spy(self: ObsmWriter, rows: slice, block: np.ndarray) -> None:
        blocks.append((rows.start, rows.stop))
        write(self, rows, block)

    monkeypatch.setattr(ObsmWriter, "__setitem__", spy)
    out = tmp_path / "out.h5ad"
    cmd = ["embed", str(path), "--model", str(ckpt), "--out", str(out)]
    code, _, err = cli(*cmd, "--batch-size", str(BATCH))
    assert code == 0, err
    # every cell written once, in order, never more than one batch at a time
    assert blocks == [(s, min(s + BATCH, N_CELLS)) for s in range(0, N_CELLS, BATCH)]
    res = ad.read_h5ad(out)
    expected = ToySCimilarity.load(ckpt).embed(read_data(path))
    np.testing.assert_array_equal(res.obsm["X_scimilarity"], expected)
    np.testing.assert_array_equal(res.obsm["X_pca"], ad.read_h5ad(path).obsm["X_pca"])
    assert res.uns["cellfoundry_embeddings"]["X_scimilarity"]["batch_size"] == BATCH
    with h5py.File(path) as src, h5py.File(out) as dst:
        for name in ("data", "indices", "indptr"):
            a, b = src["X"][name], dst["X"][name]
            assert (a.chunks, a.compression) == (b.chunks, b.compression)
            first = a.id.get_chunk_info(0).chunk_offset
            assert a.id.read_direct_chunk(first) == b.id.read_direct_chunk(first)


def test_non_finite_blocks_are_refused_and_no_output_is_left(
    data: tuple[Path, Path], tmp_path: Path, cli: Callable
) -> None:
    path, ckpt = data
    model = ToySCimilarity.load(ckpt)
    model.w[3] = np.nan
    target = copy_h5ad(path, tmp_path / "target.h5ad")
    with ObsmWriter(target, "X_nan", N_CELLS, model.embedding_dim) as writer:
        with pytest.raises(ModelError, match="non-finite"):
            embed_cells(model, read_data(path, backed=True), batch_size=BATCH, out=writer)
        assert writer.rows_written < N_CELLS  # stopped at the first bad block
    bad = ToySCimilarity.write(tmp_path / "bad", list(model.genes), dim=5)
    w = np.full((len(model.genes), 5), np.nan, dtype=np.float32)
    save_file({"W": w}, str(bad / "projection.safetensors"))
    out = tmp_path / "nan.h5ad"
    code, _, err = cli("embed", str(path), "--model", str(bad), "--out", str(out))
    assert code == 2 and "non-finite" in err
    assert not out.exists()


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_embedding_in_place_streams_and_a_failure_leaves_the_input_as_it_was(
    data: tuple[Path, Path], tmp_path: Path, cli: Callable
) -> None:
    """``--out`` = the input: before, the whole embedding was held in memory and written into
    the input itself after the run; a failure mid-write left it half-edited. Now the input is
    copied, the copy gets obsm block by block and replaces the input once complete."""
    path, ckpt = data
    before = ad.read_h5ad(path)
    bad = ToySCimilarity.write(tmp_path / "bad", list(before.var_names), dim=5)
    w = np.full((before.n_vars, 5), np.nan, dtype=np.float32)
    save_file({"W": w}, str(bad / "projection.safetensors"))
    digest = _sha256(path)
    code, _, err = cli("embed", str(path), "--model", str(bad), "--out", str(path))
    assert code == 2 and "non-finite" in err
    assert _sha256(path) == digest  # not a byte changed
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []

    code, _, err = cli("embed", str(path), "--model", str(ckpt), "--out", str(path))
    assert code == 0, err
    res = ad.read_h5ad(path)
    expected = ToySCimilarity.load(ckpt).embed(read_data(tmp_path / "cells.h5ad"))
    np.testing.assert_array_equal(res.obsm["X_scimilarity"], expected)
    np.testing.assert_array_equal(res.obsm["X_pca"], before.obsm["X_pca"])
    assert (res.X != before.X).nnz == 0
    assert res.uns["cellfoundry_embeddings"]["X_scimilarity"]["embedding_dim"] == 5
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []
