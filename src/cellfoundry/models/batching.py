"""Token-budget batching of variable-length cells for the transformer foundation models.

Cells are sorted longest first (stable) and cut into consecutive groups whose padded size
(cells x longest cell of the group) stays within ``max_tokens`` and whose cell count stays within
``batch_size``. Sorting keeps padding small and the budget keeps each forward pass's memory
about the same whatever the lengths: many short cells or a few long ones per pass. Callers
write each group's results back at its indices, so the output keeps the input order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np

from cellfoundry.errors import ModelError

PASS_OVERHEAD = 1024.0  # a forward pass's fixed cost, in tokens (calls, small GEMMs' efficiency)


def check_sizes(batch_size: int, max_tokens: int) -> None:
    """Refuse non-positive batch sizes and token budgets with the fix."""
    if int(batch_size) < 1 or int(max_tokens) < 1:
        raise ModelError(
            f"batch_size and max_tokens must be ≥ 1 (got {batch_size} and {max_tokens})",
            "pass a positive batch size and token budget",
        )


def token_budget_batches(
    lengths: np.ndarray,
    batch_size: int,
    max_tokens: int,
    *,
    skip_empty: bool = False,
    attention_width: float | None = None,
) -> Iterator[np.ndarray]:
    """Indices into ``lengths``, longest first, in groups of ≤ ``batch_size`` cells whose padded
    size (cells x the group's longest) is ≤ ``max_tokens``. A cell longer than the budget forms
    a group of its own. ``skip_empty`` leaves out length-0 cells (nothing to run).

    Without ``attention_width`` the groups are greedy (each as large as the caps allow). With it
    the sorted cells are cut where padding costs more than another pass (``least_padded_cuts``):
    a pass of ``n`` cells padded to ``w`` costs ``n·w·(1 + w / attention_width)`` (per-token
    layers plus attention, which grows with the width) plus ``PASS_OVERHEAD`` tokens."""
    check_sizes(batch_size, max_tokens)
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    if skip_empty:
        order = order[lengths[order] > 0]
    if attention_width is not None:
        cuts = least_padded_cuts(lengths[order], batch_size, max_tokens, attention_width)
        for a, b in itertools.pairwise(cuts):
            yield order[a:b]
        return
    i = 0
    while i < len(order):
        width = max(int(lengths[order[i]]), 1)
        n = max(1, min(int(batch_size), int(max_tokens) // width))
        yield order[i : i + n]
        i += n


def least_padded_cuts(
    widths: np.ndarray, batch_size: int, max_tokens: int, attention_width: float
) -> list[int]:
    """Group boundaries (0 … n) over ``widths`` sorted longest first that minimise the total
    cost of the passes (see ``token_budget_batches``), each pass within ``batch_size`` cells and
    ``max_tokens`` padded tokens (a cell over the budget alone). Exact dynamic programme over
    the sorted order: O(n · batch_size)."""
    w = np.asarray(widths, dtype=np.float64)
    n = len(w)
    per_cell = w * (1.0 + w / float(attention_width))  # cost of one cell padded to w[i]
    best = np.zeros(n + 1)
    start = np.zeros(n + 1, dtype=np.int64)
    for j in range(1, n + 1):  # the last pass holds cells i .. j-1, padded to w[i]
        lo = max(0, j - int(batch_size))
        i = np.arange(lo, j)
        size = j - i
        ok = (size * np.maximum(w[i], 1.0) <= max_tokens) | (size == 1)
        cost = np.where(ok, best[i] + size * per_cell[i], np.inf)
        k = int(np.argmin(cost))
        best[j] = cost[k] + PASS_OVERHEAD
        start[j] = lo + k
    cuts = [n]
    while cuts[-1] > 0:
        cuts.append(int(start[cuts[-1]]))
    return cuts[::-1]
