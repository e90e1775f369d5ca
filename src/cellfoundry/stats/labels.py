"""Label conventions shared by predictions and metrics: the Unknown call, missing true labels."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

UNKNOWN = "Unknown"
# true-label values that mean "no label" (besides None / NaN)
MISSING_LABELS = frozenset({"", "nan", "NaN", "None", "NA", "<NA>"})


def labelled_mask(y_true: npt.ArrayLike) -> np.ndarray:
    """True where a cell has a true label (not None/NaN/empty/"nan")."""
    s = pd.Series(np.asarray(y_true, dtype=object))
    return (~s.isna() & ~s.astype(str).str.strip().isin(MISSING_LABELS)).to_numpy()
