"""Counts stored as float16, float64, int32 or int64 train and annotate as float32 counts do.

Before: an .h5ad whose X was a float16 sparse matrix could not be trained on: "error: could not
read ref.h5ad as h5ad: ValueError: scipy.sparse does not support dtype float16 ..." with the fix
"check that the file is a valid h5ad file and not truncated" (anndata writes such files but its
reader builds the matrix through scipy.sparse, which has no float16); in a service run the
shard's ``adata[rows].to_memory()`` failed the same way (an internal error).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pytest
import scipy.sparse as sp

import cellfoundry as cf
from cellfoundry.data.io import read_data

N_CELLS = 1000
DTYPES = ["float16", "float64", "int32", "int64"]


@pytest.fixture(scope="module")
def files(pbmc3k: ad.AnnData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The first 1,000 real PBMC 3k cells as float32 counts and in every other dtype (the counts
    are at most 419, so float16 holds them exactly and every file holds the same numbers)."""
    folder = tmp_path_factory.mktemp("dtypes")
    base = pbmc3k[:N_CELLS].copy()
    x = sp.csr_matrix(base.X, dtype=np.float32)
    assert x.max() <= 2048  # float16 holds every integer up to 2,048
    out = {}
    for dtype in ["float32", *DTYPES]:
        a = base.copy()
        # the parts given directly: scipy's constructor refuses a float16 dtype
        a.X = sp.csr_matrix((x.data.astype(dtype), x.indices, x.indptr), shape=x.shape)
        out[dtype] = folder / f"{dtype}.h5ad"
        a.write_h5ad(out[dtype])
    with h5py.File(out["float16"], "r") as f:
        assert f["X/data"].dtype == np.float16  # stored as float16 indeed
    return out


@pytest.fixture(scope="module")
def model32(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("m32") / "model"
    cf.train(files["float32"], "cell_type", "logreg", out=out, n_features=500)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_train_and_annotate_give_the_float32_answers(
    files: dict[str, Path], model32: Path, tmp_path: Path, dtype: str
) -> None:
    m = cf.train(files[dtype], "cell_type", "logreg", out=tmp_path / "m", n_features=500)
    ref = cf.load_model(model32)
    assert list(m.genes) == list(ref.genes)  # the same most variable genes
    for k in ("accuracy", "macro_f1"):
        assert m.manifest.metrics[k] == ref.manifest.metrics[k]
    want = cf.annotate(files["float32"], model32).labels
    np.testing.assert_array_equal(cf.annotate(files[dtype], model32).labels, want)
    np.testing.assert_array_equal(cf.annotate(files["float32"], tmp_path / "m").labels, want)


def test_a_float16_file_is_read_as_float32(files: dict[str, Path]) -> None:
    mem, backed = read_data(files["float16"]), read_data(files["float16"], backed=True)
    want = ad.read_h5ad(files["float32"])
    for a in (mem, backed):  # anndata's backed subsets of float16 fail too: read into memory
        assert not a.isbacked and a.X.dtype == np.float32 and a.X.format == "csr"
        assert (a.X != want.X).nnz == 0 and a.obs.equals(want.obs)


def test_the_cli_trains_and_annotates_a_float16_file(
    files: dict[str, Path], tmp_path: Path
) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cellfoundry.cli", *args],
            capture_output=True,
            text=True,
            timeout=600,
        )

    path = str(files["float16"])
    train = cli("train", path, "--out", str(tmp_path / "m"), "--n-features", "500")
    assert train.returncode == 0, train.stderr
    assert "held-out accuracy" in train.stdout and "error" not in train.stderr
    out = tmp_path / "pred.csv"
    run = cli("annotate", path, "--model", str(tmp_path / "m"), "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert len(out.read_text().splitlines()) == N_CELLS + 1


def test_float16_overflow_is_named_as_its_cause(
    files: dict[str, Path], model32: Path, tmp_path: Path
) -> None:
    """A count above float16's largest value (65,504) is stored as Inf. Before, the file was
    refused only as holding "NaN or Inf values", which did not say the cause; now reading it
    warns that the float16 matrix overflowed, and annotating it is still refused."""
    from cellfoundry.errors import CellfoundryWarning, DataError

    a = ad.read_h5ad(files["float32"])
    x = sp.csr_matrix(a.X, dtype=np.float32)
    x.data[[5, 9]] = 70_000.0  # two counts past 65,504
    with np.errstate(over="ignore"):  # the overflow that the file then holds
        a.X = sp.csr_matrix((x.data.astype(np.float16), x.indices, x.indptr), shape=x.shape)
    path = tmp_path / "overflow.h5ad"
    a.write_h5ad(path)
    with pytest.warns(CellfoundryWarning) as seen:
        read_data(path)
    (msg,) = [str(w.message) for w in seen if "float16" in str(w.message)]
    assert msg.startswith("X is stored as float16, whose largest value is 65,504: 2 of its")
    assert "store counts as float32 or integers" in msg
    with pytest.warns(CellfoundryWarning, match="float16"), pytest.raises(DataError):
        cf.annotate(path, model32)
