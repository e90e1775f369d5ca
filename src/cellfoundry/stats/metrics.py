"""Classification metrics computed from stored predictions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from cellfoundry.stats.calibration import expected_calibration_error


def classification_metrics(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    proba: np.ndarray | None = None,
    classes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Accuracy, macro-F1, weighted-F1 (and ECE when probabilities are given) over labelled cells."""
    yt = np.asarray(y_true, dtype=object)
    yp = np.asarray(y_pred, dtype=object)
    out: dict[str, Any] = {
        "n_cells": len(yt),
        "accuracy": float(accuracy_score(yt, yp)),
        "macro_f1": float(f1_score(yt, yp, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(yt, yp, average="weighted", zero_division=0)),
    }
    if proba is not None and classes is not None:
        idx = {c: i for i, c in enumerate(classes)}
        known = np.array([t in idx for t in yt])
        if known.any():
            y_int = np.array([idx[t] for t in yt[known]])
            out["ece"] = expected_calibration_error(proba[known], y_int)
    return out


def confusion_frame(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> pd.DataFrame:
    """Counts, rows = true label, columns = predicted label."""
    yt = np.asarray(y_true, dtype=str)
    yp = np.asarray(y_pred, dtype=str)
    labels = sorted(set(yt.tolist()) | set(yp.tolist()))
    cm = confusion_matrix(yt, yp, labels=labels)
    return pd.DataFrame(
        cm, index=pd.Index(labels, name="true"), columns=pd.Index(labels, name="predicted")
    )


def most_confused(y_true: npt.ArrayLike, y_pred: npt.ArrayLike, top: int = 5) -> pd.DataFrame:
    """The most frequent true -> predicted confusions, with counts and share of the true class."""
    cm = confusion_frame(y_true, y_pred)
    rows = []
    for t in cm.index:
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
