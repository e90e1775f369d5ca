"""The baselines' standardisation: reference mean and sd, clipped, absent genes unobserved."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

CLIP = 10.0  # standardised values are clipped at ±CLIP (CellTypist clips at 10)


def standardise(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Dense ``clip((x - mean) / scale, ±CLIP)`` (training side)."""
    return np.clip((x - mean) / scale, -CLIP, CLIP)


def standardised_product(
    x: sp.csr_matrix,
    mean: np.ndarray,
    scale: np.ndarray,
    m: np.ndarray,
    present: np.ndarray | None = None,
) -> np.ndarray:
    """``standardise(x) @ m`` with absent genes (``present`` False) at standardised value 0.

    Computed without densifying ``x``: every zero of gene j has the same standardised value
    ``z0_j = clip(-mean_j / scale_j)``, so the product is ``z0 @ m`` plus a sparse correction at the
    stored entries. An absent gene is unobserved, not zero: it contributes nothing (z = 0), as if
    it had the reference mean (CellTypist drops such features the same way).
    """
    mean64 = np.asarray(mean, dtype=np.float64)
    scale64 = np.asarray(scale, dtype=np.float64)
    m64 = np.asarray(m, dtype=np.float64)
    z0 = np.clip(-mean64 / scale64, -CLIP, CLIP)
    if present is not None:
        z0 = np.where(present, z0, 0.0)
    if not isinstance(x, sp.csr_matrix):
        x = sp.csr_matrix(x)
    cols = x.indices
    z = np.clip((x.data.astype(np.float64) - mean64[cols]) / scale64[cols], -CLIP, CLIP)
    delta = sp.csr_matrix((z - z0[cols], cols, x.indptr), shape=x.shape)
    return np.asarray(delta @ m64) + z0 @ m64


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
