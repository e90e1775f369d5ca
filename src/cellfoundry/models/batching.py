"""Token-budget batching of variable-length cells for the transformer foundation models.

Cells are sorted longest first (stable) and cut into consecutive groups whose padded size
(cells x longest cell of the group) stays within ``max_tokens`` and whose cell count stays within
``batch_size``. Sorting keeps padding small and the budget keeps each forward pass's memory
about the same whatever the lengths: many short cells or a few long ones per pass. Callers
write each group's results back at its indices, so the output keeps the input order.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from cellfoundry.errors import ModelError


def check_sizes(batch_size: int, max_tokens: int) -> None:
    """Refuse non-positive batch sizes and token budgets with the fix."""
    if int(batch_size) < 1 or int(max_tokens) < 1:
        raise ModelError(
            f"batch_size and max_tokens must be ≥ 1 (got {batch_size} and {max_tokens})",
            "pass a positive batch size and token budget",
        )


def token_budget_batches(
    lengths: np.ndarray, batch_size: int, max_tokens: int, *, skip_empty: bool = False
) -> Iterator[np.ndarray]:
    """Indices into ``lengths``, longest first, in groups of ≤ ``batch_size`` cells whose padded
    size (cells x the group's longest) is ≤ ``max_tokens``. A cell longer than the budget forms
    a group of its own. ``skip_empty`` leaves out length-0 cells (nothing to run)."""
    check_sizes(batch_size, max_tokens)
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    if skip_empty:
        order = order[lengths[order] > 0]
    i = 0
    while i < len(order):
        width = max(int(lengths[order[i]]), 1)
        n = max(1, min(int(batch_size), int(max_tokens) // width))
        yield order[i : i + n]
        i += n
