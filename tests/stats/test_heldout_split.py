"""Held-out parts: disjoint, stratified; a baseline's stored metrics come from cells no choice used."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from sklearn.metrics import f1_score

import cellfoundry as cf
from cellfoundry.stats.calibration import fit_temperature
from cellfoundry.stats.splits import held_out_split


def test_parts_are_disjoint_and_every_class_trains(pbmc3k: ad.AnnData) -> None:
    y = np.unique(pbmc3k.obs["cell_type"].astype(str), return_inverse=True)[1]
    s = held_out_split(y, 0.3, seed=4)
    parts = [s.train, s.stop, s.calibration, s.test]
    assert len(np.unique(np.concatenate(parts))) == sum(map(len, parts)) == len(y)
    for c in np.unique(y):
        n = int((y == c).sum())
        assert (y[s.train] == c).sum() >= 1
        held = n - int((y[s.train] == c).sum())
        assert abs(held - 0.3 * n) <= 1  # stratified
    assert s.sizes() == held_out_split(y, 0.3, seed=4).sizes()
    assert not np.array_equal(s.test, held_out_split(y, 0.3, seed=5).test)


def test_logreg_metrics_are_from_test_cells_calibration_from_others(pbmc3k: ad.AnnData) -> None:
    model = cf.train(pbmc3k, "cell_type", "logreg", refit=False, seed=1, n_features=1000)
    h = model.holdout
    assert h is not None
    train, cal, test = h["train_index"], h["calibration_index"], h["index"]
    assert not set(train) & set(test) and not set(cal) & set(test) and not set(train) & set(cal)
    truth = pbmc3k.obs["cell_type"].astype(str).to_numpy()
    res = cf.annotate(pbmc3k[test].copy(), model)
    # the stored metrics are the test cells', as scikit-learn computes them
    assert model.manifest.metrics["macro_f1"] == pytest.approx(
        f1_score(truth[test], res.labels, average="macro")
    )
    assert model.manifest.metrics["split"]["test"] == len(test)
    # the temperature is the calibration cells' (logits = log of the uncalibrated probabilities)
    classes = list(model.classes)
    y = np.array([classes.index(t) for t in truth])

    def logits(idx: np.ndarray) -> np.ndarray:
        raw = cf.annotate(pbmc3k[idx].copy(), model).probabilities ** model.manifest.temperature
        return np.log(raw / raw.sum(axis=1, keepdims=True))

    assert fit_temperature(logits(cal), y[cal]) == pytest.approx(
        model.manifest.temperature, rel=1e-3
    )
