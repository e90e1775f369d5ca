"""Post-training guards: a run is only called a success when adaptation demonstrably happened and helped.

Fires when the adapted embeddings equal the base embeddings (an adapter that never trained), when
predictions collapse to one class, or when validation macro-F1 is below the majority-class baseline.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

log = logging.getLogger(__name__)

EMBEDDING_TOLERANCE = 1e-6


@dataclass
class GuardVerdict:
    name: str
    passed: bool
    detail: str
    applicable: bool = True


@dataclass
class GuardReport:
    """Verdicts of every guard; ``success`` only when all applicable guards pass."""

    verdicts: list[GuardVerdict] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return all(v.passed for v in self.verdicts if v.applicable)

    @property
    def failures(self) -> list[str]:
        return [f"{v.name}: {v.detail}" for v in self.verdicts if v.applicable and not v.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "failures": self.failures,
            "verdicts": [asdict(v) for v in self.verdicts],
        }


def majority_baseline_macro_f1(y_true: np.ndarray) -> float:
    """Macro-F1 of always predicting the most frequent class (over the classes present in ``y_true``)."""
    y = np.asarray(y_true)
    major = np.bincount(y).argmax()
    return float(f1_score(y, np.full_like(y, major), average="macro", zero_division=0))


def embeddings_changed(
    adapted: np.ndarray, base: np.ndarray, method: str, tol: float = EMBEDDING_TOLERANCE
) -> GuardVerdict:
    """Adapted embeddings must differ from the base model's (not applicable to a frozen-encoder head)."""
    if method == "head":
        return GuardVerdict(
            "embeddings_changed", True, "frozen encoder by design (method=head)", applicable=False
        )
    if adapted.shape != base.shape:
        return GuardVerdict(
            "embeddings_changed", True, f"shapes differ {adapted.shape} vs {base.shape}"
        )
    diff = (
        float(np.abs(adapted.astype(np.float64) - base.astype(np.float64)).max())
        if adapted.size
        else 0.0
    )
    scale = float(np.abs(base).max()) if base.size else 0.0
    ok = diff > tol * max(scale, 1.0)
    return GuardVerdict(
        "embeddings_changed",
        ok,
        f"max |adapted - base| = {diff:.3g}"
        + ("" if ok else " — the adaptation did not change the encoder"),
    )


def not_collapsed(pred: np.ndarray, y_true: np.ndarray) -> GuardVerdict:
    """Predictions must use more than one class when the truth has more than one."""
    n_pred, n_true = len(np.unique(pred)), len(np.unique(y_true))
    ok = n_pred > 1 or n_true <= 1
    return GuardVerdict(
        "predictions_not_collapsed",
        ok,
        f"{n_pred} distinct predicted classes for {n_true} true classes"
        + ("" if ok else " — every cell gets the same label"),
    )


def beats_majority(pred: np.ndarray, y_true: np.ndarray) -> GuardVerdict:
    """Validation macro-F1 must not be below the majority-class baseline."""
    f1 = float(f1_score(y_true, pred, average="macro", zero_division=0))
    base = majority_baseline_macro_f1(y_true)
    ok = f1 >= base
    return GuardVerdict(
        "beats_majority_baseline",
        ok,
        f"validation macro-F1 {f1:.3f} vs majority-class baseline {base:.3f}"
        + ("" if ok else " — worse than always predicting the most frequent class"),
    )


def run_guards(
    adapted: np.ndarray, base: np.ndarray, pred: np.ndarray, y_true: np.ndarray, method: str
) -> GuardReport:
    """All guards over validation cells; logs loudly when the run is not a success."""
    rep = GuardReport(
        [
            embeddings_changed(adapted, base, method),
            not_collapsed(pred, y_true),
            beats_majority(pred, y_true),
        ]
    )
    if not rep.success:
        log.warning("FINE-TUNING NOT A SUCCESS: %s", "; ".join(rep.failures))
    return rep
