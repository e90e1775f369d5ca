"""Array storage for artifacts: safetensors only (no pickle), plus plain-text gene lists."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

WEIGHTS = "weights.safetensors"
GENES = "genes.txt"


def save_arrays(folder: Path, arrays: dict[str, np.ndarray], name: str = WEIGHTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))
    return path


def load_arrays(folder: Path, name: str = WEIGHTS) -> dict[str, np.ndarray]:
    return load_file(str(Path(folder) / name))


def save_genes(folder: Path, genes: Sequence[str], name: str = GENES) -> Path:
    path = folder / name
    path.write_text("\n".join(genes) + "\n")
    return path


def load_genes(folder: Path, name: str = GENES) -> list[str]:
    return [line for line in (Path(folder) / name).read_text().split("\n") if line]
