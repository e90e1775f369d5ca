"""The calibrated softmax against scipy's (an independent implementation): the same bits."""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from cellfoundry.stats.calibration import apply_temperature, softmax_rows


def test_softmax_rows_is_scipys_softmax_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    for shape, scale in [((1, 10), 1.0), ((1, 2), 50.0), ((37, 8), 5.0), ((500, 31), 20.0)]:
        z = rng.standard_normal(shape) * scale
        z[0, 0] = 700.0  # a shift is needed: exp(700) alone overflows float64 sums
        assert np.array_equal(softmax_rows(z), softmax(z, axis=1))
        for t in (0.3, 1.0, 2.5):
            want = softmax(z / t, axis=1).astype(np.float32)
            got = apply_temperature(z, t)
            assert got.dtype == np.float32 and np.array_equal(got, want)
            assert np.allclose(got.sum(axis=1), 1.0, atol=1e-6)
