"""Strict reading of a SCimilarity model folder in its published layout (spec §3.1-3.2).

Required: ``encoder.ckpt`` (``torch.save({"state_dict": ...})``) and ``gene_order.tsv``.
Read when present: ``layer_sizes.json``, ``decoder.ckpt``, ``label_ints.csv``,
``hyperparameters.json``, ``annotation/reference_labels.tsv``. Weights are read with
``torch.load(weights_only=True)``: no arbitrary object is ever unpickled.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from cellfoundry.artifacts import sha256_file
from cellfoundry.models.foundation import CheckpointError, LoadReport
from cellfoundry.models.scimilarity.network import (
    V11_HIDDEN,
    V11_LATENT,
    V11_N_GENES,
    decoder_shapes,
    encoder_shapes,
)

FAMILY = "scimilarity"
ENCODER_FILE = "encoder.ckpt"
DECODER_FILE = "decoder.ckpt"
GENE_ORDER_FILE = "gene_order.tsv"
LAYER_SIZES_FILE = "layer_sizes.json"
LABEL_INTS_FILE = "label_ints.csv"
HYPERPARAMETERS_FILE = "hyperparameters.json"
REFERENCE_LABELS_FILE = "annotation/reference_labels.tsv"
KNN_INDEX_FILE = "annotation/labelled_kNN.bin"
REQUIRED_FILES = (ENCODER_FILE, GENE_ORDER_FILE)
HASHED_FILES = (
    ENCODER_FILE,
    DECODER_FILE,
    GENE_ORDER_FILE,
    LAYER_SIZES_FILE,
    LABEL_INTS_FILE,
    HYPERPARAMETERS_FILE,
    REFERENCE_LABELS_FILE,
)
V11_VARIANT = "model_v1.1"

# Official sha256 values known for published files: file -> {sha256: release}. Only the gene order
# is recorded (Genentech/scimilarity tests/data/gene_order.tsv, sha256 prefix 0a9aeacf in the spec);
# no official hashes of the v1.1 weights are available, so their identity is never claimed.
KNOWN_SHA256: dict[str, dict[str, str]] = {
    GENE_ORDER_FILE: {
        "0a9aeacf7fc19399426273d8cfab8683253ec56b51be556d42edd115f125b8ca": V11_VARIANT,
    },
}

# Keys that may be absent (older torch versions did not track BatchNorm batch counts).
_OPTIONAL_KEY = re.compile(r"\.num_batches_tracked$")
_LAYER_KEY = re.compile(r"^network\.(\d+)\.(?:(\d+)\.)?weight$")


@dataclass
class SCimilarityCheckpoint:
    """Everything read from a model folder, already checked."""

    folder: Path
    gene_order: list[str]
    hidden: list[int]
    latent: int
    encoder_state: dict[str, torch.Tensor]
    decoder_state: dict[str, torch.Tensor] | None
    int2label: dict[int, str] | None
    hyperparameters: dict[str, Any] | None
    reference_labels: list[tuple[str, str]] | None
    report: LoadReport
    dropout: float = 0.5
    input_dropout: float = 0.4
    layer_sizes: dict[str, list[int]] = field(default_factory=dict)

    @property
    def n_genes(self) -> int:
        return len(self.gene_order)


def _bad(folder: Path, what: str, hint: str) -> CheckpointError:
    return CheckpointError(f"{folder}: {what}", hint)


def read_gene_order(path: Path) -> list[str]:
    """One symbol per line, read as the official code does (``line.strip()``); no blanks or repeats."""
    try:
        with open(path, encoding="utf-8") as fh:
            genes = [line.strip() for line in fh]
    except UnicodeDecodeError as e:
        raise _bad(
            path, f"is not UTF-8 text ({e})", "gene_order.tsv must list one gene symbol per line"
        ) from None
    if not genes:
        raise _bad(
            path, "is empty", "gene_order.tsv must list the model's genes, one symbol per line"
        )
    blank = [i + 1 for i, g in enumerate(genes) if not g]
    if blank:
        raise _bad(
            path,
            f"has {len(blank)} empty line(s) (e.g. line {blank[0]})",
            "remove empty lines: each line must hold exactly one gene symbol",
        )
    seen: dict[str, int] = {}
    dups = []
    for i, g in enumerate(genes):
        if g in seen:
            dups.append(f"{g} (lines {seen[g] + 1} and {i + 1})")
        seen.setdefault(g, i)
    if dups:
        raise _bad(
            path,
            f"lists {len(dups)} gene(s) twice: {', '.join(dups[:5])}",
            "each gene symbol must appear once; use the file exactly as published",
        )
    return genes


def write_gene_order(path: Path, genes: Sequence[str]) -> None:
    """Write the gene order as published: ``\\n``-joined, no trailing newline."""
    path.write_text("\n".join(genes), encoding="utf-8")


def read_label_ints(path: Path) -> dict[int, str]:
    """``label_ints.csv`` (pandas Series CSV, header ``"",0``) -> {int: label}."""
    try:
        df = pd.read_csv(path, index_col=0)
    except Exception as e:
        raise _bad(
            path,
            f"cannot be read as CSV ({e})",
            'expected a header line `"",0` then rows `0,"label"`',
        ) from None
    if "0" not in df.columns or len(df.columns) != 1:
        raise _bad(
            path,
            f"has columns {list(df.columns)}, expected one column named 0",
            'expected a header line `"",0` then rows `0,"label"` (pd.Series(int2label).to_csv)',
        )
    try:
        return {int(k): str(v) for k, v in df["0"].to_dict().items()}
    except (TypeError, ValueError):
        raise _bad(
            path,
            "has non-integer label ids in its first column",
            'each row must be `<int>,"<label>"`',
        ) from None


def write_label_ints(path: Path, int2label: Mapping[int, str]) -> None:
    """Write ``label_ints.csv`` byte-compatible with the official writer."""
    import csv

    pd.Series(dict(int2label)).to_csv(path, quoting=csv.QUOTE_NONNUMERIC)


def read_reference_labels(path: Path) -> list[tuple[str, str]]:
    """``annotation/reference_labels.tsv``: one ``label<TAB>study`` line per indexed cell."""
    out: list[tuple[str, str]] = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) < 2:
                raise _bad(
                    path,
                    f"line {i + 1} has no tab-separated study column: {line[:60]!r}",
                    "each line must be `label<TAB>study`",
                )
            out.append((parts[0], parts[1]))
    return out


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad(path, f"is not valid JSON ({e})", "use the file exactly as published") from None


def load_state(path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A ``{"state_dict": ...}`` checkpoint read with ``weights_only=True``; notes on its wrapping."""
    notes: list[str] = []
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"GLOBAL ([\w.]+)", str(e))
        if m:
            raise _bad(
                path,
                f"holds a non-tensor object ({m.group(1)}) and was not unpickled",
                "use the checkpoint as published; cellfoundry never unpickles arbitrary objects",
            ) from None
        raise _bad(
            path,
            "cannot be read as a torch checkpoint (not a tensors-only torch.save file)",
            "the file may be truncated or replaced; download it again",
        ) from None
    except Exception as e:
        raise _bad(
            path,
            f"cannot be read as a torch checkpoint ({type(e).__name__}: {str(e)[:200]})",
            "the file may be truncated or not a torch.save file; download it again",
        ) from None
    if isinstance(obj, Mapping) and "state_dict" in obj:
        extra = sorted(str(k) for k in obj if k != "state_dict")
        if extra:
            notes.append(f"{path.name}: ignored top-level entries {extra}")
        obj = obj["state_dict"]
    elif isinstance(obj, Mapping):
        notes.append(
            f"{path.name}: a bare state dict (the published files wrap it as {{'state_dict': ...}})"
        )
    else:
        raise _bad(
            path,
            f"holds a {type(obj).__name__}, not a {{'state_dict': ...}} dictionary",
            "use the checkpoint as published",
        )
    state: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise _bad(
                path,
                f"entry {k!r} is a {type(v).__name__}, not a tensor",
                "use the checkpoint as published",
            )
        state[str(k)] = v
    return state, notes


