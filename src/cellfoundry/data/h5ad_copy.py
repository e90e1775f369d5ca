"""An .h5ad copy with new per-cell outputs: the matrices are copied byte for byte, never decoded.

A million-cell file is gigabytes of matrix and megabytes of results. Writing results therefore
copies the input file as bytes (the kernel's file copy; X, layers, raw, var, obsp ... keep their
exact encoding, chunking and compression) and then replaces only ``obs`` and adds ``obsm`` /
``uns`` entries with anndata's own element writer, so ``anndata.read_h5ad`` reads the result as
if the whole AnnData had been written at once. Embeddings too large for memory are written into
an ``obsm`` array one block of rows at a time (``ObsmWriter``).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
from anndata.io import read_elem, write_elem

from cellfoundry.errors import DataError


def copy_h5ad(src: str | Path, out: str | Path) -> Path:
    """Copy ``src`` to ``out`` as bytes (nothing decoded); a no-op when they are the same file."""
    src_p, out_p = Path(src), Path(out)
    if not h5py.is_hdf5(src_p):
        raise DataError(
            f"{src_p.name} is not an HDF5 (.h5ad) file", "give the .h5ad file that was annotated"
        )
    out_p.parent.mkdir(parents=True, exist_ok=True)
    if out_p.exists() and out_p.resolve() == src_p.resolve():
        return out_p
    shutil.copyfile(src_p, out_p)
    return out_p


def _group(f: h5py.File, name: str) -> h5py.Group:
    if name not in f:
        write_elem(f, name, {})
    g = f[name]
    assert isinstance(g, h5py.Group)
    return g


def _replace(parent: h5py.Group, key: str, value: Any, **dataset_kwargs: Any) -> None:
    if key in parent:
        del parent[key]
    write_elem(parent, key, value, dataset_kwargs=dataset_kwargs)


def write_results(
    path: str | Path,
    *,
    obs: pd.DataFrame | None = None,
    obsm: Mapping[str, Any] | None = None,
    uns: Mapping[str, Any] | None = None,
    compression: str | None = "gzip",
) -> None:
    """Write per-cell results into an existing .h5ad in place (a copy made by ``copy_h5ad``).

    ``obs`` replaces the whole obs table (it must have the file's cells, in order); every key of
    ``obsm`` and ``uns`` replaces the entry of that name; everything else is left untouched.
    """
    kwargs = {"compression": compression} if compression else {}
    with h5py.File(path, "r+") as f:
        if obs is not None:
            n = n_obs(f)
            if obs.shape[0] != n:
                raise ValueError(f"obs has {obs.shape[0]} rows, the file has {n} cells")
            _replace(f, "obs", obs, **kwargs)
        if obsm:
            g = _group(f, "obsm")
            for key, value in obsm.items():
                _replace(g, key, value, **kwargs)
        if uns:
            g = _group(f, "uns")
            for key, value in uns.items():
                _replace(g, key, value)


def n_obs(f: h5py.File) -> int:
    """Number of cells of an open .h5ad (from obs, without reading X)."""
    obs = f["obs"]
    if isinstance(obs, h5py.Dataset):  # anndata < 0.7 stored obs as a record array
        return int(obs.shape[0])
    index_key = obs.attrs.get("_index", "_index")
    return int(obs[index_key].shape[0])


def read_obs(path: str | Path) -> pd.DataFrame:
    """The obs table of an .h5ad (no matrix read)."""
    with h5py.File(path, "r") as f:
        obs = read_elem(f["obs"])
    assert isinstance(obs, pd.DataFrame)
    return obs


class ObsmWriter:
    """``obsm[key]`` of an existing .h5ad, written one block of rows at a time.

    The array is created with its final shape (anndata's dense-array encoding) and filled by
    ``writer[start:stop] = block``, so a caller that writes into a numpy array can write into the
    file instead; memory holds one block whatever the number of cells. Use as a context manager.
    """

    def __init__(
        self, path: str | Path, key: str, n_rows: int, n_cols: int, dtype: Any = np.float32
    ) -> None:
        self._file = h5py.File(path, "r+")
        group = _group(self._file, "obsm")
        if key in group:
            del group[key]
        rows = max(1, min(n_rows, (1 << 18) // max(n_cols, 1)))  # ~1 MB chunks of float32
        self.dataset = group.create_dataset(
            key,
            shape=(n_rows, n_cols),
            dtype=dtype,
            chunks=(rows, n_cols) if n_rows and n_cols else None,
        )
        self.dataset.attrs["encoding-type"] = "array"  # as anndata.io.write_elem marks arrays
        self.dataset.attrs["encoding-version"] = "0.2.0"
        self.shape: tuple[int, int] = (n_rows, n_cols)
        self.rows_written = 0

    def __setitem__(self, rows: slice, block: np.ndarray) -> None:
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError("ObsmWriter takes contiguous row slices")
        self.dataset[rows] = block
        self.rows_written += int(np.asarray(block).shape[0])

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> ObsmWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
