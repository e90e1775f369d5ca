"""Label conventions shared by predictions and metrics: the Unknown call, missing true labels."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp

UNKNOWN = "Unknown"
# probabilities this close to even (top minus bottom) are a tie: no call (see called_mask)
UNIFORM_TOL = 1e-6
# true-label values that mean "no label" (besides None / NaN)
MISSING_LABELS = frozenset({"", "nan", "NaN", "None", "NA", "<NA>"})


def called_mask(proba: np.ndarray, threshold: float) -> np.ndarray:
    """True where a cell gets a call, False where it is "Unknown".

    A cell is Unknown when its confidence (the top probability) is below ``threshold``, and
    whatever the threshold, when its probabilities are uniform: a model with no evidence for a
    cell (no counts on its genes) spreads it evenly over the classes, and the first class of an
    even tie is no call.
    """
    p = np.asarray(proba)
    if p.ndim != 2 or p.shape[0] == 0:
        return np.zeros(p.shape[:1], dtype=bool)
    return np.asarray((p.max(axis=1) >= threshold) & ~uniform_rows(p), dtype=bool)


def uniform_rows(proba: np.ndarray) -> np.ndarray:
    """True for rows spread evenly over two or more classes (top minus bottom within
    ``UNIFORM_TOL``): how a model answers for a cell it has no evidence for (``uniform_where``)."""
    p = np.asarray(proba)
    if p.ndim != 2 or p.shape[1] < 2:
        return np.zeros(p.shape[:1], dtype=bool)
    return np.asarray((p.max(axis=1) - p.min(axis=1)) <= UNIFORM_TOL, dtype=bool)


def no_evidence_rows(x: sp.spmatrix | sp.sparray | np.ndarray) -> np.ndarray:
    """True for rows that hold no non-zero value (a cell with no counts on a model's genes)."""
    if isinstance(x, np.ndarray):
        return ~np.any(x != 0, axis=1)
    # read-only: scipy 1.17's csr_matrix(x) of a CSR with unsorted indices was seen to sort x's
    # own index array in place (values left as they were), corrupting cached /predict cells
    csr = x if x.format == "csr" else x.tocsr(copy=True)
    n = int(csr.shape[0])
    rows = np.repeat(np.arange(n), np.diff(csr.indptr))
    return np.asarray(np.bincount(rows[np.asarray(csr.data) != 0], minlength=n) == 0)


def uniform_where(proba: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``proba`` with the marked rows set to the uniform distribution (in place; returned)."""
    if rows.any():
        proba[rows] = 1.0 / proba.shape[1]
    return proba


def labelled_mask(y_true: npt.ArrayLike) -> np.ndarray:
    """True where a cell has a true label (not None/NaN/empty/"nan")."""
    s = pd.Series(np.asarray(y_true, dtype=object))
    return (~s.isna() & ~s.astype(str).str.strip().isin(MISSING_LABELS)).to_numpy()
