"""Where and in which precision a foundation model runs: the CPU in float32 by default, a CUDA GPU
with bf16/fp16 autocast when one is present. Nothing requires a GPU.

``resolve_accel("auto", "auto")`` picks CUDA when ``torch.cuda.is_available()`` (bf16 where the
GPU supports it, else fp16) and the CPU in float32 otherwise, so results on a CPU machine are
bit-for-bit those of the float32 path. ``on_device`` moves a network to the chosen device for
the duration of one embedding run and back afterwards, so other callers (fine-tuning hooks,
tokenisers producing CPU tensors) keep finding it where it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cellfoundry.errors import ModelError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Accel:
    """A resolved device and autocast dtype (``None``: plain float32)."""

    device: Any  # torch.device
    dtype: Any = None  # torch.float16 | torch.bfloat16 | None

    @property
    def precision(self) -> str:
        import torch

        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def describe(self) -> str:
        return f"{self.device} {self.precision}"

    def autocast(self) -> Any:
        """The autocast context of this precision (a no-op for float32)."""
        import torch

        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


def resolve_accel(device: str | None = "auto", precision: str | None = "auto") -> Accel:
    """Turn user choices into an ``Accel``; refuse clearly what this machine cannot do."""
    import torch

    dev_name = (device or "auto").lower()
    prec = (precision or "auto").lower()
    if prec not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}", f"use one of {', '.join(PRECISIONS)}")
    if dev_name == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif dev_name == "cpu":
        dev = torch.device("cpu")
    elif dev_name == "cuda" or dev_name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ModelError(
                f"device {device!r} was requested but torch sees no CUDA GPU on this machine",
                "use --device auto or cpu (the CPU path needs no GPU), or run where a CUDA GPU "
                "and a CUDA build of torch are installed",
            )
        dev = torch.device(dev_name)
    else:
        raise ModelError(f"unknown device {device!r}", "use auto, cpu, cuda or cuda:N")
    if prec == "auto":
        if dev.type != "cuda":
            return Accel(dev, None)
        return Accel(dev, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    if prec == "fp32":
        return Accel(dev, None)
    if prec == "fp16" and dev.type == "cpu":
        raise ModelError(
            "fp16 is a GPU precision; the CPU runs fp32 (exact) or bf16",
            "use --precision fp32 or bf16 on the CPU, or fp16 with --device cuda",
        )
    return Accel(dev, torch.bfloat16 if prec == "bf16" else torch.float16)


@contextlib.contextmanager
def on_device(network: Any, accel: Accel) -> Iterator[None]:
    """Run with ``network`` on ``accel.device``; put it back where it was afterwards."""
    try:
        home = next(network.parameters()).device
    except StopIteration:  # no parameters: nothing to move
        yield
        return
    if home == accel.device:
        yield
        return
    network.to(accel.device)
    try:
        yield
    finally:
        network.to(home)
