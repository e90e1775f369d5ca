"""The protocol of foundation-model families (Geneformer, scGPT, SCimilarity) and their discovery.

Each family lives in ``cellfoundry.models.<family>`` and exposes one ``FoundationModel`` subclass
that loads a checkpoint folder *in its published layout* and embeds cells with the family's
official embedding rule.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import anndata as ad
import numpy as np

from cellfoundry.data.report import ValidationReport
from cellfoundry.errors import ModelError


class CheckpointError(ModelError):
    """A checkpoint folder does not match the published format (names the offending keys/files)."""

    code = "invalid_checkpoint"


@dataclass
class LoadReport:
    """What strict loading found: key checks, optional keys allowed, file hashes, release match."""

    family: str
    variant: str | None
    files: dict[str, str] = field(default_factory=dict)  # file -> sha256
    known_release: str | None = None  # name of the official release whose hashes match, if any
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    shape_mismatches: list[str] = field(default_factory=list)
    optional_keys_absent: list[str] = field(default_factory=list)
    ignored_keys: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing_keys or self.unexpected_keys or self.shape_mismatches)

    def raise_if_bad(self, folder: str | Path) -> None:
        if self.ok:
            return
        parts = []
        if self.missing_keys:
            parts.append(
                f"missing keys: {', '.join(self.missing_keys[:10])}"
                + (" …" if len(self.missing_keys) > 10 else "")
            )
        if self.unexpected_keys:
            parts.append(
                f"unexpected keys: {', '.join(self.unexpected_keys[:10])}"
                + (" …" if len(self.unexpected_keys) > 10 else "")
            )
        if self.shape_mismatches:
            parts.append(f"shape mismatches: {'; '.join(self.shape_mismatches[:10])}")
        raise CheckpointError(
            f"{folder} is not a valid {self.family} checkpoint ({'; '.join(parts)})",
            "use the checkpoint folder exactly as published (see `cellfoundry models`)",
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


class FoundationModel(ABC):
    """A pretrained (or random-weight) foundation model that turns cells into embeddings."""

    family: ClassVar[str]  # "geneformer" | "scgpt" | "scimilarity"
    embedding_key: ClassVar[str]  # obsm key: "X_geneformer" | "X_scgpt" | "X_scimilarity"
    gene_key_kind: ClassVar[str]  # "ensembl" | "symbol"

    checkpoint_dir: Path
    variant: str
    load_report: LoadReport

    @classmethod
    @abstractmethod
    def detect(cls, folder: Path) -> bool:
        """True when ``folder`` looks like this family's published layout."""

    @classmethod
    @abstractmethod
    def load(cls, folder: str | Path, *, verify: bool = True) -> FoundationModel:
        """Strictly load a published checkpoint folder; raise CheckpointError naming what is wrong."""

    @property
    @abstractmethod
    def embedding_dim(self) -> int: ...

    @property
    @abstractmethod
    def genes(self) -> list[str]:
        """The model's input genes (vocabulary without special tokens), in the family's key kind."""

    @abstractmethod
    def embed(
        self,
        adata: ad.AnnData,
        *,
        batch_size: int = 32,
        seed: int = 0,
        progress: bool = False,
        report: ValidationReport | None = None,
        out: Any = None,
        empty: Any = None,
    ) -> Any:
        """Cell embeddings (float32, n_cells x embedding_dim) in the input's cell order; streams rows.

        ``out``: where to write them (anything taking ``out[start:stop] = block`` of contiguous
        rows, e.g. ``data.h5ad_copy.ObsmWriter``, which writes into a file); returned. Default: a
        new numpy array.
        ``empty``: where to mark, block by block as the rows stream past (``empty[start:stop] =
        bools``), the cells without evidence: no non-zero value on any gene the model reads
        (after the family's gene alignment), see ``no_evidence``. Their embedding is whatever
        the network gives an empty input (often a confident-looking constant), so annotators
        must not read it.
        """

    @abstractmethod
    def no_evidence(self, cells: list[dict[str, np.ndarray]]) -> np.ndarray:
        """True for each of ``tokenize``'s cells that holds no gene the model reads (no count on
        any of its genes in the data): the model has no evidence for that cell."""

    # --- hooks used by fine-tuning (cellfoundry.tuning); same preprocessing as embed() ---------
    # network: the torch.nn.Module holding every weight (LoRA wraps its sub-modules).
    network: Any
    # default LoRA target module names (suffixes as peft's target_modules understands them)
    default_lora_targets: ClassVar[list[str]] = []

    @abstractmethod
    def tokenize(
        self, adata: ad.AnnData, *, seed: int = 0, report: ValidationReport | None = None
    ) -> list[dict[str, np.ndarray]]:
        """Per-cell model inputs, in cell order (exactly what embed() feeds the network)."""

    @abstractmethod
    def collate(self, cells: list[dict[str, np.ndarray]]) -> dict[str, Any]:
        """Stack per-cell inputs into a batch of torch tensors (padding as the family requires)."""

    @abstractmethod
    def forward_embeddings(self, batch: dict[str, Any]) -> Any:
        """Differentiable cell embeddings (torch.Tensor, B x embedding_dim) by the official rule."""

    @classmethod
    @abstractmethod
    def from_random(
        cls, genes: list[str], *, variant: str | None = None, seed: int = 0
    ) -> FoundationModel:
        """A randomly initialised model of ``variant`` (a small test size when None) over ``genes``.

        Used when no pretrained weights are registered; callers must say so loudly.
        """


FOUNDATION_FAMILIES: dict[str, str] = {
    "geneformer": "cellfoundry.models.geneformer:GeneformerModel",
    "scgpt": "cellfoundry.models.scgpt:ScGPTModel",
    "scimilarity": "cellfoundry.models.scimilarity:SCimilarityModel",
}


def foundation_class(family: str) -> type[FoundationModel]:
    if family not in FOUNDATION_FAMILIES:
        raise ModelError(
            f"unknown foundation family '{family}'",
            f"choose one of: {', '.join(FOUNDATION_FAMILIES)}",
        )
    mod, _, cls = FOUNDATION_FAMILIES[family].partition(":")
    return getattr(importlib.import_module(mod), cls)  # type: ignore[no-any-return]


def detect_family(folder: str | Path) -> str:
    """Which family's published layout ``folder`` has."""
    p = Path(folder)
    if not p.is_dir():
        raise CheckpointError(
            f"{p} is not a folder", "pass the checkpoint folder, not a file inside it"
        )
    hits = [f for f in FOUNDATION_FAMILIES if foundation_class(f).detect(p)]
    if len(hits) != 1:
        names = sorted(x.name for x in p.iterdir())[:20]
        raise CheckpointError(
            f"cannot tell which model family {p} holds (matches: {hits or 'none'}; files: {names})",
            "pass --family geneformer|scgpt|scimilarity, or check the folder against `cellfoundry models`",
        )
    return hits[0]


def load_foundation(
    folder: str | Path, family: str | None = None, *, verify: bool = True
) -> FoundationModel:
    """Load any family's checkpoint folder (family detected from its files when not given)."""
    fam = family or detect_family(folder)
    return foundation_class(fam).load(folder, verify=verify)
