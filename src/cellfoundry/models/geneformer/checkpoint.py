"""Reading Geneformer weights strictly (spec §1.3) and identifying the release they come from."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cellfoundry.artifacts import sha256_file
from cellfoundry.models.foundation import CheckpointError, LoadReport
from cellfoundry.models.geneformer.config import (
    FINETUNED_RELEASES,
    KNOWN_DICTIONARY_HASHES,
    VARIANTS,
    GeneformerVariant,
)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_LAYER_KEYS = (
    "attention.self.query.weight",
    "attention.self.query.bias",
    "attention.self.key.weight",
    "attention.self.key.bias",
    "attention.self.value.weight",
    "attention.self.value.bias",
    "attention.output.dense.weight",
    "attention.output.dense.bias",
    "attention.output.LayerNorm.weight",
    "attention.output.LayerNorm.bias",
    "intermediate.dense.weight",
    "intermediate.dense.bias",
    "output.dense.weight",
    "output.dense.bias",
    "output.LayerNorm.weight",
    "output.LayerNorm.bias",
)


def weights_file(folder: Path) -> Path | None:
    """The weights to read: ``model.safetensors`` first, then ``pytorch_model.bin``."""
    for name in WEIGHT_FILES:
        p = folder / name
        if p.is_file():
            return p
    return None


def read_state_dict(path: Path) -> dict[str, Any]:
    """Tensors of a weights file, without running pickled code."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(
                f"cannot read {path}: {e}", "restore the original model.safetensors"
            ) from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError / RuntimeError for foreign content
        raise CheckpointError(
            f"refused to load {path}: it is not a plain tensor state dict ({type(e).__name__}: {str(e)[:200]})",
            "use the official pytorch_model.bin or model.safetensors",
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path} does not hold a tensor state dict", "use the official weights file"
        )
    return dict(obj)


def expected_shapes(
    cfg: dict[str, Any],
) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """(required, optional) key -> shape for this config's architecture."""
    V, H, P = cfg["vocab_size"], cfg["hidden_size"], cfg["max_position_embeddings"]
    inter, T = cfg["intermediate_size"], cfg.get("type_vocab_size", 2)
    req: dict[str, tuple[int, ...]] = {
        "bert.embeddings.word_embeddings.weight": (V, H),
        "bert.embeddings.position_embeddings.weight": (P, H),
        "bert.embeddings.token_type_embeddings.weight": (T, H),
        "bert.embeddings.LayerNorm.weight": (H,),
        "bert.embeddings.LayerNorm.bias": (H,),
    }
    for i in range(cfg["num_hidden_layers"]):
        for k in _LAYER_KEYS:
            if k.startswith("intermediate.dense"):
                shape: tuple[int, ...] = (inter, H) if k.endswith("weight") else (inter,)
            elif k.startswith("output.dense"):
                shape = (H, inter) if k.endswith("weight") else (H,)
            elif k.endswith("weight") and "LayerNorm" not in k:
                shape = (H, H)
            else:
                shape = (H,)
            req[f"bert.encoder.layer.{i}.{k}"] = shape
    opt: dict[str, tuple[int, ...]] = {
        "bert.pooler.dense.weight": (H, H),
        "bert.pooler.dense.bias": (H,),
    }
    arch = cfg["architectures"][0]
    if arch == "BertForMaskedLM":
        opt.update(
            {
                "cls.predictions.bias": (V,),
                "cls.predictions.transform.dense.weight": (H, H),
                "cls.predictions.transform.dense.bias": (H,),
                "cls.predictions.transform.LayerNorm.weight": (H,),
                "cls.predictions.transform.LayerNorm.bias": (H,),
                "cls.predictions.decoder.weight": (V, H),
                "cls.predictions.decoder.bias": (V,),
            }
        )
    elif arch == "BertForSequenceClassification":
        n = num_labels(cfg)
        opt.update({"classifier.weight": (n, H), "classifier.bias": (n,)})
    return req, opt


def num_labels(cfg: dict[str, Any]) -> int:
    labels = cfg.get("id2label")
    if isinstance(labels, dict) and labels:
        return len(labels)
    return int(cfg.get("num_labels", 2))


_IGNORED = re.compile(r"^(bert\.)?embeddings\.(position_ids|token_type_ids)$")


