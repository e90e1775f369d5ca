"""Strict, safe loading of a published scGPT checkpoint folder (args.json, vocab.json, best_model.pt).

Rules (spec §2.1-2.5, §2.9): the weights are read with ``torch.load(weights_only=True)``; any of
the three attention key layouts is renamed to the flash ``Wqkv`` layout; every key our network
needs must be present with the right shape; ``flag_encoder``, ``mvc_decoder`` and ``cls_decoder``
may be present or absent; auxiliary heads that never touch the embedding
(``decoder.zero_logit``, ``mvc_decoder.W_zero_logit``, ``grad_reverse_discriminator``) are ignored
and listed; anything else is an error naming the keys.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from cellfoundry.artifacts import sha256_file
from cellfoundry.models.foundation import CheckpointError, LoadReport
from cellfoundry.models.scgpt.config import ScGPTConfig
from cellfoundry.models.scgpt.network import (
    ScGPTNetwork,
    detect_layout,
    to_canonical_keys,
    to_layout,
)
from cellfoundry.models.scgpt.vocab import ScGPTVocab

ARGS_FILE, VOCAB_FILE, WEIGHTS_FILE = "args.json", "vocab.json", "best_model.pt"
CHECKPOINT_FILES = (ARGS_FILE, VOCAB_FILE, WEIGHTS_FILE)

# Official sha256 of published scGPT files, by release. The spec lists none for scGPT (the files
# are distributed through Google Drive without published hashes), so nothing can match yet.
KNOWN_RELEASES: dict[str, dict[str, str]] = {}

OPTIONAL_PREFIXES = ("flag_encoder.", "mvc_decoder.", "cls_decoder.")
IGNORED_PREFIXES = (
    "decoder.zero_logit.",
    "mvc_decoder.W_zero_logit.",
    "grad_reverse_discriminator.",
)
UNSUPPORTED_PREFIXES = {
    "batch_encoder.": "batch-label conditioning (use_batch_labels)",
    "dsbn.": "domain-specific batch norm (DSBN)",
    "bn.": "batch norm over tokens",
    "value_encoder.embedding.": "the 'category' value encoder",
}

WHOLE_HUMAN = {"embsize": 512, "nheads": 8, "d_hid": 512, "nlayers": 12}


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A plain ``{name: tensor}`` state dict from ``best_model.pt`` (never unpickles code)."""
    p = Path(path)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(
            f"cannot read {p} as a tensors-only torch file: {str(e).splitlines()[0]}",
            "best_model.pt must be the published torch.save(state_dict); other pickles are refused",
        ) from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{p} holds a {type(obj).__name__}, not a state dict",
            "use the published best_model.pt (a plain state dict)",
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(
            f"{p} has entries that are not tensors: {', '.join(bad[:5])}",
            "use the published best_model.pt (a plain state dict of tensors)",
        )
    return dict(obj)


def _n_cls(state: Mapping[str, Tensor]) -> int | None:
    w = state.get("cls_decoder.out_layer.weight")
    return int(w.shape[0]) if w is not None and w.ndim == 2 else None


def check_state_dict(
    state: Mapping[str, Tensor], cfg: ScGPTConfig, vocab: ScGPTVocab, report: LoadReport
) -> tuple[dict[str, Tensor], ScGPTNetwork]:
    """Compare a state dict with the network ``cfg``/``vocab`` define; fill ``report``.

    Returns the kept tensors under canonical (flash-layout) names and a meta-device network
    with the matching optional heads.
    """
    layout = detect_layout(list(state))
    if layout == "mixed":
        raise CheckpointError(
            "best_model.pt mixes attention key layouts (Wqkv / in_proj_* / _impl.Wqkv)",
            "use the checkpoint file as published; do not merge state dicts",
        )
    report.messages.append(f"attention key layout: {layout}")
    canon = to_canonical_keys(state)
    unsupported = sorted(
        {why for k in canon for p, why in UNSUPPORTED_PREFIXES.items() if k.startswith(p)}
    )
    if unsupported:
        raise CheckpointError(
            f"this checkpoint uses {', '.join(unsupported)}, which zero-shot embedding does not support",
            "use a pretrained scGPT checkpoint (whole-human, CP or an organ model)",
        )
    ignored = sorted(k for k in canon if k.startswith(IGNORED_PREFIXES))
    kept = {k: v for k, v in canon.items() if k not in set(ignored)}
    has = {p: any(k.startswith(p) for k in kept) for p in OPTIONAL_PREFIXES}
    with torch.device("meta"):
        net = ScGPTNetwork(
            cfg,
            len(vocab),
            vocab[cfg.pad_token],
            flag_encoder=has["flag_encoder."],
            mvc_decoder=has["mvc_decoder."],
            n_cls=(_n_cls(kept) or 1) if has["cls_decoder."] else None,
        )
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    report.missing_keys = sorted(k for k in want if k not in kept)
    report.unexpected_keys = sorted(k for k in kept if k not in want)
    report.shape_mismatches = [
        f"{k}: file {list(kept[k].shape)} vs expected {list(s)}"
        for k, s in want.items()
        if k in kept and tuple(kept[k].shape) != s
    ]
    report.optional_keys_absent = [
        p.rstrip(".") + ".*" for p, present in has.items() if not present
    ]
    report.ignored_keys = ignored
    if has["cls_decoder."]:
        report.messages.append(f"cls_decoder present ({_n_cls(kept)} classes: a fine-tuned model)")
    return kept, net


