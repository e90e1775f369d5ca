"""JSON columns get plain JSON: non-finite floats of any kind become null (PostgreSQL refuses NaN)."""

from __future__ import annotations

import json
import math

import numpy as np

from cellfoundry.store.jsonable import jsonable


def test_non_finite_floats_of_every_kind_become_none() -> None:
    got = jsonable(
        {
            "py_nan": float("nan"),
            "py_inf": -math.inf,
            "np64": np.float64("inf"),
            "np32": np.float32("nan"),
            "nested": [{"x": float("nan"), "y": 1.5}, np.array([1.0, np.nan])],
            "fine": np.float32(0.25),
            "n": np.int64(3),
        }
    )
    assert got == {
        "py_nan": None,
        "py_inf": None,
        "np64": None,
        "np32": None,
        "nested": [{"x": None, "y": 1.5}, [1.0, None]],
        "fine": 0.25,
        "n": 3,
    }
    json.dumps(got, allow_nan=False)  # strict JSON, as PostgreSQL's JSON type requires
