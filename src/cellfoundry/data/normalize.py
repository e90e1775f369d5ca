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
    """Per-row sums in float64 (empty rows give 0)."""
    rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    return np.bincount(rows, weights=x.data.astype(np.float64), minlength=x.shape[0])


def size_factors(totals: np.ndarray, target_sum: float = TARGET_SUM) -> np.ndarray:
    """``target_sum / total`` per cell as float32; 0 for empty cells."""
    t = np.asarray(totals, dtype=np.float64)
    return np.divide(target_sum, t, out=np.zeros_like(t), where=t > 0).astype(np.float32)


def log1p_cp10k_given_totals(
    x: sp.csr_matrix, totals: np.ndarray, target_sum: float = TARGET_SUM
) -> sp.csr_matrix:
    """log1p(x / total * target_sum) with per-cell ``totals`` computed by the caller (new matrix)."""
    out = sp.csr_matrix(x, dtype=np.float32, copy=True)
    scale = np.repeat(size_factors(totals, target_sum), np.diff(out.indptr))
    out.data = np.log1p(out.data * scale)
    return out


def log1p_cp10k(
    counts: sp.spmatrix | np.ndarray, target_sum: float = TARGET_SUM
) -> sp.csr_matrix:
    """Return log1p(counts / row_total * target_sum) as float32 CSR. Empty cells stay zero."""
    x = sp.csr_matrix(counts, dtype=np.float32)
    return log1p_cp10k_given_totals(x, row_totals(x), target_sum)


def cp10k(counts: sp.spmatrix | np.ndarray, target_sum: float = TARGET_SUM) -> sp.csr_matrix:
    """Per-cell scaling to ``target_sum`` without the log (float32 CSR)."""
    x = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    x.data = x.data * np.repeat(size_factors(row_totals(x), target_sum), np.diff(x.indptr))
    return x
