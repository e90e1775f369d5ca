"""Geneformer's pickled dictionaries: where they sit, safe loading, special tokens by name.

Layouts (spec §1.1): beside the weights; in a ``geneformer/`` folder of the repository (the
model folder may be the repository root or one of its subfolders), possibly under
``gene_dictionaries_30m/``; or given explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cellfoundry.models.foundation import CheckpointError
from cellfoundry.models.safe_pickle import safe_load_pickle

KINDS = ("token_dictionary", "gene_median_dictionary", "gene_name_id_dict", "ensembl_mapping_dict")
REQUIRED = ("token_dictionary", "gene_median_dictionary")
SPECIAL_NAMES = ("<pad>", "<mask>", "<cls>", "<eos>")


@dataclass
class GeneformerDictionaries:
    """Token ids, normalisation medians and optional name/ID maps of one Geneformer vocabulary."""

    token_dict: dict[str, int]
    medians: dict[str, float]
    gene_name_id: dict[str, str] | None = None
    ensembl_mapping: dict[str, str] | None = None
    paths: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.token_dict = {str(k): int(v) for k, v in self.token_dict.items()}
        ids = list(self.token_dict.values())
        if len(set(ids)) != len(ids):
            raise CheckpointError(
                "the token dictionary assigns the same id to several tokens",
                "use the official token_dictionary pickle",
            )
        if "<pad>" not in self.token_dict:
            raise CheckpointError(
                "the token dictionary has no '<pad>' token",
                "use the official token_dictionary pickle",
            )
        self.medians = {str(k): float(v) for k, v in self.medians.items()}
        genes = self.genes
        absent = [g for g in genes if g not in self.medians]
        if absent:
            raise CheckpointError(
                f"{len(absent)} genes of the token dictionary have no median "
                f"(e.g. {', '.join(absent[:5])})",
                "use the gene_median_dictionary that belongs to this token dictionary",
            )
        bad = [g for g in genes if not (np.isfinite(self.medians[g]) and self.medians[g] > 0)]
        if bad:
            raise CheckpointError(
                f"{len(bad)} gene medians are not positive finite numbers (e.g. {bad[0]})",
                "use the official gene_median_dictionary pickle",
            )

    @property
    def vocab_size(self) -> int:
        return max(self.token_dict.values()) + 1

    @property
    def specials(self) -> dict[str, int]:
        return {k: v for k, v in self.token_dict.items() if k.startswith("<") and k.endswith(">")}

    @property
    def genes(self) -> list[str]:
        """Gene tokens (Ensembl IDs) in token-id order."""
        sp = self.specials
        return [k for k, _ in sorted(self.token_dict.items(), key=lambda kv: kv[1]) if k not in sp]

    def special_id(self, name: str) -> int | None:
        return self.token_dict.get(name)

    @property
    def pad_id(self) -> int:
        return self.token_dict["<pad>"]

    @property
    def cls_id(self) -> int | None:
        return self.token_dict.get("<cls>")

    @property
    def eos_id(self) -> int | None:
        return self.token_dict.get("<eos>")

    @classmethod
    def from_files(cls, paths: dict[str, Path]) -> GeneformerDictionaries:
        """Load the dictionaries through the restricted unpickler."""
        loaded: dict[str, Any] = {}
        for kind, p in paths.items():
            obj = safe_load_pickle(p)
            if not isinstance(obj, dict):
                raise CheckpointError(
                    f"{p} holds a {type(obj).__name__}, expected a dict",
                    f"use the official {kind} pickle",
                )
            loaded[kind] = obj
        return cls(
            token_dict=loaded["token_dictionary"],
            medians=loaded["gene_median_dictionary"],
            gene_name_id=loaded.get("gene_name_id_dict"),
            ensembl_mapping=loaded.get("ensembl_mapping_dict"),
            paths=dict(paths),
        )

    def write(self, folder: Path, suffix: str = "") -> dict[str, Path]:
        """Write the dictionaries as plain pickles (the official file names)."""
        import pickle

        folder.mkdir(parents=True, exist_ok=True)
        out: dict[str, Path] = {}
        objs: dict[str, Any] = {
            "token_dictionary": self.token_dict,
            "gene_median_dictionary": self.medians,
            "gene_name_id_dict": self.gene_name_id,
            "ensembl_mapping_dict": self.ensembl_mapping,
        }
        for kind, obj in objs.items():
            if obj is None:
                continue
            p = folder / f"{kind}{suffix}.pkl"
            with p.open("wb") as fh:
                pickle.dump(dict(obj), fh)
            out[kind] = p
        return out


def _candidate_dirs(folder: Path) -> list[Path]:
    """Folders that may hold the dictionaries, nearest first."""
    out: list[Path] = []
    for base in (folder, folder.parent):
        for sub in ("", "geneformer", "geneformer/gene_dictionaries_30m", "gene_dictionaries_30m"):
            d = (base / sub) if sub else base
            if d.is_dir() and d not in out:
                out.append(d)
    return out


def _suffixes(dict_set: str | None) -> list[str]:
    if dict_set == "gc30M":
        return ["_gc30M", ""]
    if dict_set == "gc95M":
        return ["_gc95M", "_gc104M", ""]
    if dict_set == "gc104M":
        return ["_gc104M", "_gc95M", ""]
    return ["", "_gc104M", "_gc95M", "_gc30M"]


def find_dictionary_files(
    folder: Path, dict_set: str | None = None, explicit: dict[str, Path] | Path | None = None
) -> list[dict[str, Path]]:
    """Candidate complete dictionary sets for a model folder, best first.

    ``explicit`` is a folder holding the pickles or a mapping kind -> file.
    """
    if isinstance(explicit, dict):
        paths = {k: Path(v) for k, v in explicit.items()}
        unknown = set(paths) - set(KINDS)
        if unknown:
            raise CheckpointError(
                f"unknown dictionary kinds: {', '.join(sorted(unknown))}", f"use {', '.join(KINDS)}"
            )
        for k, p in paths.items():
            if not p.is_file():
                raise CheckpointError(f"{k} file {p} does not exist", "pass existing pickle files")
        missing = [k for k in REQUIRED if k not in paths]
        if missing:
            raise CheckpointError(
                f"missing dictionaries: {', '.join(missing)}",
                "pass token_dictionary and gene_median_dictionary",
            )
        return [paths]
    dirs = [Path(explicit)] if explicit is not None else _candidate_dirs(folder)
    sets: list[dict[str, Path]] = []
    for d in dirs:
        for suf in _suffixes(dict_set):
            paths = {k: d / f"{k}{suf}.pkl" for k in KINDS}
            paths = {k: p for k, p in paths.items() if p.is_file()}
            if all(k in paths for k in REQUIRED) and paths not in sets:
                sets.append(paths)
    return sets


def load_dictionaries(
    folder: Path,
    vocab_size: int,
    dict_set: str | None = None,
    explicit: dict[str, Path] | Path | None = None,
) -> GeneformerDictionaries:
    """The dictionary set that fits a model of ``vocab_size`` tokens (raises naming what it saw)."""
    sets = find_dictionary_files(folder, dict_set, explicit)
    if not sets:
        where = (
            explicit if explicit is not None else ", ".join(str(d) for d in _candidate_dirs(folder))
        )
        raise CheckpointError(
            f"no Geneformer dictionaries (token_dictionary*.pkl + gene_median_dictionary*.pkl) found in {where}",
            "put the official dictionaries beside the weights or in the repository's geneformer/ folder, "
            "or pass dictionaries=FOLDER",
        )
    seen: list[str] = []
    for paths in sets:
        d = GeneformerDictionaries.from_files(paths)
        if d.vocab_size == vocab_size and len(d.token_dict) == vocab_size:
            return d
        seen.append(f"{paths['token_dictionary']} ({len(d.token_dict)} tokens)")
    raise CheckpointError(
        f"no token dictionary fits the model's vocab_size {vocab_size}: found {'; '.join(seen)}",
        "use the dictionaries of this model version (V1: gc30M, 25426 tokens; V2: gc104M, 20275 tokens)",
    )
