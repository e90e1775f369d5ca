"""The model protocol every annotator follows, baselines and foundation models alike."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import anndata as ad
import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from cellfoundry.artifacts import Manifest, load_genes
from cellfoundry.data.prepare import (
    DEFAULT_MIN_COVERAGE,
    InputPlan,
    Representation,
    iter_features,
    plan_input,
)
from cellfoundry.data.report import ValidationReport
from cellfoundry.ontology import LabelMapping, map_labels


@dataclass
class Prediction:
    """Raw output of a model over a dataset, before thresholding."""

    probabilities: np.ndarray  # (n_cells, n_classes) float32
    plan: InputPlan | None
    embeddings: np.ndarray | None = None
    embedding_key: str | None = None
    warnings: list[str] = field(default_factory=list)


class Annotator(ABC):
    """A trained cell-type annotator stored as an artifact folder.

    Subclasses set ``family`` and implement ``save``/``load`` and prediction. Every annotator has
    classes, an Unknown threshold chosen on held-out cells, and a manifest.
    """

    family: ClassVar[str]

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        # held-out predictions from training (index, y, proba); None for loaded models
        self.holdout: dict[str, np.ndarray] | None = None

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def classes(self) -> list[str]:
        return list(self.manifest.classes)

    @property
    def threshold(self) -> float:
        return float(self.manifest.unknown_threshold)

    @property
    def ontology(self) -> LabelMapping:
        """The Cell Ontology term of every class: as stored at training, else mapped now."""
        stored = LabelMapping.from_dict(self.manifest.ontology or {})
        return map_labels(self.classes, base=stored if stored.matches else None)

    def set_label_map(self, label_map: str | Path | dict[str, str] | None) -> LabelMapping:
        """Map the classes to CL terms (``label_map`` wins) and keep it in the manifest."""
        mapping = map_labels(self.classes, label_map, base=self.ontology)
        self.manifest.ontology = mapping.to_dict()
        return mapping

    @abstractmethod
    def predict(
        self,
        adata: ad.AnnData,
        *,
        report: ValidationReport | None = None,
        chunk_size: int = 10_000,
        min_coverage: float = DEFAULT_MIN_COVERAGE,
        progress: bool = False,
    ) -> Prediction:
        """Class probabilities for every cell of ``adata``, in its cell order."""

    @abstractmethod
    def save(self, folder: str | Path) -> Path:
        """Write the artifact folder (manifest + safetensors)."""

    @classmethod
    @abstractmethod
    def load(cls, folder: str | Path, manifest: Manifest) -> Annotator:
        """Read an artifact folder written by ``save``."""

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "name": m.name,
            "family": m.family,
            "version": m.version,
            "classes": m.classes,
            "n_genes": m.n_genes,
            "unknown_threshold": m.unknown_threshold,
            "metrics": m.metrics,
        }


class FeatureAnnotator(Annotator):
    """An annotator working on a fixed gene list after the shared preprocessing (baselines, heads)."""

    representation: ClassVar[Representation] = "lognorm"

    def __init__(self, manifest: Manifest, genes: list[str]) -> None:
        super().__init__(manifest)
        self.genes = genes

    @abstractmethod
    def logits_or_proba(self, x: sp.csr_matrix) -> np.ndarray:
        """Calibrated class probabilities for a block of aligned features."""

    def plan(
        self,
        adata: ad.AnnData,
        report: ValidationReport | None = None,
        min_coverage: float = DEFAULT_MIN_COVERAGE,
    ) -> InputPlan:
        return plan_input(
            adata,
            self.genes,
            representation=self.representation,
            key_kind="ensembl" if self.manifest.gene_key_kind == "ensembl" else "symbol",
            target_name=f"genes of model '{self.name}'",
            min_coverage=min_coverage,
            report=report,
        )

    def predict(
        self,
        adata: ad.AnnData,
        *,
        report: ValidationReport | None = None,
        chunk_size: int = 10_000,
        min_coverage: float = DEFAULT_MIN_COVERAGE,
        progress: bool = False,
    ) -> Prediction:
        plan = self.plan(adata, report, min_coverage)
        out = np.empty((adata.n_obs, len(self.classes)), dtype=np.float32)
        bar = tqdm(
            total=adata.n_obs,
            unit="cells",
            desc=f"annotating with {self.name}",
            disable=not progress,
        )
        for start, x in iter_features(adata, plan, chunk_size):
            out[start : start + x.shape[0]] = self.logits_or_proba(x)
            bar.update(x.shape[0])
        bar.close()
        return Prediction(probabilities=out, plan=plan, warnings=plan.warnings)

    @staticmethod
    def _genes(folder: Path) -> list[str]:
        return load_genes(folder)
