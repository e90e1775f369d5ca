"""Published Geneformer variants and tolerant parsing of their ``config.json`` (HF ``BertConfig``).

Values follow the model-format spec §1.2 (architecture, file sizes) and §1.5 (dictionaries).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellfoundry.models.foundation import CheckpointError

# Keys read from config.json; everything else is tolerated and ignored.
_ARCH_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
)
_DEFAULTS: dict[str, Any] = {
    "hidden_act": "relu",
    "layer_norm_eps": 1e-12,
    "type_vocab_size": 2,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "initializer_range": 0.02,
    "hidden_dropout_prob": 0.02,
    "attention_probs_dropout_prob": 0.02,
}
SUPPORTED_ARCHITECTURES = ("BertForMaskedLM", "BertForSequenceClassification", "BertModel")


@dataclass(frozen=True)
class GeneformerVariant:
    """One published Geneformer model (architecture, dictionaries, official file sizes)."""

    name: str
    aliases: tuple[str, ...]
    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    vocab_size: int
    dropout: float
    special_tokens: bool  # <cls>/<eos> in the vocabulary (V2-style tokenisation)
    dictionaries: str  # "gc30M" | "gc95M" | "gc104M"
    # official weight-file byte sizes (from the LFS pointers); no sha256 of weights is published
    file_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def arch(self) -> tuple[int, int, int, int, int, int]:
        return (
            self.num_layers,
            self.hidden_size,
            self.num_heads,
            self.intermediate_size,
            self.max_position_embeddings,
            self.vocab_size,
        )

    def config_dict(self) -> dict[str, Any]:
        """A ``config.json`` with this variant's published values."""
        d: dict[str, Any] = {
            "architectures": ["BertForMaskedLM"],
            "model_type": "bert",
            **_DEFAULTS,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "vocab_size": self.vocab_size,
            "hidden_dropout_prob": self.dropout,
            "attention_probs_dropout_prob": self.dropout,
            "use_cache": True,
        }
        return d


# fmt: off
VARIANTS: dict[str, GeneformerVariant] = {
    v.name: v
    for v in (
        GeneformerVariant(
            "Geneformer-V1-10M",
            ("gf-6L-30M-i2048", "gf-6L-10M-i2048", "geneformer-6L-30M"),
            6, 256, 4, 512, 2048, 25426, 0.02, False, "gc30M",
            {"model.safetensors": 41_183_536, "pytorch_model.bin": 41_216_562},
        ),
        GeneformerVariant(
            "gf-12L-30M-i2048",
            ("geneformer-12L-30M", "gf-12L-40M-i2048"),
            12, 512, 8, 1024, 2048, 25426, 0.02, False, "gc30M",
            {"pytorch_model.bin": 158_467_410},
        ),
        GeneformerVariant(
            "gf-12L-95M-i4096",
            ("gf-12L-95M-i4096_CLcancer", "gf-12L-38M-i4096"),
            12, 512, 8, 1024, 4096, 20275, 0.02, True, "gc95M",
            {"model.safetensors": 152_012_980},
        ),
        GeneformerVariant(
            "gf-20L-95M-i4096",
            ("gf-20L-151M-i4096",),
            20, 896, 14, 1792, 4096, 20275, 0.02, True, "gc95M",
            {"model.safetensors": 605_292_732},
        ),
        GeneformerVariant(
            "Geneformer-V2-104M",
            ("Geneformer-V2-104M_CLcancer", "gf-12L-104M-i4096"),
            12, 768, 12, 3072, 4096, 20275, 0.1, True, "gc104M",
            {"model.safetensors": 417_571_156},
        ),
        GeneformerVariant(
            "Geneformer-V2-316M",
            ("gf-18L-316M-i4096",),
            18, 1152, 18, 4608, 4096, 20275, 0.1, True, "gc104M",
            {"model.safetensors": 1_265_455_076},
        ),
    )
}
# fmt: on

# Fine-tuned releases with the architecture of a pretrained variant: (file, bytes) -> release name.
FINETUNED_RELEASES: dict[tuple[str, int], tuple[str, str]] = {
    ("pytorch_model.bin", 41_115_113): (
        "Geneformer-V1-10M_CellClassifier_cardiomyopathies_220224",
        "Geneformer-V1-10M",
    ),
}

