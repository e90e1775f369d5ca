"""scGPT per-cell value binning (spec §2.7): quantile edges of the non-zero values, ties spread at random.

Written from the published algorithm (``scgpt.preprocess.binning`` / ``_digitize``); the random
source is an explicit generator instead of the global ``np.random`` so that results are seedable.
A ``np.random.RandomState(s)`` gives exactly the numbers the official code draws after
``np.random.seed(s)``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class UniformSource(Protocol):
    def random(self, size: int) -> np.ndarray: ...


def digitize(x: np.ndarray, edges: np.ndarray, rng: UniformSource) -> np.ndarray:
    """Bin index of each value; values equal to repeated edges get a uniformly random bin among them.

    ``edges`` are non-decreasing (quantiles), where ``np.digitize(x, edges[, right=True])`` is
    ``searchsorted`` with side right (left); called directly to skip its monotonicity scan.
    """
    left = np.searchsorted(edges, x, side="right")
    right = np.searchsorted(edges, x, side="left")
    u = rng.random(len(x))
    return np.ceil(u * (right - left) + left).astype(np.int64)


def bin_values(row: np.ndarray, n_bins: int, rng: UniformSource) -> np.ndarray:
    """Bins 1..n_bins-1 for non-zero values and 0 for zeros (int64), per-cell quantile edges."""
    row = np.asarray(row)
    if row.ndim != 1:
        raise ValueError("bin_values expects one cell (a 1-d array)")
    if row.size == 0 or row.max() == 0:
        return np.zeros(row.shape, dtype=np.int64)
    qs = np.linspace(0, 1, n_bins - 1)
    if row.min() <= 0:
        nz = row.nonzero()
        values = row[nz]
        out = np.zeros(row.shape, dtype=np.int64)
        out[nz] = digitize(values, np.quantile(values, qs), rng)
        return out
    return digitize(row, np.quantile(row, qs), rng)
