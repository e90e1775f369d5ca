"""Token-budget batching shared by the transformer foundation models."""

from __future__ import annotations

import numpy as np
import pytest

from cellfoundry.errors import ModelError
from cellfoundry.models.batching import token_budget_batches


def test_batches_cover_every_cell_once_longest_first_within_the_budget() -> None:
    lengths = np.random.default_rng(0).integers(1, 300, 500)
    batches = list(token_budget_batches(lengths, batch_size=16, max_tokens=1000))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(500))  # each cell exactly once
    assert np.all(np.diff(lengths[flat]) <= 0)  # longest first
    for b in batches:
        assert len(b) <= 16 and len(b) * lengths[b].max() <= 1000
    # greedy: a batch stops only at the cell cap or when the next cell would break the budget
    for b in batches[:-1]:
        assert len(b) == 16 or (len(b) + 1) * lengths[b].max() > 1000
    # short cells share batches, long ones do not
    assert len(batches[0]) == 3 and max(len(b) for b in batches) == 16


def test_ties_keep_input_order_oversize_cells_go_alone_and_empty_ones_can_be_skipped() -> None:
    lengths = np.array([5, 0, 50, 5, 0, 5])
    assert [b.tolist() for b in token_budget_batches(lengths, 10, 20)] == [[2], [0, 3, 5, 1], [4]]
    assert [b.tolist() for b in token_budget_batches(lengths, 2, 20, skip_empty=True)] == [
        [2],
        [0, 3],
        [5],
    ]
    assert list(token_budget_batches(np.array([], dtype=np.int64), 4, 10)) == []


@pytest.mark.parametrize(("batch_size", "max_tokens"), [(0, 10), (4, 0), (-1, -1)])
def test_bad_sizes_are_refused_with_the_fix(batch_size: int, max_tokens: int) -> None:
    with pytest.raises(ModelError, match="must be ≥ 1") as e:
        list(token_budget_batches(np.array([3, 4]), batch_size, max_tokens))
    assert "positive" in (e.value.hint or "")


def test_least_padded_batches_cut_where_padding_costs_more_than_a_pass() -> None:
    # one long cell and many short ones: greedy pads the short ones to the long one
    lengths = np.array([10] * 20 + [1000])
    assert [len(b) for b in token_budget_batches(lengths, 64, 100_000)] == [21]
    cut = list(token_budget_batches(lengths, 64, 100_000, attention_width=1024))
    assert [b.tolist() for b in cut] == [[20], list(range(20))]
    # similar lengths still share a pass up to the caps
    even = np.full(40, 100)
    sizes = [len(b) for b in token_budget_batches(even, 16, 10_000, attention_width=1024)]
    assert sorted(sizes) == [8, 16, 16]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_least_padded_batches_keep_the_caps_and_cost_no_more_than_greedy(seed: int) -> None:
    from cellfoundry.models.batching import PASS_OVERHEAD

    rng = np.random.default_rng(seed)
    lengths = np.concatenate([rng.integers(0, 2048, 300), [0, 0, 3000]])

    def cost(batches: list[np.ndarray]) -> float:
        w = [float(lengths[b].max()) for b in batches]
        return sum(
            len(b) * x * (1 + x / 1024) + PASS_OVERHEAD for b, x in zip(batches, w, strict=True)
        )

    greedy = list(token_budget_batches(lengths, 32, 8192, skip_empty=True))
    least = list(token_budget_batches(lengths, 32, 8192, skip_empty=True, attention_width=1024))
    flat = np.concatenate(least)
    assert sorted(flat.tolist()) == sorted(np.flatnonzero(lengths).tolist())  # each cell once
    assert np.all(np.diff(lengths[flat]) <= 0)  # longest first
    assert all(len(b) <= 32 and (len(b) * lengths[b].max() <= 8192 or len(b) == 1) for b in least)
    assert cost(least) < cost(greedy)  # some padding is worth a pass of its own
