"""The one normalisation used everywhere: per-cell total -> 10,000, then natural log1p.

It is strictly per cell, so a cell's values never depend on the other cells in its batch. The
per-cell total is taken over all genes of the cell as read; ``log1p_cp10k_given_totals`` lets a
caller select genes first and normalise with the full totals (same arithmetic, fewer values).
"""

from __future__ import annotations

from dataclasses import dataclass

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


def size_factor(total: float, target_sum: float = TARGET_SUM) -> np.float32:
    """``size_factors`` of one cell (the same float64 division and float32 rounding), without
    arrays: a real-time request's cell."""
    return np.float32(target_sum / total) if total > 0 else np.float32(0.0)


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


# ----------------------------------------------------------------- log-normalised input of any scale

LOG_BASES: dict[str, float] = {"e": float(np.e), "2": 2.0, "10": 10.0}
ROUND_TARGETS: dict[str, float] = {"1e4": 1e4, "1e6": 1e6}
_CONST_TOL = 1e-3  # relative spread of back-transformed cell totals that counts as constant
_QUANT_TOL = 0.02  # |ratio - round(ratio)| that counts as an integer multiple of the unit
_QUANT_MIN_SCORE = 0.9
_MIN_SUBSET_SHARE = 0.01  # a gene subset holds at least this share of a cell's counts (median)


@dataclass
class LogScale:
    """What a log-normalised matrix is: ``log_base(1 + counts / total * target)`` per cell.

    ``target``: "1e4", "1e6", "median" (scanpy's default: the median cell total), "constant" (some
    other per-cell total), "none" (log of unnormalised counts) or "unknown". ``gene_subset``: the
    back-transformed cell totals vary, so the file holds only some of the genes; the total is then
    inferred from the count quantisation and is "plausible" rather than exact.
    """

    base: str | None
    target: str
    target_sum: float | None
    gene_subset: bool
    evidence: str

    @property
    def determined(self) -> bool:
        return self.base is not None and self.target != "unknown"

    @property
    def is_model_convention(self) -> bool:
        """Already natural log1p of counts per 10,000: nothing to convert."""
        return self.base == "e" and self.target == "1e4"

    def describe(self) -> str:
        if not self.determined:
            return f"log-normalised, scale not determined ({self.evidence})"
        base = {"e": "natural log", "2": "log2", "10": "log10"}[str(self.base)]
        if self.target == "none":
            what = "of unnormalised counts"
        elif self.target == "median":
            what = f"per-cell total = the median cell total ({self.target_sum:,.0f})"
        else:
            what = f"per-cell total {self.target_sum:,.0f}"
        return f"{base}(1 + x), {what}{' (a gene subset: plausible)' if self.gene_subset else ''}"


def _row_min(x: sp.csr_matrix) -> np.ndarray:
    out = np.zeros(x.shape[0])
    nz = np.diff(x.indptr) > 0
    if nz.any():
        out[nz] = np.minimum.reduceat(x.data, x.indptr[:-1][nz])
    return out


def _back(x: sp.csr_matrix, base: float) -> sp.csr_matrix:
    """``base ** x - 1`` on the stored values (float64)."""
    data = np.expm1(x.data.astype(np.float64) * np.log(base))
    return sp.csr_matrix((data, x.indices, x.indptr), shape=x.shape)


def _quantisation(y: sp.csr_matrix, unit: np.ndarray) -> float:
    """Share of values (above the unit, up to 50 units) that are integer multiples of the unit."""
    per = np.repeat(unit, np.diff(y.indptr))
    ok = per > 0
    r = np.divide(y.data, per, out=np.zeros_like(y.data), where=ok)
    sel = ok & (r > 1 + _QUANT_TOL) & (r <= 50)
    if sel.sum() < 20:
        return 0.0
    return float(np.mean(np.abs(r[sel] - np.round(r[sel])) < _QUANT_TOL))


