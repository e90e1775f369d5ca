"""Plain JSON for the database's JSON columns (numpy scalars and arrays, paths and times)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np


def jsonable(obj: Any) -> Any:
    """``obj`` as JSON-safe Python values (non-finite floats become None)."""
    # Python and numpy float64 NaN/Inf are written by json itself (as NaN/Infinity, which
    # PostgreSQL's JSON type refuses); read those constants back as None
    return json.loads(json.dumps(obj, default=_default), parse_constant=lambda _: None)


def _default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, dt.datetime | Path):
        return str(o)
    return repr(o)