# Official dictionary hashes (spec §1.5). Full sha256 where the real file is available (gc30M,
# verified against shared/vocab), otherwise the published prefix.
KNOWN_DICTIONARY_HASHES: dict[str, tuple[str, str]] = {
    "ab9dc40973fa5224d77b793e2fd114cacf3d08423ed9c4c49caf0ba9c7f218f1": (
        "gc30M",
        "token_dictionary",
    ),
    "b3b589bb5ec75040d05fc44dd6bf0184cf87f3c362cf158d196a6ed3b7fe5f39": (
        "gc30M",
        "gene_median_dictionary",
    ),
    "55e67962e79c0039a6c32d43c5c99f38e51964bbcfa32f736150ee1e285c438c": (
        "gc30M",
        "gene_name_id_dict",
    ),
    "67c445f4": ("gc104M", "token_dictionary"),  # prefix only; identical blob for gc95M
}


def variant_by_name(name: str) -> GeneformerVariant:
    """A published variant by its folder name or alias (case-insensitive)."""
    low = name.lower()
    for v in VARIANTS.values():
        if low == v.name.lower() or low in (a.lower() for a in v.aliases):
            return v
    raise CheckpointError(
        f"unknown Geneformer variant '{name}'",
        f"choose one of: {', '.join(VARIANTS)}",
    )


def match_variant(arch: tuple[int, ...]) -> GeneformerVariant | None:
    """The published variant with exactly this (layers, hidden, heads, ffn, positions, vocab)."""
    return next((v for v in VARIANTS.values() if v.arch == tuple(arch)), None)


def read_config(folder: Path) -> dict[str, Any]:
    """Parse ``config.json``; refuse what is not a BERT config, tolerate unknown/missing extras."""
    path = folder / "config.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"{folder} has no config.json", "pass the Geneformer model folder as published"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{path} is not valid JSON ({e})", "restore the original config.json"
        ) from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} is not a JSON object", "restore the original config.json")
    if raw.get("model_type", "bert") != "bert":
        raise CheckpointError(
            f"{path} has model_type '{raw.get('model_type')}', Geneformer is a BERT model",
            "pass a Geneformer checkpoint folder",
        )
    missing = [k for k in _ARCH_KEYS if k not in raw]
    if missing:
        raise CheckpointError(
            f"{path} lacks required keys: {', '.join(missing)}",
            "restore the original config.json (spec §1.2 lists the published values)",
        )
    bad = [k for k in _ARCH_KEYS if not isinstance(raw[k], int) or raw[k] <= 0]
    if bad:
        raise CheckpointError(
            f"{path}: {', '.join(bad)} must be positive integers",
            "restore the original config.json",
        )
    if raw["hidden_size"] % raw["num_attention_heads"]:
        raise CheckpointError(
            f"{path}: hidden_size {raw['hidden_size']} is not a multiple of "
            f"num_attention_heads {raw['num_attention_heads']}",
            "restore the original config.json",
        )
    cfg = {**_DEFAULTS, **raw}
    archs = cfg.get("architectures") or ["BertForMaskedLM"]
    if not isinstance(archs, list) or not archs:
        archs = ["BertForMaskedLM"]
    if archs[0] not in SUPPORTED_ARCHITECTURES:
        raise CheckpointError(
            f"{path}: architecture {archs[0]} is not supported",
            f"Geneformer checkpoints are one of {', '.join(SUPPORTED_ARCHITECTURES)}",
        )
    cfg["architectures"] = archs
    return cfg


def arch_of(cfg: dict[str, Any]) -> tuple[int, int, int, int, int, int]:
    return (
        int(cfg["num_hidden_layers"]),
        int(cfg["hidden_size"]),
        int(cfg["num_attention_heads"]),
        int(cfg["intermediate_size"]),
        int(cfg["max_position_embeddings"]),
        int(cfg["vocab_size"]),
    )


def bert_config(cfg: dict[str, Any], attn_implementation: str = "sdpa") -> Any:
    """A ``transformers.BertConfig`` from a parsed config (only the keys BERT needs)."""
    from transformers import BertConfig

    keep = {
        k: cfg[k]
        for k in (
            *_ARCH_KEYS,
            *_DEFAULTS,
            "classifier_dropout",
            "id2label",
            "label2id",
            "problem_type",
        )
        if k in cfg and cfg[k] is not None
    }
    if "id2label" in keep and isinstance(keep["id2label"], dict):
        keep["id2label"] = {int(k): v for k, v in keep["id2label"].items()}
    c = BertConfig(**keep)
    c._attn_implementation = attn_implementation
    return c
