"""A tiny FoundationModel family for integration tests: a fixed random projection of log1p-CP10k.

Each toy family writes its own marker file (``toy_<family>.json``) plus ``projection.safetensors``,
so detection, strict loading, ``--family`` overrides and per-family obsm keys can be tested
without the real families. ``install_toy_families`` swaps them into ``FOUNDATION_FAMILIES``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import anndata as ad
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

from cellfoundry.artifacts import sha256_file
from cellfoundry.data.prepare import iter_features, plan_input
from cellfoundry.data.report import ValidationReport
from cellfoundry.models.foundation import (
    FOUNDATION_FAMILIES,
    CheckpointError,
    FoundationModel,
    LoadReport,
)

WEIGHTS = "projection.safetensors"


class ToyModel(FoundationModel):
    family: ClassVar[str] = "toy"
    embedding_key: ClassVar[str] = "X_toy"
    gene_key_kind: ClassVar[str] = "symbol"
    max_rows_seen: ClassVar[int] = 0  # largest block of cells embedded at once (streaming check)

    def __init__(
        self, folder: Path, genes: list[str], w: np.ndarray, variant: str, report: LoadReport
    ) -> None:
        self.checkpoint_dir = folder
        self._genes = genes
        self.w = w
        self.variant = variant
        self.load_report = report
        self.network = torch.nn.Linear(len(genes), w.shape[1], bias=False)

    @classmethod
    def marker(cls) -> str:
        return f"toy_{cls.family}.json"

    @classmethod
    def detect(cls, folder: Path) -> bool:
        return (Path(folder) / cls.marker()).is_file()

    @classmethod
    def load(cls, folder: str | Path, *, verify: bool = True) -> ToyModel:
        p = Path(folder)
        if not (p / cls.marker()).is_file():
            raise CheckpointError(f"{p} has no {cls.marker()}", "pass a toy checkpoint folder")
        if not (p / WEIGHTS).is_file():
            raise CheckpointError(f"{p} lacks {WEIGHTS}", "write the projection weights")
        meta = json.loads((p / cls.marker()).read_text())
        w = load_file(str(p / WEIGHTS))["W"]
        rep = LoadReport(
            family=cls.family,
            variant=meta["variant"],
            files={n: sha256_file(p / n) for n in (cls.marker(), WEIGHTS)},
        )
        if w.shape != (len(meta["genes"]), meta["dim"]):
            rep.shape_mismatches.append(
                f"W: {list(w.shape)} vs {[len(meta['genes']), meta['dim']]}"
            )
        rep.raise_if_bad(p)
        return cls(p, list(meta["genes"]), w, meta["variant"], rep)

    @classmethod
    def write(
        cls, folder: Path, genes: list[str], dim: int = 8, seed: int = 0, variant: str = "toy-v1"
    ) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        w = np.random.default_rng(seed).normal(size=(len(genes), dim)).astype(np.float32)
        save_file({"W": w}, str(folder / WEIGHTS))
        (folder / cls.marker()).write_text(
            json.dumps({"variant": variant, "genes": genes, "dim": dim})
        )
        return folder

    @property
    def embedding_dim(self) -> int:
        return int(self.w.shape[1])

    @property
    def genes(self) -> list[str]:
        return list(self._genes)

    def embed(
        self,
        adata: ad.AnnData,
        *,
        batch_size: int = 32,
        seed: int = 0,
        progress: bool = False,
        report: ValidationReport | None = None,
        out: Any = None,
    ) -> Any:
        plan = plan_input(
            adata,
            self._genes,
            representation="lognorm",
            key_kind=self.gene_key_kind,  # type: ignore[arg-type]
            report=report,
            min_coverage=0.0,
            min_genes=1,
        )
        if out is None:
            out = np.empty((adata.n_obs, self.embedding_dim), dtype=np.float32)
        bar = tqdm(total=adata.n_obs, disable=not progress, desc=f"embedding ({self.family})")
        for start, x in iter_features(adata, plan, batch_size):
            type(self).max_rows_seen = max(type(self).max_rows_seen, x.shape[0])
            out[start : start + x.shape[0]] = np.tanh(np.asarray(x @ self.w))
            bar.update(x.shape[0])
        bar.close()
        return out

    def tokenize(
        self, adata: ad.AnnData, *, seed: int = 0, report: ValidationReport | None = None
    ) -> list[dict[str, np.ndarray]]:
        raise NotImplementedError

    def no_evidence(self, cells: list[dict[str, np.ndarray]]) -> np.ndarray:
        raise NotImplementedError

    def collate(self, cells: list[dict[str, np.ndarray]]) -> dict[str, Any]:
        raise NotImplementedError

    def forward_embeddings(self, batch: dict[str, Any]) -> Any:
        raise NotImplementedError

    @classmethod
    def from_random(
        cls, genes: list[str], *, variant: str | None = None, seed: int = 0
    ) -> FoundationModel:
        raise NotImplementedError


class ToyGeneformer(ToyModel):
    family: ClassVar[str] = "geneformer"
    embedding_key: ClassVar[str] = "X_geneformer"
    gene_key_kind: ClassVar[str] = "ensembl"


class ToyScGPT(ToyModel):
    family: ClassVar[str] = "scgpt"
    embedding_key: ClassVar[str] = "X_scgpt"


class ToySCimilarity(ToyModel):
    family: ClassVar[str] = "scimilarity"
    embedding_key: ClassVar[str] = "X_scimilarity"


TOYS: dict[str, type[ToyModel]] = {
    "geneformer": ToyGeneformer,
    "scgpt": ToyScGPT,
    "scimilarity": ToySCimilarity,
}


def install_toy_families(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every foundation family resolve to its toy stand-in (for this test only)."""
    for fam, cls in TOYS.items():
        monkeypatch.setitem(FOUNDATION_FAMILIES, fam, f"{__name__}:{cls.__name__}")
