"""Logistic regression on log1p-CP10k (CellTypist-style), with the scaling folded into the weights."""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar

import anndata as ad
import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from cellfoundry.models.baselines.common import StateAnnotator, prepare_reference
from cellfoundry.models.baselines.explain import class_contributions
from cellfoundry.models.baselines.standardise import (
    standardise,
    standardise_cells,
    standardised_product,
    zero_product,
)
from cellfoundry.stats.calibration import apply_temperature


def _fit(
    x: sp.csr_matrix,
    y: np.ndarray,
    n_classes: int,
    seed: int,
    c: float,
    max_iter: int,
    balanced: bool,
) -> dict[str, np.ndarray]:
    mean = np.asarray(x.mean(axis=0)).ravel()
    sq = x.copy()
    sq.data **= 2
    sd = np.sqrt(np.maximum(np.asarray(sq.mean(axis=0)).ravel() - mean**2, 0))
    sd[sd < 1e-8] = 1.0
    z = standardise(x.toarray(), mean, sd)
    clf = LogisticRegression(
        C=c, max_iter=max_iter, random_state=seed, class_weight="balanced" if balanced else None
    )
    clf.fit(z.astype(np.float32), y)
    coef = np.zeros((n_classes, x.shape[1]))
    bias = np.zeros(n_classes)
    if clf.coef_.shape[0] == 1:  # binary: sklearn keeps one row
        coef[clf.classes_[1]], bias[clf.classes_[1]] = clf.coef_[0], clf.intercept_[0]
    else:
        coef[clf.classes_], bias[clf.classes_] = clf.coef_, clf.intercept_
    # stored folded (logits = x @ W + b without clipping or absent genes); _logits unfolds it
    w = (coef / sd).T
    b = bias - (mean / sd) @ coef.T
    return {
        "W": w.astype(np.float32),
        "b": b.astype(np.float32),
        "mean": mean.astype(np.float32),
        "scale": sd.astype(np.float32),
    }


Unfolded = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]


def _unfold(state: dict[str, np.ndarray]) -> Unfolded:
    """``(mean, sd, coef.T, bias, zero_product)`` in float64 from the stored folded weights."""
    mean = state["mean"].astype(np.float64)
    sd = state["scale"].astype(np.float64)
    coef_t = state["W"].astype(np.float64) * sd[:, None]  # unfold the stored scaling
    bias = state["b"].astype(np.float64) + (mean / sd) @ coef_t
    return mean, sd, coef_t, bias, zero_product(mean, sd, coef_t)


def _logits(
    state: dict[str, np.ndarray],
    x: sp.csr_matrix,
    present: np.ndarray | None = None,
    unfolded: Unfolded | None = None,
) -> np.ndarray:
    """``clip((x - mean) / sd) @ coef.T + bias``; absent genes (``present`` False) count as z = 0."""
    mean, sd, coef_t, bias, zero = _unfold(state) if unfolded is None else unfolded
    z = standardised_product(x, mean, sd, coef_t, present, None if present is not None else zero)
    return (z + bias).astype(np.float32)


class LogRegAnnotator(StateAnnotator):
    """Multinomial logistic regression on standardised log1p-CP10k expression."""

    family: ClassVar[str] = "logreg"

    def logits_or_proba(self, x: sp.csr_matrix, present: np.ndarray | None = None) -> np.ndarray:
        return apply_temperature(
            _logits(self.state, x, present, self._unfolded), self.manifest.temperature
        )

    @cached_property
    def _unfolded(self) -> Unfolded:
        """The float64 weights, unfolded once per loaded model (not per call: /predict)."""
        return _unfold(self.state)

    def contributions(
        self, x: sp.csr_matrix, called: np.ndarray, present: np.ndarray
    ) -> np.ndarray:
        """Coefficient (on standardised features) x standardised value, for the called class."""
        mean, scale = self.state["mean"], self.state["scale"]
        coef = (self.state["W"] * scale[:, None]).T  # un-fold the scaling: (classes, genes)
        return class_contributions(standardise_cells(x, mean, scale), coef, called, present)

    @classmethod
    def train(
        cls,
        adata: ad.AnnData,
        label_key: str,
        *,
        name: str = "logreg",
        n_features: int | None = 2000,
        C: float = 0.3,
        class_weight_balanced: bool = True,
        max_iter: int = 2000,
        seed: int = 0,
        holdout_fraction: float = 0.2,
        refit: bool = True,
        progress: bool = False,
        cv_folds: int = 0,
    ) -> LogRegAnnotator:
        """Train on ``obs[label_key]`` of a labelled reference.

        ``cv_folds`` (≥ 2) keeps out-of-fold predictions of every reference cell with the
        artifact, which weigh the model in a consensus (``cv_folds`` more fits); by default the
        held-out cells' predictions are kept.
        """
        ref = prepare_reference(adata, label_key, n_features)
        params: dict[str, Any] = {
            "n_features": n_features,
            "C": C,
            "max_iter": max_iter,
            "class_weight_balanced": class_weight_balanced,
        }

        def fit(x: sp.csr_matrix, y: np.ndarray, k: int, s: int) -> dict[str, np.ndarray]:
            return _fit(x, y, k, s, C, max_iter, class_weight_balanced)

        return cls._train(
            ref,
            fit,
            lambda st, x: (_logits(st, x), True),
            params,
            name=name,
            seed=seed,
            holdout_fraction=holdout_fraction,
            refit=refit,
            label_key=label_key,
            progress=progress,
            cv_folds=cv_folds,
        )
