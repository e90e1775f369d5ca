"""LoRA through ``peft`` on a family's network, with target validation and parameter accounting."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cellfoundry.errors import ModelError

log = logging.getLogger(__name__)

SUPPORTED_TYPES = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.MultiheadAttention)


@dataclass
class ParameterCount:
    """Trainable and total parameters of a module (shared tensors counted once)."""

    trainable: int
    total: int

    @property
    def share(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"share": self.share}


def count_parameters(*modules: nn.Module) -> ParameterCount:
    """Trainable / total parameters over ``modules`` (each tensor once)."""
    seen: set[int] = set()
    trainable = total = 0
    for m in modules:
        for p in m.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel()
            if p.requires_grad:
                trainable += p.numel()
    return ParameterCount(trainable, total)


@dataclass
class TargetMatch:
    """Which module names each requested LoRA target matched."""

    targets: list[str]
    matches: dict[str, list[str]] = field(default_factory=dict)
    unreachable: list[str] = field(default_factory=list)

    @property
    def modules(self) -> list[str]:
        return sorted({m for names in self.matches.values() for m in names})


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def match_targets(network: nn.Module, targets: list[str], *, strict: bool = True) -> TargetMatch:
    """Match LoRA targets (module names or name suffixes, as peft reads them) against ``network``.

    Refuses targets that match nothing (``strict``; otherwise only when no target matches), match an unsupported module type, or would be silently
    ignored (``nn.MultiheadAttention.out_proj`` alone: PyTorch's fused attention path reads the
    weight directly, so a LoRA wrapper there never runs).
    """
    if not targets:
        raise ModelError(
            "no LoRA targets given", "pass --lora-targets with module names, e.g. query,value"
        )
    named = dict(network.named_modules())
    parents = {n: named[n.rsplit(".", 1)[0]] if "." in n else network for n in named if n}
    result = TargetMatch(list(targets))
    unmatched = []
    for t in targets:
        hits = [n for n in named if n and _matches(n, t)]
        if not hits:
            unmatched.append(t)
            continue
        for n in hits:
            mod = named[n]
            if not isinstance(mod, SUPPORTED_TYPES):
                raise ModelError(
                    f"LoRA target '{t}' matched module '{n}' of type {type(mod).__name__}, which LoRA cannot wrap",
                    "target nn.Linear / nn.Embedding / nn.MultiheadAttention modules "
                    f"(linear layers here: {', '.join(_linear_suffixes(network)[:12])})",
                )
            parent = parents[n]
            if isinstance(parent, nn.MultiheadAttention) and not any(
                _matches(n.rsplit(".", 1)[0], other) for other in targets
            ):
                raise ModelError(
                    f"LoRA target '{t}' is '{n}', the out_proj of an nn.MultiheadAttention: PyTorch's "
                    "functional attention path reads its weight directly, so LoRA there would be silently ignored",
                    f"target the attention module itself ('{n.rsplit('.', 1)[0].rsplit('.', 1)[-1]}') or other linear layers",
                )
        result.matches[t] = hits
    if unmatched and (strict or not result.matches):
        raise ModelError(
            f"LoRA target(s) {unmatched} match no module of the network",
            f"choose among the linear layers: {', '.join(_linear_suffixes(network)[:20])}",
        )
    result.targets = [t for t in targets if t in result.matches]
    return result


def _linear_suffixes(network: nn.Module) -> list[str]:
    out: list[str] = []
    for n, m in network.named_modules():
        if isinstance(m, nn.Linear | nn.MultiheadAttention) and n:
            s = n.rsplit(".", 1)[-1] if not n.rsplit(".", 1)[-1].isdigit() else n
            if s not in out:
                out.append(s)
    return out


def lora_config(
    targets: list[str],
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    base_name: str | None = None,
) -> Any:
    """peft ``LoraConfig`` for a generic network."""
    from peft import LoraConfig

    if r < 1:
        raise ModelError(f"lora_r must be >= 1 (got {r})", "use e.g. --lora-r 8")
    # base_model_name_or_path stays None: peft would otherwise try to reach the Hugging Face hub on save;
    # the base model is recorded in the cellfoundry manifest instead (``base_name`` is kept for callers).
    del base_name
    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none"
    )


def unreachable_adapters(
    peft_model: Any, embed: Callable[[Any], torch.Tensor], batch: Any
) -> list[str]:
    """Adapted modules whose LoRA update cannot influence the cell embedding of ``batch`` (e.g.
    layers after the embedding layer): their B matrix gets no gradient from a random probe."""
    network = peft_model.base_model.model
    was = network.training
    network.eval()
    try:
        with torch.enable_grad():
            emb = embed(batch)
            g = torch.Generator().manual_seed(0)
            probe = torch.randn(emb.shape, generator=g, dtype=emb.dtype)
            if emb.requires_grad:
                (emb * probe).sum().backward()
        dead = []
        for name, mod in network.named_modules():
            lb = getattr(mod, "lora_B", None)
            if isinstance(lb, nn.ModuleDict) and "default" in lb:
                grad: Any = getattr(lb["default"].weight, "grad", None)
                if grad is None or not bool(grad.abs().sum() > 0):
                    dead.append(name)
    finally:
        network.train(was)
        peft_model.zero_grad(set_to_none=True)
    return dead


def apply_lora(
    network: nn.Module,
    targets: list[str],
    *,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    base_name: str | None = None,
    strict: bool = True,
    probe: tuple[Callable[[Any], torch.Tensor], Any] | None = None,
) -> tuple[Any, TargetMatch]:
    """Wrap ``network`` with LoRA adapters (in place) and freeze every base weight.

    Returns the ``peft.PeftModel`` (whose ``save_pretrained`` writes PEFT's standard files) and the
    target matches. With ``strict`` every requested target must match a module (user targets);
    otherwise unmatched ones are dropped (family defaults written for the deepest variant).
    With ``probe=(embed_fn, batch)`` modules that cannot influence the embedding are refused
    (``strict``) or left out, so that every adapter trains.
    """
    from peft import get_peft_model

    match = match_targets(network, targets, strict=strict)
    peft_model = get_peft_model(network, lora_config(match.targets, r, alpha, dropout, base_name))
    if probe is not None:
        dead = unreachable_adapters(peft_model, probe[0], probe[1])
        if dead and strict:
            peft_model.unload()
            raise ModelError(
                f"LoRA target module(s) {dead[:8]} do not influence the cell embedding (e.g. layers after "
                "the embedding layer), so their adapters would never train",
                "leave those modules out of --lora-targets",
            )
        if dead:
            log.info(
                "LoRA: %d target module(s) do not influence the embedding and are left out: %s",
                len(dead),
                dead[:8],
            )
            match.unreachable = dead
            keep = [m for m in match.modules if m not in dead]
            if not keep:
                peft_model.unload()
                raise ModelError(
                    "no LoRA target influences the cell embedding", "choose other --lora-targets"
                )
            network = peft_model.unload()
            peft_model = get_peft_model(network, lora_config(keep, r, alpha, dropout, base_name))
    lora_params = [n for n, p in peft_model.named_parameters() if "lora_" in n]
    if not lora_params:
        raise ModelError("peft created no LoRA parameters", f"check the LoRA targets {targets}")
    for n, p in peft_model.named_parameters():
        p.requires_grad = "lora_" in n
    return peft_model, match


def load_lora(network: nn.Module, folder: str | Path) -> Any:
    """Attach the PEFT adapter stored in ``folder`` to ``network`` (frozen, inference)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(network, str(folder), is_trainable=False)


def lora_parameter_names(module: nn.Module) -> list[str]:
    """Names of the LoRA parameters inside ``module``."""
    return [n for n, _ in module.named_parameters() if "lora_" in n]
