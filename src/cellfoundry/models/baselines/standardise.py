"""The baselines' standardisation: reference mean and sd, clipped, absent genes unobserved."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

try:  # the CSR x dense kernel that scipy's `csr_matrix @ ndarray` calls
    from scipy.sparse._sparsetools import csr_matvecs as _csr_matvecs
except ImportError:  # pragma: no cover - another scipy layout: the public path
    _csr_matvecs = None

CLIP = 10.0  # standardised values are clipped at ±CLIP (CellTypist clips at 10)


def standardise(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Dense ``clip((x - mean) / scale, ±CLIP)`` (training side)."""
    return np.clip((x - mean) / scale, -CLIP, CLIP)


def zero_product(
    mean: np.ndarray, scale: np.ndarray, m: np.ndarray, present: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(z0, z0 @ m)``: every gene's standardised value of a zero (0 for absent genes) and its
    product with ``m``, in float64; depends on the model only (a loaded model keeps it)."""
    mean64 = np.asarray(mean, dtype=np.float64)
    scale64 = np.asarray(scale, dtype=np.float64)
    z0 = np.clip(-mean64 / scale64, -CLIP, CLIP)
    if present is not None:
        z0 = np.where(present, z0, 0.0)
    return z0, z0 @ np.asarray(m, dtype=np.float64)


def standardised_product(
    x: sp.csr_matrix,
    mean: np.ndarray,
    scale: np.ndarray,
    m: np.ndarray,
    present: np.ndarray | None = None,
    zero: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """``standardise(x) @ m`` with absent genes (``present`` False) at standardised value 0.

    Computed without densifying ``x``: every zero of gene j has the same standardised value
    ``z0_j = clip(-mean_j / scale_j)``, so the product is ``z0 @ m`` plus a sparse correction at the
    stored entries. An absent gene is unobserved, not zero: it contributes nothing (z = 0), as if
    it had the reference mean (CellTypist drops such features the same way). ``zero``:
    ``zero_product`` of the same arguments, made before (else made here).
    """
    mean64 = np.asarray(mean, dtype=np.float64)
    scale64 = np.asarray(scale, dtype=np.float64)
    m64 = np.asarray(m, dtype=np.float64)
    z0, z0m = zero_product(mean64, scale64, m64, present) if zero is None else zero
    if not isinstance(x, sp.csr_matrix):
        x = sp.csr_matrix(x)
    cols = x.indices
    z = np.clip((x.data.astype(np.float64) - mean64[cols]) / scale64[cols], -CLIP, CLIP)
    return csr_times_dense(x.indptr, cols, z - z0[cols], x.shape[1], m64) + z0m


def csr_times_dense(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, n_cols: int, m: np.ndarray
) -> np.ndarray:
    """``csr_matrix((data, indices, indptr)) @ m`` for float64 ``data``: scipy's own kernel
    (``csr_matvecs``, which ``@`` calls), the same bits, without building the matrix, whose
    construction costs more than a one-cell product (/predict). The structure is checked first
    (ValueError), bounds included, which scipy's constructor does not do by default."""
    n_rows = len(indptr) - 1
    if (
        n_rows < 1
        or len(indices) != len(data)
        or int(indptr[0]) != 0
        or int(indptr[-1]) != len(data)
        or (n_rows > 1 and bool((np.diff(indptr) < 0).any()))
        or (len(indices) > 0 and (int(indices.min()) < 0 or int(indices.max()) >= n_cols))
    ):
        raise ValueError("broken CSR structure (indptr, indices and data do not agree)")
    m64 = np.ascontiguousarray(m, dtype=np.float64)
    if (
        _csr_matvecs is None
        or data.dtype != np.float64
        or m64.ndim != 2
        or m64.shape[0] != n_cols
        or indices.dtype not in (np.int32, np.int64)
    ):
        return np.asarray(sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols)) @ m64)
    out = np.zeros((n_rows, m64.shape[1]), dtype=np.float64)
    _csr_matvecs(
        n_rows,
        n_cols,
        m64.shape[1],
        np.asarray(indptr, dtype=indices.dtype),
        indices,
        data,
        m64.ravel(),
        out.ravel(),
    )
    return out


def standardise_cells(
    x: sp.csr_matrix | np.ndarray,
    mean: np.ndarray,
    scale: np.ndarray,
    present: np.ndarray | None = None,
) -> np.ndarray:
    """Dense float32 ``standardise(x)`` of a block of cells; genes not ``present`` are 0."""
    dense = x.toarray() if isinstance(x, sp.spmatrix | sp.sparray) else np.asarray(x)
    z = standardise(dense.astype(np.float32, copy=False), mean, scale).astype(np.float32)
    if present is not None and not present.all():
        z[:, ~present] = 0.0
    return z
