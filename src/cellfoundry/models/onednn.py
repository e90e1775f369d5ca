"""Inference GEMMs through oneDNN on weights packed once into its blocked layout (float32 CPU).

``F.linear`` on the CPU calls the BLAS and adds the bias in a separate pass over the output;
oneDNN's linear applies the bias, a ReLU or a residual add inside the GEMM, and on weights
reordered once (before a batch loop, not per call) it runs these projections about twice as
fast on this project's machines. Values equal ``F.linear``'s up to float32 rounding (another
summation order). Used by the Geneformer and scGPT embedding paths, never while training.
"""

from __future__ import annotations

from typing import Any

MAX_ROWS_HINT = 1 << 20


def can_pack(weight: Any) -> bool:
    """Whether oneDNN GEMMs can run on this weight in full float32: a float32 CPU tensor, a
    oneDNN build, and no reduced-precision matmul setting (bf16/tf32) that oneDNN would honour."""
    import torch

    mkldnn = torch.backends.mkldnn
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and torch.get_float32_matmul_precision() == "highest"
        and getattr(getattr(mkldnn, "matmul", None), "fp32_precision", "none") in ("none", "ieee")
    )


class PackedLinear:
    """``F.linear(x, weight, bias)`` on a copy of ``weight`` in oneDNN's layout for GEMMs of
    about ``rows`` rows (a hint, capped at ``MAX_ROWS_HINT``; any row count works). Check
    ``can_pack`` first."""

    __slots__ = ("bias", "weight")

    def __init__(self, weight: Any, bias: Any, rows: int) -> None:
        import torch

        rows = max(1, min(int(rows), MAX_ROWS_HINT))  # oneDNN refuses hints near 2**31 / width
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows)
        self.bias = None if bias is None else bias.detach()

    def __call__(self, x: Any, *, relu: bool = False, add: Any = None) -> Any:
        """``x @ W.T + b``, then ReLU (``relu``) or plus ``add`` (same shape as the output)."""
        import torch

        if add is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, add, self.weight, self.bias, "add")
        act = "relu" if relu else "none"
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, act, [], "")
