"""The one normalisation used everywhere: per-cell total -> 10,000, then natural log1p.

It is strictly per cell, so a cell's values never depend on the other cells in its batch.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

TARGET_SUM = 1e4


def log1p_cp10k(counts: sp.spmatrix | np.ndarray, target_sum: float = TARGET_SUM) -> sp.csr_matrix:
    """Return log1p(counts / row_total * target_sum) as float32 CSR. Empty cells stay zero."""
    x = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    totals = np.asarray(x.sum(axis=1)).ravel().astype(np.float64)
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    x.data = np.log1p(x.data * np.repeat(scale, np.diff(x.indptr)).astype(np.float32))
    return x


def cp10k(counts: sp.spmatrix | np.ndarray, target_sum: float = TARGET_SUM) -> sp.csr_matrix:
    """Per-cell scaling to ``target_sum`` without the log (float32 CSR)."""
    x = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    totals = np.asarray(x.sum(axis=1)).ravel().astype(np.float64)
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    x.data = x.data * np.repeat(scale, np.diff(x.indptr)).astype(np.float32)
    return x
