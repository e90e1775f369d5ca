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
from cellfoundry.stats.labels import called_mask
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
    # predictions on cells the scoring model did not fit on (cellfoundry.artifacts.heldout):
    # index (into kept cells), y, proba; kind "held_out" or "cross_validation"
    predictions: dict[str, Any]


def fold_ids(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Stratified fold of every cell: each class's cells dealt to the folds in turn, shuffled."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.nonzero(y == c)[0])
        out[idx] = (np.arange(len(idx)) + rng.integers(folds)) % folds
    return out


def cross_val_proba(
    x: sp.csr_matrix,
    y: np.ndarray,
    n_classes: int,
    fit: FitFn,
    score: ScoreFn,
    *,
    folds: int,
    seed: int,
    temperature: float,
) -> np.ndarray:
    """Out-of-fold probabilities of every cell (each fold scored by a fit on the other folds,
    with the model's temperature)."""
    fold = fold_ids(y, folds, seed)
    proba = np.zeros((len(y), n_classes), dtype=np.float32)
    for f in range(folds):
        test = fold == f
        if not test.any():
            continue
        state = fit(x[~test], y[~test], n_classes, seed)
        scores, are_logits = score(state, x[test])
        proba[test] = apply_temperature(scores, temperature) if are_logits else scores
    return proba


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
    cv_folds: int = 0,
) -> FitOutcome:
    """Fit on the training part, calibrate on held-out cells, measure on other held-out cells.

    The split is :func:`cellfoundry.stats.splits.held_out_split` (the one fine-tuning uses, so with
    the same seed both train on the same cells): temperature and Unknown threshold come from the
    calibration part, the stored metrics from the test part, which neither choice saw. Baselines
    have no early stopping; the stop part is left out of the fit so the training cells stay equal.
    With ``refit`` the final model is then refit on every labelled cell.

    ``predictions`` (kept with the artifact, for weighing models in a consensus): the training
    part's model on the stop and test parts, or with ``cv_folds`` > 1 out-of-fold predictions of
    every labelled cell (``cv_folds`` more fits).
    """
    if cv_folds == 1 or cv_folds < 0:
        raise ValueError(f"cv_folds must be 0 (no cross-validation) or at least 2, got {cv_folds}")
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
    if cv_folds > 1:
        bar.set_postfix_str(f"{cv_folds}-fold out-of-fold predictions")
        every = np.arange(len(y))
        predictions: dict[str, Any] = {
            "index": every,
            "y": y,
            "proba": cross_val_proba(
                x, y, len(classes), fit, score, folds=cv_folds, seed=seed, temperature=temperature
            ),
            "kind": "cross_validation",
            "folds": cv_folds,
        }
    else:
        stop_scores, _ = score(state, x[split.stop]) if len(split.stop) else (None, False)
        both = np.concatenate([split.stop, te])
        order = np.argsort(both)
        parts = (
            [proba]
            if stop_scores is None
            else [
                apply_temperature(stop_scores, temperature) if are_logits else stop_scores,
                proba,
            ]
        )
        predictions = {
            "index": both[order],
            "y": y[both[order]],
            "proba": np.concatenate(parts)[order].astype(np.float32),
            "kind": "held_out",
        }
    pred = proba.argmax(axis=1)
    metrics = classification_metrics(
        [classes[i] for i in y[te]], [classes[i] for i in pred], proba, classes, threshold=threshold
    )
    metrics["ece"] = expected_calibration_error(proba, y[te])
    if are_logits:
        metrics["ece_before_temperature"] = expected_calibration_error(
            apply_temperature(scores, 1.0), y[te]
        )
    metrics["unknown_share"] = float((~called_mask(proba, threshold)).mean())
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
        predictions,
    )
