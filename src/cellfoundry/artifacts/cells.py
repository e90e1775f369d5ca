"""Which cells a model trained on, so that no evaluation scores it on them.

A cell's key is its obs name and its number of detected genes in ``X`` (``name|nnz``): the same
cell read from the same file gets the same key under any normalisation, while the barcodes that
different 10x datasets share rarely also share their detected-gene count. Artifacts store the keys
of their training cells in ``training_cells.txt.gz`` (hashed in the manifest like every file).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

TRAINING_CELLS_FILE = "training_cells.txt.gz"
CHUNK = 20_000


def cell_keys(adata: ad.AnnData) -> np.ndarray:
    """``obs_name|n_detected_genes`` of every cell (chunked for backed files)."""
    if isinstance(adata.X, sp.csr_matrix | sp.csr_array):  # in memory, of any dtype: no copy
        nnz = np.diff(adata.X.indptr).astype(np.int64)
    else:
        nnz = _chunked_nnz(adata)
    names = np.asarray(adata.obs_names, dtype=str)
    return np.char.add(np.char.add(names, "|"), nnz.astype(str)).astype(object)


def _chunked_nnz(adata: ad.AnnData) -> np.ndarray:
    nnz = np.empty(adata.n_obs, dtype=np.int64)
    for s in range(0, adata.n_obs, CHUNK):
        x = adata.X[s : s + CHUNK]
        nnz[s : s + CHUNK] = (
            np.diff(sp.csr_matrix(x).indptr)
            if sp.issparse(x) or hasattr(x, "indptr")
            else (np.asarray(x) != 0).sum(axis=1)
        )
    return nnz


def write_training_cells(folder: str | Path, keys: np.ndarray) -> Path:
    path = Path(folder) / TRAINING_CELLS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(map(str, keys)))
    return path


def read_training_cells(folder: str | Path) -> frozenset[str] | None:
    """The training cell keys an artifact stored; None when it stored none (older artifacts)."""
    path = Path(folder) / TRAINING_CELLS_FILE
    if not path.is_file():
        return None
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return frozenset(line for line in fh.read().split("\n") if line)


def trained_on(adata: ad.AnnData, folder: str | Path | None) -> np.ndarray:
    """Bool mask of ``adata``'s cells that the artifact in ``folder`` trained on (all False when
    it is not an artifact folder or recorded no cells)."""
    cells = read_training_cells(folder) if folder is not None and Path(folder).is_dir() else None
    if not cells:
        return np.zeros(adata.n_obs, dtype=bool)
    return np.isin(cell_keys(adata), list(cells))
