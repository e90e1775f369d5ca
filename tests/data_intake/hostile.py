"""Crafted hostile inputs: files that make a reader read elsewhere, or declare or expand to too much.

Each maker writes a file that plain ``anndata``/``h5py``/``gzip`` would follow or expand, so a
test can first show the attack works against the bare readers and then that cellfoundry refuses it.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp


def _frame(n_obs: int, n_vars: int) -> ad.AnnData:
    return ad.AnnData(
        X=np.ones((n_obs, n_vars), dtype=np.uint8),
        obs=pd.DataFrame(index=[f"cell{i}" for i in range(n_obs)]),
        var=pd.DataFrame(index=[f"GENE{i}" for i in range(n_vars)]),
    )


def _shape_for(secret: bytes | int) -> tuple[int, int]:
    """One cell whose genes are the secret's bytes."""
    return 1, secret if isinstance(secret, int) else len(secret)


def _replace_x(path: Path, make: object) -> None:
    with h5py.File(path, "r+") as f:
        attrs = dict(f["X"].attrs)
        del f["X"]
        make(f)  # type: ignore[operator]
        if isinstance(f.get("X", getlink=True), h5py.HardLink):
            for k, v in attrs.items():
                f["X"].attrs[k] = v


def external_storage_h5ad(path: Path, secret_file: Path) -> Path:
    """An .h5ad whose X is HDF5 external storage: its bytes are those of ``secret_file``."""
    n_obs, n_vars = _shape_for(secret_file.read_bytes())
    _frame(n_obs, n_vars).write_h5ad(path)
    _replace_x(
        path,
        lambda f: f.create_dataset(
            "X",
            shape=(n_obs, n_vars),
            dtype="uint8",
            external=[(str(secret_file), 0, n_obs * n_vars)],
        ),
    )
    return path


def secret_h5(path: Path, secret: bytes) -> Path:
    """Another HDF5 file holding ``secret`` as a 1 x n uint8 dataset /X (the target of links)."""
    n_obs, n_vars = _shape_for(secret)
    with h5py.File(path, "w") as f:
        d = f.create_dataset("X", data=np.frombuffer(secret, np.uint8).reshape(n_obs, n_vars))
        d.attrs["encoding-type"] = "array"
        d.attrs["encoding-version"] = "0.2.0"
    return path


def external_link_h5ad(path: Path, target_h5: Path, secret_len: int) -> Path:
    """An .h5ad whose X is an external link to /X of ``target_h5``."""
    n_obs, n_vars = _shape_for(secret_len)
    _frame(n_obs, n_vars).write_h5ad(path)
    _replace_x(path, lambda f: f.__setitem__("X", h5py.ExternalLink(str(target_h5), "/X")))
    return path


def virtual_h5ad(path: Path, target_h5: Path, secret_len: int) -> Path:
    """An .h5ad whose X is a virtual dataset mapped onto /X of ``target_h5``."""
    n_obs, n_vars = _shape_for(secret_len)

    def make(f: h5py.File) -> None:
        layout = h5py.VirtualLayout(shape=(n_obs, n_vars), dtype="uint8")
        layout[:] = h5py.VirtualSource(str(target_h5), "X", shape=(n_obs, n_vars))
        f.create_virtual_dataset("X", layout)

    _frame(n_obs, n_vars).write_h5ad(path)
    _replace_x(path, make)
    return path


def soft_link_h5ad(path: Path) -> Path:
    """An .h5ad whose X is a soft link to a layer of the same file."""
    a = _frame(4, 8)
    a.layers["counts"] = a.X.copy()
    a.write_h5ad(path)
    _replace_x(path, lambda f: f.__setitem__("X", h5py.SoftLink("/layers/counts")))
    return path


def huge_dense_h5ad(path: Path, n_obs: int = 100_000_000, n_vars: int = 400_000) -> Path:
    """An .h5ad of a few kB whose dense X declares ``n_obs`` x ``n_vars`` float32 (never written)."""
    _frame(4, 8).write_h5ad(path)
    _replace_x(
        path,
        lambda f: f.create_dataset(
            "X", shape=(n_obs, n_vars), dtype="float32", chunks=(64, 1024), compression="gzip"
        ),
    )
    return path


def unwritten_dense_h5ad(path: Path, n_obs: int, n_vars: int) -> Path:
    """A valid .h5ad (obs and var of the declared size) whose dense float32 X is never written."""
    ad.AnnData(
        obs=pd.DataFrame(index=[f"cell{i}" for i in range(n_obs)]),
        var=pd.DataFrame(index=[f"GENE{i}" for i in range(n_vars)]),
    ).write_h5ad(path)
    with h5py.File(path, "r+") as f:
        x = f.create_dataset(
            "X", shape=(n_obs, n_vars), dtype="float32", chunks=(100, 10_000), compression="gzip"
        )
        x.attrs["encoding-type"] = "array"
        x.attrs["encoding-version"] = "0.2.0"
    return path


def huge_sparse_h5ad(path: Path, n_obs: int = 10**12, n_vars: int = 10**9) -> Path:
    """An .h5ad whose sparse X declares ``n_obs`` x ``n_vars`` in its shape attribute."""
    a = _frame(4, 8)
    a.X = sp.csr_matrix(a.X.astype(np.float32))
    a.write_h5ad(path)
    with h5py.File(path, "r+") as f:
        f["X"].attrs["shape"] = np.array([n_obs, n_vars], dtype=np.int64)
    return path


def wide_csv(path: Path, n_columns: int = 1_000_000) -> Path:
    """A CSV with ``n_columns`` gene columns and two cells."""
    with open(path, "w") as fh:
        fh.write("cell," + ",".join(f"G{i}" for i in range(n_columns)) + "\n")
        zeros = ",".join("0" for _ in range(n_columns))
        fh.write(f"c1,{zeros}\nc2,{zeros}\n")
    return path


def gzip_bomb_csv(path: Path, n_members: int = 200, member_mb: int = 50) -> Path:
    """A .csv.gz of a few MB that expands to ``n_members`` x ``member_mb`` MB of zero rows."""
    header = "cell," + ",".join(f"G{i}" for i in range(10)) + "\n"
    row = b"c," + b",".join([b"0"] * 10) + b"\n"
    member = gzip.compress(row * (member_mb * 1024 * 1024 // len(row)), 9)
    with open(path, "wb") as fh:
        fh.write(gzip.compress(header.encode()))
        for _ in range(n_members):
            fh.write(member)
    return path


def huge_mex(folder: Path, n_genes: int = 10**9, n_cells: int = 10**9) -> Path:
    """A 10x MEX folder whose matrix.mtx.gz declares ``n_genes`` x ``n_cells``."""
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "matrix.mtx.gz", "wb") as fh:
        fh.write(b"%%MatrixMarket matrix coordinate integer general\n%\n")
        fh.write(f"{n_genes} {n_cells} 1\n1 1 5\n".encode())
    with gzip.open(folder / "features.tsv.gz", "wb") as fh:
        fh.write(b"ENSG00000000001\tGENE1\tGene Expression\n")
    with gzip.open(folder / "barcodes.tsv.gz", "wb") as fh:
        fh.write(b"AAAC-1\n")
    return folder
