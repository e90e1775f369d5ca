"""Shared training procedure for classifiers on a fixed feature space.

Labels are read and checked, a stratified held-out split gives honest metrics, the temperature
and the Unknown threshold; the final model is then refit on every labelled cell (``refit=True``).
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
from sklearn.model_selection import train_test_split
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
    holdout: dict[str, np.ndarray]  # indices (into kept cells), y, proba


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
    """Fit on a stratified split, calibrate and measure on the held-out part, optionally refit on all."""
    idx = np.arange(len(y))
    n_hold = max(round(holdout_fraction * len(y)), len(classes))
    tr, ho = train_test_split(idx, test_size=n_hold, stratify=y, random_state=seed)
    bar = tqdm(total=3 if refit else 2, desc="training", unit="step", disable=not progress)
    bar.set_postfix_str(f"fit on {len(tr)} cells")
    state = fit(x[tr], y[tr], len(classes), seed)
    bar.update()
    bar.set_postfix_str(f"calibrate on {len(ho)} held-out cells")
    scores, are_logits = score(state, x[ho])
    temperature = fit_temperature(scores, y[ho]) if are_logits else 1.0
    proba = apply_temperature(scores, temperature) if are_logits else scores
    threshold = choose_unknown_threshold(proba, y[ho], reject_correct)
    pred = proba.argmax(axis=1)
    metrics = classification_metrics([classes[i] for i in y[ho]], [classes[i] for i in pred])
    metrics["ece"] = expected_calibration_error(proba, y[ho])
    if are_logits:
        metrics["ece_before_temperature"] = expected_calibration_error(
            apply_temperature(scores, 1.0), y[ho]
        )
    metrics["unknown_share"] = float((proba.max(axis=1) < threshold).mean())
    metrics["evaluated_on"] = (
        f"stratified held-out {len(ho)} of {len(y)} reference cells (seed {seed})"
    )
    bar.update()
    if refit:
        bar.set_postfix_str(f"refit on all {len(y)} cells")
        state = fit(x, y, len(classes), seed)
        bar.update()
    bar.close()
    return FitOutcome(
        state, temperature, threshold, metrics, {"index": ho, "y": y[ho], "proba": proba}
    )