def detect_log_scale(block: sp.spmatrix | np.ndarray) -> LogScale | None:
    """Infer base and per-cell total of a non-negative, non-integer matrix (a sample of cells).

    Back-transforms with each candidate base: constant cell totals give the target directly
    (all genes present); otherwise the smallest value of each cell is one count
    (``log_b(1 + target / total)``), and every other value must be an integer multiple of it in
    the right base. Returns None when there is no log structure at all (e.g. ambient-RNA-corrected
    counts, which are counts); a LogScale with ``target="unknown"`` when values look
    log-transformed (many cells repeat their smallest value) but the scale cannot be found.
    """
    x = sp.csr_matrix(block, dtype=np.float64)
    x.eliminate_zeros()
    keep = np.diff(x.indptr) > 0
    x = x[keep]
    if x.shape[0] == 0:
        return None
    for name, b in LOG_BASES.items():
        y = _back(x, b)
        tot = row_totals(y)
        med = float(np.median(tot))
        if med > 0 and (np.percentile(tot, 95) - np.percentile(tot, 5)) / med < _CONST_TOL:
            unit = np.expm1(_row_min(x) * np.log(b))
            target = next(
                (k for k, v in ROUND_TARGETS.items() if abs(med / v - 1) < _CONST_TOL), ""
            )
            if target:
                med = ROUND_TARGETS[target]
            else:
                n_counts = tot / np.where(unit > 0, unit, np.nan)
                close = abs(med / float(np.nanmedian(n_counts)) - 1) < 0.05
                target = (
                    "median" if close and _quantisation(y, unit) > _QUANT_MIN_SCORE else "constant"
                )
            return LogScale(
                name, target, med, False, f"back-transformed cell totals are all {med:,.6g}"
            )
    scores = {}
    for name, b in LOG_BASES.items():
        y = _back(x, b)
        scores[name] = _quantisation(y, np.expm1(_row_min(x) * np.log(b)))
    best = max(scores, key=lambda k: scores[k])
    if scores[best] >= _QUANT_MIN_SCORE:
        b = LOG_BASES[best]
        y = _back(x, b)
        unit = np.expm1(_row_min(x) * np.log(b))
        ev = f"values are integer multiples of each cell's smallest value in base {best} ({scores[best]:.0%})"
        if float(np.median(np.abs(unit - 1))) < 1e-3:
            return LogScale(best, "none", None, False, ev + "; that value is log(2): one count")
        tot = row_totals(y)
        last = list(ROUND_TARGETS)[-1]
        for target, t in ROUND_TARGETS.items():
            # the smallest usual total the cells fit; a smaller one only while the subset holds a
            # plausible share of the counts (a few genes of log CPM data stay under 1e4)
            share_ok = np.median(tot) / t >= _MIN_SUBSET_SHARE or target == last
            if tot.max() <= t * (1 + _CONST_TOL) and share_ok:
                share = f"cells' back-transformed totals reach {tot.max() / t:.0%} of {t:,.0f}"
                return LogScale(best, target, t, True, f"{ev}; a gene subset: {share}")
        return LogScale(
            best,
            "unknown",
            None,
            True,
            f"{ev}, but cell totals vary (a gene subset) and fit no usual total (1e4, 1e6)",
        )
    # no scale found: log-like if cells repeat their smallest (one-count) value, else counts
    mins = np.repeat(_row_min(x), np.diff(x.indptr))
    reps = np.add.reduceat((np.abs(x.data - mins) < 1e-6).astype(np.int64), x.indptr[:-1])
    if np.mean(reps >= 3) > 0.5:
        return LogScale(
            None,
            "unknown",
            None,
            True,
            "cells repeat their smallest value (log-transformed counts) but no base (e, 2, 10) "
            "gives integer counts or constant cell totals",
        )
    return None


def to_log1p_cp10k(
    x: sp.csr_matrix, scale: LogScale, full_totals: np.ndarray | None = None
) -> sp.csr_matrix:
    """Convert log-normalised values of ``scale`` to natural log1p of counts per 10,000 (new matrix).

    ``full_totals``: per-cell totals of the back-transformed values over all genes of the file
    (from ``log_back_totals``); used unless the file is a gene subset with a known target, where
    the fixed target is used instead. Strictly per cell.
    """
    if not scale.determined:
        raise ValueError("scale not determined")
    b = LOG_BASES[str(scale.base)]
    y = np.expm1(x.data.astype(np.float64) * np.log(b))
    if scale.gene_subset and scale.target_sum is not None:
        factor = np.full(x.shape[0], TARGET_SUM / scale.target_sum)
    else:
        if full_totals is None:
            raise ValueError("full_totals are needed for this scale")
        t = np.asarray(full_totals, dtype=np.float64)
        factor = np.divide(TARGET_SUM, t, out=np.zeros_like(t), where=t > 0)
    data = np.log1p(y * np.repeat(factor, np.diff(x.indptr))).astype(np.float32)
    return sp.csr_matrix((data, x.indices.copy(), x.indptr.copy()), shape=x.shape)


def log_back_totals(x: sp.csr_matrix, scale: LogScale) -> np.ndarray:
    """Per-cell totals of the back-transformed values (over the columns of ``x``)."""
    return row_totals(_back(x, LOG_BASES[str(scale.base)]))