def infer_architecture(shapes: Mapping[str, Sequence[int]]) -> tuple[int, list[int], int]:
    """(n_inputs, hidden sizes, output size) from the 2-d ``network.*weight`` shapes, numeric order."""
    layers = []
    for k, s in shapes.items():
        m = _LAYER_KEY.match(k)
        if m and len(s) == 2:
            layers.append(((int(m.group(1)), int(m.group(2) or 0)), [int(x) for x in s]))
    if len(layers) < 2:
        raise ValueError(f"found {len(layers)} Linear layer weight(s); at least 2 are needed")
    layers.sort()
    return layers[0][1][1], [s[0] for _, s in layers[:-1]], layers[-1][1][0]


def compare_state(
    file: str,
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int, ...]],
    report: LoadReport,
) -> None:
    """Record missing / unexpected keys and shape mismatches (prefixed by the file name)."""
    for k, shape in expected.items():
        if k not in state:
            if _OPTIONAL_KEY.search(k):
                report.optional_keys_absent.append(f"{file}:{k}")
            else:
                report.missing_keys.append(f"{file}:{k}")
        elif tuple(state[k].shape) != shape:
            report.shape_mismatches.append(
                f"{file}:{k} is {list(state[k].shape)}, expected {list(shape)}"
            )
    report.unexpected_keys += [f"{file}:{k}" for k in state if k not in expected]
    for k, v in state.items():
        if k in expected and not _OPTIONAL_KEY.search(k) and not v.is_floating_point():
            report.shape_mismatches.append(
                f"{file}:{k} has dtype {v.dtype}, expected a float tensor"
            )


