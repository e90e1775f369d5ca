"""Stratified held-out parts, one per choice made from held-out cells.

Training a classifier makes three choices from held-out cells: when to stop (early stopping), the
temperature and the Unknown threshold (calibration), and what to report (test). Each uses its own
cells, so the stored metrics come from cells none of the choices saw. Baselines and fine-tunes
call the same function with the same seed and therefore train on the very same cells.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

PARTS = ("stop", "calibration", "test")


@dataclass(frozen=True)
class HeldOutSplit:
    """Indices (sorted, disjoint) of training cells and of each held-out part."""

    train: np.ndarray
    stop: np.ndarray  # early stopping
    calibration: np.ndarray  # temperature and Unknown threshold
    test: np.ndarray  # the stored metrics

    def sizes(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("train", *PARTS)}


def held_out_split(y: np.ndarray, fraction: float, seed: int) -> HeldOutSplit:
    """Hold out about ``fraction`` of each class, shared equally by the stop/calibration/test parts.

    Every class keeps at least one training cell; a class with few cells gives its held-out cells to
    the parts in turn (starting at a class-dependent part), so no part is systematically empty.
    """
    y = np.asarray(y)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"held-out fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("train", *PARTS)}
    for ci, c in enumerate(np.unique(y)):
        idx = rng.permutation(np.nonzero(y == c)[0])
        n_held = min(len(idx) - 1, max(round(fraction * len(idx)), 1 if len(idx) > 1 else 0))
        held, rest = idx[:n_held], idx[n_held:]
        parts["train"].append(rest)
        order = [PARTS[(ci + j) % 3] for j in range(3)]
        for j, name in enumerate(order):
            parts[name].append(held[j::3])
    out = {k: np.sort(np.concatenate(v)).astype(np.int64) for k, v in parts.items()}
    return HeldOutSplit(**out)


def cells_sha256(names: Iterable[str]) -> str:
    """Hash of a set of cell names (order-free): which cells a model trained on."""
    h = hashlib.sha256()
    for n in sorted(map(str, names)):
        h.update(n.encode())
        h.update(b"\0")
    return h.hexdigest()