def normalise_keys(sd: dict[str, Any], report: LoadReport) -> dict[str, Any]:
    """Legacy names -> current HF names; drop the legacy ``position_ids`` buffer (listed as ignored)."""
    out: dict[str, Any] = {}
    renamed = 0
    bare = not any(k.startswith("bert.") for k in sd) and any(
        k.startswith("embeddings.") for k in sd
    )
    for k, v in sd.items():
        if _IGNORED.match(k):
            report.ignored_keys.append(k)
            continue
        nk = k
        if bare and (k.startswith(("embeddings.", "encoder.", "pooler."))):
            nk = "bert." + k
        if nk.endswith(".gamma") or nk.endswith(".beta"):
            nk = nk[: nk.rfind(".")] + (".weight" if nk.endswith(".gamma") else ".bias")
            renamed += 1
        out[nk] = v
    if bare:
        report.messages.append("state dict had no 'bert.' prefix (a bare BertModel); prefix added")
    if renamed:
        report.messages.append(f"{renamed} legacy LayerNorm gamma/beta names mapped to weight/bias")
    return out


def check_state_dict(sd: dict[str, Any], cfg: dict[str, Any], report: LoadReport) -> dict[str, Any]:
    """Strict key/shape check into ``report``; returns the state dict with tied keys filled in."""
    import torch

    sd = normalise_keys(sd, report)
    req, opt = expected_shapes(cfg)
    for k in req:
        if k not in sd:
            report.missing_keys.append(k)
    for k, v in sd.items():
        want = req.get(k, opt.get(k))
        if want is None:
            report.unexpected_keys.append(k)
        elif tuple(v.shape) != want:
            report.shape_mismatches.append(f"{k}: file {list(v.shape)} vs config {list(want)}")
        elif not torch.is_floating_point(v):
            report.shape_mismatches.append(f"{k}: dtype {v.dtype} is not floating point")
    report.optional_keys_absent = [k for k in opt if k not in sd]
    if not report.ok:
        return sd
    out = {k: (v.float() if v.dtype != torch.float32 else v) for k, v in sd.items()}
    converted = [k for k, v in sd.items() if v.dtype != torch.float32]
    if converted:
        report.messages.append(
            f"{len(converted)} tensors converted to float32 (e.g. {converted[0]})"
        )
    if cfg["architectures"][0] == "BertForMaskedLM":
        dec_w, dec_b = "cls.predictions.decoder.weight", "cls.predictions.decoder.bias"
        if dec_w in sd and not torch.equal(sd[dec_w], sd["bert.embeddings.word_embeddings.weight"]):
            report.messages.append("decoder weight differs from the word embeddings (untied file)")
        if (
            "cls.predictions.bias" in out
            and dec_b in out
            and not torch.equal(out[dec_b], out["cls.predictions.bias"])
        ):
            report.messages.append("decoder bias differs from cls.predictions.bias (untied file)")
    return out


def identify_release(
    folder: Path,
    weights: Path,
    variant: GeneformerVariant | None,
    dict_paths: dict[str, Path],
    report: LoadReport,
    verify: bool,
) -> None:
    """File hashes and the official release they match (by byte size / known sha256) into ``report``."""
    files = [folder / "config.json", weights, *dict_paths.values()]
    if verify:
        for p in files:
            report.files[_rel(folder, p)] = sha256_file(p)
    size = weights.stat().st_size
    release: str | None = None
    size_match = [v.name for v in VARIANTS.values() if v.file_sizes.get(weights.name) == size]
    ft = FINETUNED_RELEASES.get((weights.name, size))
    if ft and variant is not None and ft[1] == variant.name:
        release = ft[0]
    elif variant is not None and variant.name in size_match:
        release = variant.name
    if release:
        report.messages.append(
            f"{weights.name} has the byte size of the official {release} release "
            "(no official sha256 of the weights is published, so the content is not verified)"
        )
    else:
        report.messages.append(
            f"{weights.name} ({size:,} bytes) does not match any known Geneformer release"
        )
    if verify:
        for kind, p in dict_paths.items():
            digest = report.files[_rel(folder, p)]
            known = KNOWN_DICTIONARY_HASHES.get(digest) or next(
                (
                    v
                    for h, v in KNOWN_DICTIONARY_HASHES.items()
                    if len(h) < 64 and digest.startswith(h)
                ),
                None,
            )
            if known is None:
                if kind in ("token_dictionary", "gene_median_dictionary", "gene_name_id_dict"):
                    report.messages.append(
                        f"{p.name} does not match any known official dictionary hash"
                    )
                    if kind == "token_dictionary":
                        release = None
            elif known[1] != kind:
                report.messages.append(
                    f"{p.name} has the hash of the official {known[0]} {known[1]}"
                )
                release = None
            else:
                report.messages.append(f"{p.name} matches the official {known[0]} {kind} (sha256)")
                if variant is not None and known[0] not in (
                    variant.dictionaries,
                    *(("gc95M", "gc104M") if variant.dictionaries in ("gc95M", "gc104M") else ()),
                ):
                    report.messages.append(
                        f"{p.name} is the {known[0]} dictionary but {variant.name} uses {variant.dictionaries}"
                    )
                    release = None
    report.known_release = release


def _rel(folder: Path, p: Path) -> str:
    try:
        return str(p.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(p)
