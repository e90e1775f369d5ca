"""MarkerCounts: the counts behind marker_overlap add up over parts of a dataset."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cellfoundry.models.baselines.explain import GroupStats, MarkerCounts, marker_overlap


def _data(seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, g, k = 600, 80, 4
    y = rng.integers(0, k, n)
    rate = rng.gamma(1.0, 1.0, (k, g))
    rate[np.arange(k), np.arange(k) * 5] += 6.0  # each type has its own up genes
    x = np.log1p(rng.poisson(rate[y])).astype(np.float32)
    reference = np.stack([np.argsort(-(rate[c] - rate.mean(axis=0)))[:40] for c in range(k)])
    return sp.csr_matrix(x), y, reference


def test_parts_add_up_to_the_whole(tmp_path) -> None:
    x, y, reference = _data()
    classes, names = ["a", "b", "c", "d"], [f"g{i}" for i in range(x.shape[1])]
    present = np.ones(x.shape[1], dtype=bool)
    present[-3:] = False

    whole = GroupStats(x.shape[1], len(classes))
    whole.add(x, y)
    want = marker_overlap(whole, reference, classes, names, present, n=20)

    parts = []
    for rows in np.array_split(np.arange(x.shape[0]), 3):
        stats = GroupStats(x.shape[1], len(classes))
        stats.add(x[rows], y[rows])
        part = MarkerCounts(stats, reference, classes, names, present)
        np.savez(tmp_path / "p.npz", **part.to_arrays())  # as a shard stores it
        with np.load(tmp_path / "p.npz", allow_pickle=False) as arrays:
            parts.append(MarkerCounts.from_arrays(arrays))
    combined = MarkerCounts.combine(parts)
    got = marker_overlap(combined.stats, reference, classes, names, present, n=20)

    np.testing.assert_array_equal(combined.stats.n, whole.n)
    assert got["mean_overlap"] == pytest.approx(want["mean_overlap"])
    assert want["mean_overlap"] > 2 * want["expected_by_chance"]  # informative figures
    for t, row in want["by_predicted_type"].items():
        assert got["by_predicted_type"][t]["overlap"] == pytest.approx(row["overlap"])
        assert got["by_predicted_type"][t]["query_markers"] == row["query_markers"]

    other = MarkerCounts(GroupStats(x.shape[1], 4), reference, classes, names, ~present)
    with pytest.raises(ValueError, match="do not add up"):
        MarkerCounts.combine([parts[0], other])
