"""A model's predictions on labelled reference cells it was not fit on, kept with the artifact.

``heldout_predictions.safetensors`` (hashed in the manifest like every file) holds ``cells``
(int64: the first 8 bytes of the sha256 of each cell's key, see ``cellfoundry.artifacts.cells``,
so that models trained on the same reference can be compared on the same cells), ``y`` (the
true class, an index into the manifest's classes) and ``probabilities`` (float32, cells x
classes: the calibrated probabilities). ``manifest.training["heldout_predictions"]`` says how
they were made: ``held_out`` (the model fit on the training part predicting the stop and test
parts of the held-out split) or ``cross_validation`` (out-of-fold predictions of every labelled
cell, ``cv_folds`` fits). A consensus of several models weighs them with these predictions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cellfoundry.artifacts.tensors import load_arrays, save_arrays

HELDOUT_FILE = "heldout_predictions.safetensors"


def key_hashes(keys: np.ndarray) -> np.ndarray:
    """int64 identity of each cell key (first 8 bytes of its sha256)."""
    return np.asarray(
        [
            int.from_bytes(hashlib.sha256(str(k).encode()).digest()[:8], "little", signed=True)
            for k in keys
        ],
        dtype=np.int64,
    )


@dataclass
class HeldOutPredictions:
    """Calibrated probabilities of a model on reference cells it did not fit on."""

    cells: np.ndarray  # (n,) int64 cell identities (key_hashes)
    y: np.ndarray  # (n,) int64 true class index
    probabilities: np.ndarray  # (n, n_classes) float32
    kind: str  # "held_out" | "cross_validation"

    def __post_init__(self) -> None:
        n = len(self.cells)
        if len(self.y) != n or self.probabilities.ndim != 2 or len(self.probabilities) != n:
            raise ValueError("held-out predictions need one row of cells, y and probabilities each")

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "n_cells": len(self.cells)}


def write_heldout(folder: str | Path, held: HeldOutPredictions) -> Path:
    return save_arrays(
        Path(folder),
        {
            "cells": held.cells.astype(np.int64),
            "y": held.y.astype(np.int64),
            "probabilities": held.probabilities.astype(np.float32),
        },
        HELDOUT_FILE,
    )


def read_heldout(
    folder: str | Path, n_classes: int, description: dict[str, Any] | None
) -> HeldOutPredictions | None:
    """The stored held-out predictions; None for artifacts without them (or malformed ones)."""
    if not (Path(folder) / HELDOUT_FILE).is_file():
        return None
    a = load_arrays(Path(folder), HELDOUT_FILE)
    try:
        held = HeldOutPredictions(
            a["cells"], a["y"], a["probabilities"], str((description or {}).get("kind", "held_out"))
        )
    except (KeyError, ValueError):
        return None
    if held.probabilities.shape[1] != n_classes or (held.y >= n_classes).any():
        return None
    return held