def fill_optional(
    state: dict[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]
) -> dict[str, torch.Tensor]:
    """Add the optional keys that are absent (BatchNorm batch counters) with their default value."""
    out = dict(state)
    for k in expected:
        if k not in out and _OPTIONAL_KEY.search(k):
            out[k] = torch.tensor(0, dtype=torch.long)
    return out


def variant_name(
    n_genes: int, hidden: Sequence[int], latent: int, gene_order_sha: str | None
) -> str:
    """``model_v1.1`` for the published sizes and gene order, else a descriptive custom name."""
    v11_genes = (
        gene_order_sha is None or KNOWN_SHA256[GENE_ORDER_FILE].get(gene_order_sha) == V11_VARIANT
    )
    if (
        n_genes == V11_N_GENES
        and list(hidden) == list(V11_HIDDEN)
        and latent == V11_LATENT
        and v11_genes
    ):
        return V11_VARIANT
    return f"custom-{n_genes}g-h{'x'.join(map(str, hidden))}-z{latent}"


def read_checkpoint(
    folder: str | Path, *, verify: bool = True, load_decoder: bool = True
) -> SCimilarityCheckpoint:
    """Read and check a SCimilarity model folder; raise CheckpointError naming every problem.

    ``verify`` also computes sha256 of the model files and compares them with known releases.
    """
    root = Path(folder)
    if not root.is_dir():
        raise CheckpointError(
            f"{root} is not a folder", "pass the SCimilarity model folder (e.g. model_v1.1/)"
        )
    absent = [f for f in REQUIRED_FILES if not (root / f).is_file()]
    if absent:
        have = sorted(p.name for p in root.iterdir())[:20]
        raise CheckpointError(
            f"{root} is not a SCimilarity model folder: {', '.join(absent)} missing (found: {have})",
            f"a SCimilarity model folder holds {', '.join(REQUIRED_FILES)} (plus layer_sizes.json, label_ints.csv, …)",
        )
    report = LoadReport(family=FAMILY, variant=None)
    genes = read_gene_order(root / GENE_ORDER_FILE)
    enc_state, notes = load_state(root / ENCODER_FILE)
    report.messages += notes

    layer_sizes: dict[str, list[int]] = {}
    if (root / LAYER_SIZES_FILE).is_file():
        raw = read_json(root / LAYER_SIZES_FILE)
        if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
            raise _bad(
                root / LAYER_SIZES_FILE,
                "is not a JSON object of key -> shape list",
                "use the file exactly as published",
            )
        layer_sizes = {str(k): [int(x) for x in v] for k, v in raw.items()}
        arch_src: Mapping[str, Sequence[int]] = layer_sizes
        for k, s in layer_sizes.items():
            if k not in enc_state:
                report.messages.append(f"{LAYER_SIZES_FILE} lists {k}, which {ENCODER_FILE} lacks")
            elif list(enc_state[k].shape) != s:
                report.shape_mismatches.append(
                    f"{ENCODER_FILE}:{k} is {list(enc_state[k].shape)} but {LAYER_SIZES_FILE} says {s}"
                )
    else:
        arch_src = {k: list(v.shape) for k, v in enc_state.items()}
        report.messages.append(
            f"{LAYER_SIZES_FILE} absent: architecture inferred from {ENCODER_FILE} shapes"
        )
    try:
        n_in, hidden, latent = infer_architecture(arch_src)
    except ValueError as e:
        raise _bad(
            root / ENCODER_FILE,
            f"does not hold a SCimilarity encoder ({e}; keys: {sorted(enc_state)[:8]})",
            "expected keys network.{i}.1.weight (hidden layers) and network.{n}.weight (output)",
        ) from None
    if n_in != len(genes):
        report.shape_mismatches.append(
            f"{ENCODER_FILE}:network.0.1.weight takes {n_in} inputs but {GENE_ORDER_FILE} lists {len(genes)} genes"
        )

    hyper: dict[str, Any] | None = None
    dropout, input_dropout = 0.5, 0.4
    if (root / HYPERPARAMETERS_FILE).is_file():
        h = read_json(root / HYPERPARAMETERS_FILE)
        if not isinstance(h, dict):
            raise _bad(
                root / HYPERPARAMETERS_FILE,
                "is not a JSON object",
                "use the file exactly as published",
            )
        hyper = h
        dropout = float(h.get("dropout", dropout))
        input_dropout = float(h.get("input_dropout", input_dropout))
        if "hidden_dim" in h and list(h["hidden_dim"]) != hidden:
            report.messages.append(
                f"{HYPERPARAMETERS_FILE} says hidden_dim={h['hidden_dim']} but the weights have {hidden}; the weights win"
            )
        if "latent_dim" in h and int(h["latent_dim"]) != latent:
            report.messages.append(
                f"{HYPERPARAMETERS_FILE} says latent_dim={h['latent_dim']} but the weights have {latent}; the weights win"
            )

    compare_state(ENCODER_FILE, enc_state, encoder_shapes(len(genes), hidden, latent), report)

    dec_state = None
    if load_decoder and (root / DECODER_FILE).is_file():
        dec_state, notes = load_state(root / DECODER_FILE)
        report.messages += notes
        compare_state(DECODER_FILE, dec_state, decoder_shapes(len(genes), hidden, latent), report)
    elif not (root / DECODER_FILE).is_file():
        report.messages.append(
            f"{DECODER_FILE} absent: embedding works; reconstruction-loss fine-tuning has no decoder"
        )

    int2label = None
    if (root / LABEL_INTS_FILE).is_file():
        int2label = read_label_ints(root / LABEL_INTS_FILE)
    else:
        report.messages.append(
            f"{LABEL_INTS_FILE} absent (the official CellEmbedding requires it; embedding does not)"
        )
    ref_labels = None
    if (root / REFERENCE_LABELS_FILE).is_file():
        ref_labels = read_reference_labels(root / REFERENCE_LABELS_FILE)
        if (root / KNN_INDEX_FILE).is_file():
            report.messages.append(
                f"{KNN_INDEX_FILE} found; kNN annotation runs exactly (brute-force cosine) over the "
                "reference embeddings stored with the labels, not through hnswlib"
            )

    gene_sha = None
    if verify:
        for f in HASHED_FILES:
            if (root / f).is_file():
                report.files[f] = sha256_file(root / f)
        gene_sha = report.files[GENE_ORDER_FILE]
        known = KNOWN_SHA256[GENE_ORDER_FILE].get(gene_sha)
        report.messages.append(
            f"{GENE_ORDER_FILE} matches the published {known} gene order"
            if known
            else f"{GENE_ORDER_FILE} (sha256 {gene_sha[:12]}…) matches no known release"
        )
        report.messages.append(
            "no official sha256 of the SCimilarity weights is recorded: "
            f"{ENCODER_FILE} (sha256 {report.files[ENCODER_FILE][:12]}…) cannot be matched to a release"
        )
    report.variant = variant_name(len(genes), hidden, latent, gene_sha)
    report.raise_if_bad(root)
    return SCimilarityCheckpoint(
        folder=root,
        gene_order=genes,
        hidden=hidden,
        latent=latent,
        encoder_state=enc_state,
        decoder_state=dec_state,
        int2label=int2label,
        hyperparameters=hyper,
        reference_labels=ref_labels,
        report=report,
        dropout=dropout,
        input_dropout=input_dropout,
        layer_sizes=layer_sizes,
    )