def identify(cfg: ScGPTConfig, vocab: ScGPTVocab, files: dict[str, str], report: LoadReport) -> str:
    """Name the variant and match file hashes against known releases; notes go to ``report``."""
    arch = {k: getattr(cfg, k) for k in WHOLE_HUMAN}
    whole = arch == WHOLE_HUMAN and vocab.is_whole_human()
    if whole:
        variant = "whole-human"
        report.messages.append(
            "architecture and vocab.json equal scGPT whole-human (512-d, 12 layers, 8 heads, 60,697 tokens); "
            "scGPT_CP and the organ models share this architecture"
        )
    else:
        variant = f"custom-{cfg.nlayers}L-{cfg.embsize}d-{len(vocab)}v"
    for name, hashes in KNOWN_RELEASES.items():
        if files and all(files.get(f) == h for f, h in hashes.items() if f in files):
            report.known_release = name
            break
    if files and report.known_release is None:
        report.messages.append(
            "the file hashes match no known release (no official sha256 is published for scGPT "
            "checkpoints); the weights cannot be verified as an official release"
        )
    return variant


def load_checkpoint(
    folder: str | Path, *, verify: bool = True
) -> tuple[ScGPTConfig, ScGPTVocab, ScGPTNetwork, LoadReport]:
    """Strictly load a published checkpoint folder into our network (CPU, eval mode)."""
    root = Path(folder)
    if not root.is_dir():
        raise CheckpointError(f"{root} is not a folder", "pass the scGPT checkpoint folder")
    absent = [f for f in CHECKPOINT_FILES if not (root / f).is_file()]
    if absent:
        raise CheckpointError(
            f"{root} lacks {', '.join(absent)} (an scGPT checkpoint folder holds {', '.join(CHECKPOINT_FILES)})",
            "download the complete model folder (args.json, vocab.json, best_model.pt)",
        )
    cfg = ScGPTConfig.read(root / ARGS_FILE)
    vocab = ScGPTVocab.read(root / VOCAB_FILE)
    if cfg.pad_token not in vocab:
        raise CheckpointError(
            f"pad token '{cfg.pad_token}' is not in vocab.json", "use the published vocab.json"
        )
    report = LoadReport(family="scgpt", variant=None)
    files = {f: sha256_file(root / f) for f in CHECKPOINT_FILES} if verify else {}
    report.files = files
    state = read_state_dict(root / WEIGHTS_FILE)
    kept, meta_net = check_state_dict(state, cfg, vocab, report)
    report.variant = identify(cfg, vocab, files, report)
    report.raise_if_bad(root)
    net = ScGPTNetwork(
        cfg,
        len(vocab),
        vocab[cfg.pad_token],
        flag_encoder=hasattr(meta_net, "flag_encoder"),
        mvc_decoder=hasattr(meta_net, "mvc_decoder"),
        n_cls=_n_cls(kept) if hasattr(meta_net, "cls_decoder") else None,
    )
    net.load_state_dict(kept, strict=True)
    net.eval()
    return cfg, vocab, net, report


def save_checkpoint(
    folder: str | Path,
    network: ScGPTNetwork,
    cfg: ScGPTConfig,
    vocab: ScGPTVocab,
    *,
    layout: str = "Wqkv",
) -> Path:
    """Write ``args.json``, ``vocab.json`` and ``best_model.pt`` in the published format."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    (root / ARGS_FILE).write_text(json.dumps(cfg.to_dict(), indent=2))
    vocab.write(root / VOCAB_FILE)
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    torch.save(to_layout(state, layout), root / WEIGHTS_FILE)
    return root
