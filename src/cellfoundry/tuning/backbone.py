"""The encoders fine-tuning works on: any foundation family, or SCimilarity's architecture from scratch.

A ``Backbone`` gives the training loop one interface: per-cell inputs (``tokenize``), batching
(``collate``), differentiable cell embeddings (``embed``) and, where the family has a decoder, an
input reconstruction loss (``reconstruction_loss``).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import Any

import anndata as ad
import numpy as np
import torch
from torch import nn

from cellfoundry.data.prepare import DEFAULT_MIN_COVERAGE, iter_features, plan_input
from cellfoundry.data.report import ValidationReport
from cellfoundry.tuning.losses import input_reconstruction_loss


def state_sha256(module: nn.Module) -> str:
    """sha256 of a module's state dict (names, dtypes, shapes and bytes, in key order)."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


class Backbone(ABC):
    """An encoder of cells that fine-tuning can adapt."""

    family: str
    name: str
    network: nn.Module
    genes: list[str]
    gene_key_kind: str
    default_lora_targets: list[str]

    @property
    @abstractmethod
    def embedding_dim(self) -> int: ...

    @abstractmethod
    def tokenize(
        self, adata: ad.AnnData, *, seed: int = 0, report: ValidationReport | None = None
    ) -> list[dict[str, np.ndarray]]:
        """Per-cell model inputs, in cell order."""

    @abstractmethod
    def no_evidence(self, cells: list[dict[str, np.ndarray]]) -> np.ndarray:
        """True for each of ``tokenize``'s cells that holds no gene the encoder reads."""

    @abstractmethod
    def collate(self, cells: list[dict[str, np.ndarray]]) -> dict[str, Any]:
        """A batch of torch tensors."""

    @abstractmethod
    def embed(self, batch: dict[str, Any]) -> torch.Tensor:
        """Differentiable cell embeddings (B x embedding_dim)."""

    def reconstruction_loss(self, batch: dict[str, Any], emb: torch.Tensor) -> torch.Tensor | None:
        """Input reconstruction loss from the embedding when the family has a decoder; else None."""
        return None

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the backbone."""
        return {
            "family": self.family,
            "name": self.name,
            "embedding_dim": self.embedding_dim,
            "n_genes": len(self.genes),
            "gene_key_kind": self.gene_key_kind,
        }


class FoundationBackbone(Backbone):
    """A foundation family's model (``cellfoundry.models.foundation.FoundationModel``)."""

    def __init__(self, fm: Any, *, name: str | None = None) -> None:
        self.fm = fm
        self.family = fm.family
        self.name = name or f"{fm.family}:{getattr(fm, 'variant', None)}"
        self.network = fm.network
        self.genes = list(fm.genes)
        self.gene_key_kind = fm.gene_key_kind
        self.default_lora_targets = list(fm.default_lora_targets)

    @property
    def embedding_dim(self) -> int:
        return int(self.fm.embedding_dim)

    def tokenize(
        self, adata: ad.AnnData, *, seed: int = 0, report: ValidationReport | None = None
    ) -> list[dict[str, np.ndarray]]:
        return list(self.fm.tokenize(adata, seed=seed, report=report))

    def no_evidence(self, cells: list[dict[str, np.ndarray]]) -> np.ndarray:
        return np.asarray(self.fm.no_evidence(cells), dtype=bool)

    def collate(self, cells: list[dict[str, np.ndarray]]) -> dict[str, Any]:
        return dict(self.fm.collate(cells))

    def embed(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.fm.forward_embeddings(batch)  # type: ignore[no-any-return]

    def reconstruction_loss(self, batch: dict[str, Any], emb: torch.Tensor) -> torch.Tensor | None:
        # SCimilarity checkpoints carry their decoder (kept frozen): it reconstructs the log-normalised input
        decoder = getattr(self.fm, "decoder", None)
        if isinstance(decoder, nn.Module) and "x" in batch:
            decoder.eval()
            for p in decoder.parameters():
                p.requires_grad = False
            return input_reconstruction_loss(decoder(emb), batch["x"])
        return None

    def describe(self) -> dict[str, Any]:
        rep = getattr(self.fm, "load_report", None)
        return super().describe() | {
            "variant": getattr(self.fm, "variant", None),
            "checkpoint_dir": str(getattr(self.fm, "checkpoint_dir", "") or "") or None,
            "checkpoint_files": dict(getattr(rep, "files", {}) or {}),
            "known_release": getattr(rep, "known_release", None),
        }


# --- SCimilarity's architecture, built from sizes (for training from scratch on any gene set) ------

SCIMILARITY_V11: dict[str, Any] = {
    "hidden": [1024, 1024, 1024],
    "latent": 128,
    "dropout": 0.5,
    "input_dropout": 0.4,
}
SCIMILARITY_SIZES: dict[str, tuple[list[int], int]] = {
    "tiny": ([32, 32, 32], 16),
    "model_v1.1": ([1024, 1024, 1024], 128),
}


class SCimilarityNet(nn.Module):
    """SCimilarity's encoder + decoder (the decoder reconstructs the log-normalised input)."""

    def __init__(
        self,
        n_genes: int,
        hidden: list[int],
        latent: int,
        dropout: float = 0.5,
        input_dropout: float = 0.4,
    ) -> None:
        from cellfoundry.models.scimilarity.network import Decoder, Encoder

        super().__init__()
        self.encoder = Encoder(n_genes, hidden, latent, dropout, input_dropout)
        self.decoder = Decoder(n_genes, hidden, latent, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # type: ignore[no-any-return]


class SCimilarityScratch(Backbone):
    """SCimilarity's architecture on a given gene list (e.g. the reference's own genes), log1p-CP10k input.

    Per-cell totals are taken over all genes of the input file (cellfoundry's one normalisation); on
    the reference's own gene set this is SCimilarity's rule as well.
    """

    family = "scimilarity"

    def __init__(
        self,
        genes: list[str],
        gene_key_kind: str,
        *,
        hidden: list[int] | None = None,
        latent: int = 128,
        dropout: float = 0.5,
        input_dropout: float = 0.4,
        seed: int = 0,
        name: str = "scimilarity-scratch",
        min_coverage: float = DEFAULT_MIN_COVERAGE,
    ) -> None:
        self.genes = list(genes)
        self.gene_key_kind = gene_key_kind
        self.name = name
        self.min_coverage = min_coverage
        self.config: dict[str, Any] = {
            "hidden": list(hidden or SCIMILARITY_V11["hidden"]),
            "latent": int(latent),
            "dropout": float(dropout),
            "input_dropout": float(input_dropout),
            "seed": int(seed),
        }
        torch.manual_seed(seed)
        self.network = SCimilarityNet(
            len(self.genes), self.config["hidden"], latent, dropout, input_dropout
        )
        n = len(self.config["hidden"])
        self.default_lora_targets = [f"encoder.network.{i}.1" for i in range(n)] + [
            f"encoder.network.{n}"
        ]

    @property
    def embedding_dim(self) -> int:
        return int(self.config["latent"])

    def tokenize(
        self,
        adata: ad.AnnData,
        *,
        seed: int = 0,
        report: ValidationReport | None = None,
        min_coverage: float | None = None,
    ) -> list[dict[str, np.ndarray]]:
        plan = plan_input(
            adata,
            self.genes,
            representation="lognorm",
            key_kind=self.gene_key_kind,  # type: ignore[arg-type]
            target_name=f"genes of '{self.name}'",
            min_coverage=self.min_coverage if min_coverage is None else min_coverage,
            report=report,
        )
        cells: list[dict[str, np.ndarray]] = []
        for _, x in iter_features(adata, plan, 5000):
            dense = x.toarray().astype(np.float32)
            cells.extend({"x": row} for row in dense)
        return cells

    def no_evidence(self, cells: list[dict[str, np.ndarray]]) -> np.ndarray:
        return np.fromiter((not np.any(c["x"]) for c in cells), dtype=bool, count=len(cells))

    def collate(self, cells: list[dict[str, np.ndarray]]) -> dict[str, Any]:
        return {"x": torch.from_numpy(np.stack([c["x"] for c in cells]))}

    def embed(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.network.encoder(batch["x"])  # type: ignore[no-any-return,operator]

    def reconstruction_loss(self, batch: dict[str, Any], emb: torch.Tensor) -> torch.Tensor | None:
        return input_reconstruction_loss(self.network.decoder(emb), batch["x"])  # type: ignore[operator]

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"architecture": "scimilarity", "config": dict(self.config)}
