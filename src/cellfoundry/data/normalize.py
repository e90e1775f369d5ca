"""The one normalisation used everywhere: per-cell total -> 10,000, then natural log1p.

It is strictly per cell, so a cell's values never depend on the other cells in its batch. The
per-cell total is taken over all genes of the cell as read; ``log1p_cp10k_given_totals`` lets a
caller select genes first and normalise with the full totals (same arithmetic, fewer values).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

TARGET_SUM = 1e4


def row_totals(x: sp.csr_matrix) -> np.ndarray:
    """Per-row sums accumulated in float64, each row on its own (empty rows give 0)."""
    totals = np.zeros(x.shape[0], dtype=np.float64)
    nonempty = np.diff(x.indptr) > 0
    if nonempty.any():
        totals[nonempty] = np.add.reduceat(x.data, x.indptr[:-1][nonempty], dtype=np.float64)
    return totals


def size_factors(totals: np.ndarray, target_sum: float = TARGET_SUM) -> np.ndarray:
    """``target_sum / total`` per cell as float32; 0 for empty cells."""
    t = np.asarray(totals, dtype=np.float64)
    return np.divide(target_sum, t, out=np.zeros_like(t), where=t > 0).astype(np.float32)


def log1p_cp10k_given_totals(
    x: sp.csr_matrix, totals: np.ndarray, target_sum: float = TARGET_SUM
) -> sp.csr_matrix:
    """log1p(x / total * target_sum) with per-cell ``totals`` computed by the caller (new matrix)."""
    scale = np.repeat(size_factors(totals, target_sum), np.diff(x.indptr))
    data = np.log1p(x.data.astype(np.float32, copy=False) * scale)
    return sp.csr_matrix((data, x.indices.copy(), x.indptr.copy()), shape=x.shape)


def log1p_cp10k(counts: sp.spmatrix | np.ndarray, target_sum: float = TARGET_SUM) -> sp.csr_matrix:
    """Return log1p(counts / row_total * target_sum) as float32 CSR. Empty cells stay zero."""
    x = sp.csr_matrix(counts, dtype=np.float32)
    return log1p_cp10k_given_totals(x, row_totals(x), target_sum)


def cp10k(counts: sp.spmatrix | np.ndarray, target_sum: float = TARGET_SUM) -> sp.csr_matrix:
    """Per-cell scaling to ``target_sum`` without the log (float32 CSR)."""
    x = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    x.data = x.data * np.repeat(size_factors(row_totals(x), target_sum), np.diff(x.indptr))
    return x
