"""Shared training procedure for classifiers on a fixed feature space.

Labels are read and checked; stratified held-out parts give the temperature and the Unknown
threshold (calibration part) and honest metrics (test part, used by no choice); the final model is
then refit on every labelled cell (``refit=True``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from cellfoundry.errors import DataError
from cellfoundry.stats.calibration import (
    DEFAULT_REJECT_CORRECT,
    apply_temperature,
    choose_unknown_threshold,
    expected_calibration_error,
    fit_temperature,
)
from cellfoundry.stats.metrics import classification_metrics
from cellfoundry.stats.splits import held_out_split


@dataclass
class Labels:
    """Cleaned labels of a reference: which cells are used, their class index."""

    keep: np.ndarray  # bool mask over cells
    y: np.ndarray  # int class index for kept cells
    classes: list[str]
    dropped: dict[str, int]


def read_labels(adata: ad.AnnData, label_key: str, min_cells: int = 2) -> Labels:
    """Labels from ``obs[label_key]``; unlabelled cells and classes with < ``min_cells`` are left out."""
    if label_key not in adata.obs.columns:
        cols = ", ".join(map(str, adata.obs.columns[:20])) or "(none)"
        raise DataError(
            f"obs has no column '{label_key}'",
            f"choose one of the obs columns: {cols}",
            code="missing_label_key",
        )
    lab = adata.obs[label_key].astype("object")
    missing = lab.isna() | lab.astype(str).str.strip().isin(["", "nan", "NaN", "None"])
    lab = lab.where(~missing, None)
    counts = pd.Series([v for v in lab if v is not None], dtype=object).astype(str).value_counts()
    small = counts[counts < min_cells]
    classes = sorted(str(c) for c in counts.index if c not in small.index)
    if len(classes) < 2:
        raise DataError(
            f"'{label_key}' has {len(classes)} usable class(es); at least 2 with ≥{min_cells} cells are needed",
            "choose a label column with several cell types",
        )
    cls_idx = {c: i for i, c in enumerate(classes)}
    keep = np.array([v is not None and str(v) in cls_idx for v in lab])
    y = np.array([cls_idx[str(v)] for v, k in zip(lab, keep, strict=True) if k], dtype=np.int64)
    dropped = {"unlabelled": int(missing.sum())} | {
        f"class '{c}' (<{min_cells} cells)": int(n) for c, n in small.items()
    }
    return Labels(keep=keep, y=y, classes=classes, dropped={k: v for k, v in dropped.items() if v})


def data_sha256(x: sp.csr_matrix, y: np.ndarray) -> str:
    """Hash of the exact training features and labels."""
    h = hashlib.sha256()
    for arr in (x.indptr, x.indices, x.data, y):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


# fit(X, y, n_classes, seed) -> state;  score(state, X) -> (scores, are_logits)
FitFn = Callable[[sp.csr_matrix, np.ndarray, int, int], dict[str, np.ndarray]]
ScoreFn = Callable[[dict[str, np.ndarray], sp.csr_matrix], tuple[np.ndarray, bool]]


@dataclass
class FitOutcome:
    state: dict[str, np.ndarray]
    temperature: float
    threshold: float
    metrics: dict[str, Any]
    holdout: dict[str, np.ndarray]  # test indices (into kept cells), y, proba; train_index


def fit_with_holdout(
    x: sp.csr_matrix,
    y: np.ndarray,
    classes: list[str],
    fit: FitFn,
    score: ScoreFn,
    *,
    seed: int = 0,
    holdout_fraction: float = 0.2,
    refit: bool = True,
    reject_correct: float = DEFAULT_REJECT_CORRECT,
    progress: bool = False,
) -> FitOutcome:
    """Fit on the training part, calibrate on held-out cells, measure on other held-out cells.

    The split is :func:`cellfoundry.stats.splits.held_out_split` (the one fine-tuning uses, so with
    the same seed both train on the same cells): temperature and Unknown threshold come from the
    calibration part, the stored metrics from the test part, which neither choice saw. Baselines
    have no early stopping; the stop part is left out of the fit so the training cells stay equal.
    With ``refit`` the final model is then refit on every labelled cell.
    """
    split = held_out_split(y, holdout_fraction, seed)
    tr, ca, te = split.train, split.calibration, split.test
    bar = tqdm(total=3 if refit else 2, desc="training", unit="step", disable=not progress)
    bar.set_postfix_str(f"fit on {len(tr)} cells")
    state = fit(x[tr], y[tr], len(classes), seed)
    bar.update()
    bar.set_postfix_str(f"calibrate on {len(ca)} held-out cells")
    cal_scores, are_logits = score(state, x[ca])
    temperature = fit_temperature(cal_scores, y[ca]) if are_logits else 1.0
    cal_proba = apply_temperature(cal_scores, temperature) if are_logits else cal_scores
    threshold = choose_unknown_threshold(cal_proba, y[ca], reject_correct)
    scores, _ = score(state, x[te])
    proba = apply_temperature(scores, temperature) if are_logits else scores
    pred = proba.argmax(axis=1)
    metrics = classification_metrics(
        [classes[i] for i in y[te]], [classes[i] for i in pred], proba, classes, threshold=threshold
    )
    metrics["ece"] = expected_calibration_error(proba, y[te])
    if are_logits:
        metrics["ece_before_temperature"] = expected_calibration_error(
            apply_temperature(scores, 1.0), y[te]
        )
    metrics["unknown_share"] = float((proba.max(axis=1) < threshold).mean())
    metrics["evaluated_on"] = (
        f"stratified held-out test part, {len(te)} of {len(y)} reference cells (seed {seed}); "
        f"temperature and Unknown threshold from {len(ca)} other held-out cells; "
        f"fit on {len(tr)} cells"
    )
    metrics["split"] = split.sizes()
    bar.update()
    if refit:
        bar.set_postfix_str(f"refit on all {len(y)} cells")
        state = fit(x, y, len(classes), seed)
        bar.update()
    bar.close()
    return FitOutcome(
        state,
        temperature,
        threshold,
        metrics,
        {
            "index": te,
            "y": y[te],
            "proba": proba,
            "train_index": np.arange(len(y)) if refit else tr,
            "calibration_index": ca,
        },
    )
