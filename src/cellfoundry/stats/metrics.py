"""Classification metrics computed from stored predictions.

Definitions (the README's "Metric definitions" section says the same):

* Cells without a true label (missing, empty, "nan") are dropped before anything is counted.
* ``macro_f1`` averages the per-class F1 over the labels present in the truth only
  (``macro_f1_over == "true labels"``); a predicted label no evaluated cell has does not dilute it.
* Forced-choice metrics (``accuracy``, ``macro_f1``, ``weighted_f1``) score the most probable class
  of every cell, Unknown threshold ignored.
* Unknown-aware metrics: ``coverage`` is the share of cells the threshold did not turn into
  "Unknown"; ``called_accuracy`` and ``called_macro_f1`` score only those called cells.
* Reference rows: ``majority`` always predicts the most frequent true label of the evaluated cells;
  ``chance`` is the expectation of guessing labels at the true label frequencies ``p_c``:
  accuracy ``sum p_c^2`` and, per class, precision = recall = ``p_c``, so macro-F1 ``mean p_c``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from cellfoundry.stats.calibration import expected_calibration_error
from cellfoundry.stats.labels import UNKNOWN, called_mask, labelled_mask

__all__ = [
    "BASE_EMBEDDING",
    "INPUT_RECONSTRUCTION",
    "UNKNOWN",
    "classification_metrics",
    "confusion_frame",
    "labelled_mask",
    "macro_f1_true_labels",
    "most_confused",
    "reference_rows",
]

MACRO_F1_OVER = "true labels"
# Reconstruction measures are defined differently per family, so each has its own name:
INPUT_RECONSTRUCTION = (
    "input_reconstruction_mse"  # decoder output vs log-normalised input, per gene
)
BASE_EMBEDDING = "base_embedding_mse"  # adapted vs frozen base embedding, per dimension


def macro_f1_true_labels(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Macro-F1 averaged over the labels present in ``y_true`` only."""
    yt = np.asarray(y_true, dtype=str)
    if len(yt) == 0:
        return float("nan")
    labels = sorted(set(yt.tolist()))
    return float(
        f1_score(yt, np.asarray(y_pred, dtype=str), labels=labels, average="macro", zero_division=0)
    )


def reference_rows(y_true: npt.ArrayLike) -> dict[str, dict[str, Any]]:
    """Majority-class and chance metrics for the evaluated cells' true labels (see module doc)."""
    yt = np.asarray(y_true, dtype=str)
    yt = yt[labelled_mask(yt)]
    if len(yt) == 0:
        nan = float("nan")
        return {
            "majority": {"accuracy": nan, "macro_f1": nan},
            "chance": {"accuracy": nan, "macro_f1": nan},
        }
    values, counts = np.unique(yt, return_counts=True)
    p = counts / counts.sum()
    majority = values[np.argmax(counts)]
    return {
        "majority": {
            "label": str(majority),
            "accuracy": float(p.max()),
            "macro_f1": macro_f1_true_labels(yt, np.full(len(yt), majority, dtype=object)),
        },
        "chance": {"accuracy": float((p**2).sum()), "macro_f1": float(p.mean())},
    }


def classification_metrics(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    proba: np.ndarray | None = None,
    classes: Sequence[str] | None = None,
    *,
    threshold: float | None = None,
    called: npt.ArrayLike | None = None,
) -> dict[str, Any]:
    """Forced-choice and Unknown-aware metrics over the labelled cells (see the module doc).

    ``y_pred``: the most probable class per cell; an "Unknown" entry there counts as not called
    (and as a wrong forced choice). Called cells are, in order of precedence: ``called`` (bool
    mask), ``stats.labels.called_mask(proba, threshold)``, the cells whose ``y_pred`` is not Unknown.
    """
    yt_all = np.asarray(y_true, dtype=object)
    keep = labelled_mask(yt_all)
    yt = yt_all[keep].astype(str)
    yp = np.asarray(y_pred, dtype=object)[keep].astype(str)
    if called is not None:
        call = np.asarray(called, dtype=bool)[keep]
    elif proba is not None and threshold is not None:
        call = called_mask(np.asarray(proba)[keep], threshold)
    else:
        call = np.ones(len(yt), dtype=bool)
    call = call & (yp != UNKNOWN)
    n = len(yt)
    out: dict[str, Any] = {
        "n_cells": n,
        "n_unlabelled_dropped": int((~keep).sum()),
        "macro_f1_over": MACRO_F1_OVER,
        "n_true_labels": len(set(yt.tolist())),
        "accuracy": float(accuracy_score(yt, yp)) if n else float("nan"),
        "macro_f1": macro_f1_true_labels(yt, yp),
        "weighted_f1": float(
            f1_score(yt, yp, labels=sorted(set(yt.tolist())), average="weighted", zero_division=0)
        )
        if n
        else float("nan"),
        "coverage": float(call.mean()) if n else float("nan"),
        "called_accuracy": float((yt[call] == yp[call]).mean()) if call.any() else float("nan"),
        "called_macro_f1": macro_f1_true_labels(yt[call], yp[call]),
        "reference": reference_rows(yt),
    }
    if proba is not None and classes is not None:
        idx = {c: i for i, c in enumerate(classes)}
        known = np.array([t in idx for t in yt], dtype=bool)
        if known.any():
            y_int = np.array([idx[t] for t in yt[known]])
            out["ece"] = expected_calibration_error(np.asarray(proba)[keep][known], y_int)
    return out


def confusion_frame(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> pd.DataFrame:
    """Counts, rows = true label, columns = predicted label (unlabelled cells dropped)."""
    keep = labelled_mask(y_true)
    yt = np.asarray(y_true, dtype=object)[keep].astype(str)
    yp = np.asarray(y_pred, dtype=object)[keep].astype(str)
    labels = sorted(set(yt.tolist()) | set(yp.tolist()))
    cm = confusion_matrix(yt, yp, labels=labels)
    return pd.DataFrame(
        cm, index=pd.Index(labels, name="true"), columns=pd.Index(labels, name="predicted")
    )


def most_confused(y_true: npt.ArrayLike, y_pred: npt.ArrayLike, top: int = 5) -> pd.DataFrame:
    """The most frequent true -> predicted confusions, with counts and share of the true class."""
    cm = confusion_frame(y_true, y_pred)
    true_labels = set(np.asarray(y_true, dtype=object)[labelled_mask(y_true)].astype(str).tolist())
    rows = []
    for t in cm.index:
        if t not in true_labels:
            continue
        total = int(cm.loc[t].sum())
        for p in cm.columns:
            if t != p and cm.loc[t, p] > 0:
                rows.append(
                    {
                        "true": t,
                        "predicted": p,
                        "count": int(cm.loc[t, p]),
                        "share_of_true": float(cm.loc[t, p] / total) if total else 0.0,
                    }
                )
    df = pd.DataFrame(rows, columns=["true", "predicted", "count", "share_of_true"])
    return (
        df.sort_values(["count", "share_of_true"], ascending=False).head(top).reset_index(drop=True)
    )
