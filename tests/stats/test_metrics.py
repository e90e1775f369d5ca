"""Honest metrics on real predictions, checked against scikit-learn (an independent reference)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.metrics import accuracy_score, f1_score

import cellfoundry as cf
from cellfoundry.stats.metrics import (
    UNKNOWN,
    classification_metrics,
    confusion_frame,
    most_confused,
    reference_rows,
)


@dataclass
class Run:
    truth: np.ndarray
    pred: np.ndarray  # forced choice
    proba: np.ndarray
    classes: list[str]
    threshold: float
    shown: np.ndarray  # with "Unknown"


@pytest.fixture(scope="module")
def symphony_run(shared_dir: Path) -> Run:
    """logreg trained on symphony's 3' chemistries annotating its 5' cells, less the two types the
    model most often predicts for other cells (so some predicted labels are absent from the truth)."""
    adata = ad.read_h5ad(shared_dir / "data" / "symphony_pbmcs_small_lognorm.h5ad")
    ref = adata[adata.obs["donor"] != "5p"].copy()
    qry = adata[adata.obs["donor"] == "5p"].copy()
    model = cf.train(ref, "cell_type", "logreg", n_features=None)
    res = cf.annotate(qry, model)
    truth = qry.obs["cell_type"].astype(str).to_numpy()
    pred = np.asarray(res.labels, dtype=str)
    wrong = pd.Series(pred[pred != truth]).value_counts()
    keep = ~np.isin(truth, list(wrong.index[:2]))
    return Run(
        truth[keep],
        pred[keep],
        res.probabilities[keep],
        list(res.classes),
        res.threshold,
        np.asarray(res.display_labels, dtype=str)[keep],
    )


def test_macro_f1_is_over_the_true_labels_only(symphony_run) -> None:
    r: Run = symphony_run
    truth, pred = r.truth, r.pred
    extra = set(pred) - set(truth)
    assert extra, "the query must receive some predicted-but-absent labels for this test to bite"
    m = classification_metrics(truth, pred, r.proba, r.classes)
    labels = sorted(set(truth))
    assert m["macro_f1"] == pytest.approx(f1_score(truth, pred, labels=labels, average="macro"))
    assert m["macro_f1_over"] == "true labels" and m["n_true_labels"] == len(labels)
    # sklearn's default averages over predicted labels too, which is lower here
    assert m["macro_f1"] > f1_score(truth, pred, average="macro", zero_division=0)
    assert m["accuracy"] == pytest.approx(accuracy_score(truth, pred))


def test_unknown_aware_metrics_beside_forced_choice(symphony_run) -> None:
    r: Run = symphony_run
    truth, pred = r.truth, r.pred
    m = classification_metrics(truth, pred, r.proba, r.classes, threshold=r.threshold)
    called = r.proba.max(axis=1) >= r.threshold
    assert 0 < called.sum() < len(called)
    assert m["coverage"] == pytest.approx(called.mean())
    assert m["called_accuracy"] == pytest.approx(accuracy_score(truth[called], pred[called]))
    labels = sorted(set(truth[called]))
    assert m["called_macro_f1"] == pytest.approx(
        f1_score(truth[called], pred[called], labels=labels, average="macro")
    )
    # the display labels (with "Unknown") give the same called set
    shown = r.shown
    assert (shown == UNKNOWN).any()
    m2 = classification_metrics(truth, shown)
    assert m2["coverage"] == pytest.approx(m["coverage"])
    assert m2["called_macro_f1"] == pytest.approx(m["called_macro_f1"])
    # forced choice is unaffected by the threshold
    assert m["macro_f1"] == pytest.approx(classification_metrics(truth, pred)["macro_f1"])


def test_majority_and_chance_rows(symphony_run) -> None:
    truth = symphony_run.truth
    rows = reference_rows(truth)
    x = np.zeros((len(truth), 1))
    dummy = DummyClassifier(strategy="most_frequent").fit(x, truth)
    const = dummy.predict(x)
    labels = sorted(set(truth))
    assert rows["majority"]["accuracy"] == pytest.approx(accuracy_score(truth, const))
    assert rows["majority"]["macro_f1"] == pytest.approx(
        f1_score(truth, const, labels=labels, average="macro", zero_division=0)
    )
    # chance: the mean over many draws of scikit-learn's stratified dummy
    accs, f1s = [], []
    for seed in range(300):
        guess = DummyClassifier(strategy="stratified", random_state=seed).fit(x, truth).predict(x)
        accs.append(accuracy_score(truth, guess))
        f1s.append(f1_score(truth, guess, labels=labels, average="macro", zero_division=0))
    assert rows["chance"]["accuracy"] == pytest.approx(np.mean(accs), abs=0.01)
    assert rows["chance"]["macro_f1"] == pytest.approx(np.mean(f1s), abs=0.02)
    m = classification_metrics(truth, truth)
    assert m["reference"] == rows


def test_missing_labels_are_dropped_not_a_nan_class(pbmc3k: ad.AnnData) -> None:
    truth = pbmc3k.obs["cell_type"].astype(object).to_numpy().copy()
    pred = truth.astype(str).copy()
    truth[:50] = np.nan
    truth[50:60] = ""
    truth[60:70] = "nan"
    m = classification_metrics(truth, pred)
    assert m["n_cells"] == len(truth) - 70 and m["n_unlabelled_dropped"] == 70
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0
    cm = confusion_frame(truth, pred)
    assert (
        "nan" not in cm.index and "" not in cm.index and int(cm.to_numpy().sum()) == len(truth) - 70
    )
    assert most_confused(truth, pred).empty
