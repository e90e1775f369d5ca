"""The model protocol every annotator follows, baselines and foundation models alike."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import anndata as ad
import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from cellfoundry.artifacts import Manifest, load_genes
from cellfoundry.artifacts.heldout import HeldOutPredictions
from cellfoundry.data.prepare import (
    DEFAULT_MIN_COVERAGE,
    InputPlan,
    Representation,
    iter_features,
    normalise_over,
    plan_input,
)
from cellfoundry.data.report import ValidationReport
from cellfoundry.errors import CoverageError
from cellfoundry.ontology import LabelMapping, map_labels
from cellfoundry.stats.labels import UNKNOWN, no_evidence_rows, uniform_where

GenePanelMode = Literal["all_genes", "unobserved", "refit", "family_default"]


@dataclass
class GenePanel:
    """How the query's genes served the model: coverage and the mode that was used.

    ``mode``: ``all_genes`` (every model gene present), ``unobserved`` (missing model genes are
    unobserved: reference mean, standardised value 0), ``refit`` (the baseline was refit on the
    genes shared by its reference and the query) or ``family_default`` (a foundation model's own
    input encoding handles missing genes).
    """

    mode: GenePanelMode
    n_model_genes: int
    n_present: int
    description: str
    n_shared_genes: int | None = None  # refit: genes shared by reference and query
    reference: str | None = None  # refit: where the reference came from

    @property
    def coverage(self) -> float:
        return self.n_present / self.n_model_genes if self.n_model_genes else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON/uns-safe (no None values)."""
        d = {k: v for k, v in asdict(self).items() if v is not None}
        d["coverage"] = self.coverage
        return d

    @classmethod
    def from_coverage(cls, n_model: int, n_present: int, missing: str) -> GenePanel:
        """``all_genes`` when nothing is missing, else ``missing`` mode with a plain description."""
        if n_present >= n_model:
            return cls("all_genes", n_model, n_present, f"all {n_model:,} model genes present")
        how = (
            "treated as unobserved (reference mean, standardised value 0)"
            if missing == "unobserved"
            else "handled by the model family's own input encoding"
        )
        return cls(
            "unobserved" if missing == "unobserved" else "family_default",
            n_model,
            n_present,
            f"{n_present:,} of {n_model:,} model genes present ({n_present / n_model:.1%}); "
            f"the {n_model - n_present:,} missing genes are {how}",
        )


@dataclass(frozen=True)
class NoEvidence:
    """The cells of a prediction that hold no count on any gene the model reads (after gene
    alignment): the model has no evidence for them, they get uniform probabilities and are
    Unknown whatever the threshold (stats.labels). Counts add up over parts of a dataset."""

    n_cells: int  # cells without evidence
    n_total: int  # cells predicted
    n_genes: int  # the model's genes present in the data

    @property
    def warning(self) -> str | None:
        """What the user is told (None when every cell has evidence)."""
        if not self.n_cells:
            return None
        return (
            f"{self.n_cells:,} of {self.n_total:,} cells have no counts on any of the model's "
            f"{self.n_genes:,} genes in the data: they are called {UNKNOWN} (no evidence); check "
            "that they are cells (not empty droplets) and that the gene names match the model's"
        )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def combine(cls, parts: list[dict[str, int]]) -> NoEvidence:
        """The figures of the whole dataset from its parts' ``to_dict``s."""
        return cls(
            sum(int(p["n_cells"]) for p in parts),
            sum(int(p["n_total"]) for p in parts),
            max((int(p["n_genes"]) for p in parts), default=0),
        )


@dataclass
class Prediction:
    """Raw output of a model over a dataset, before thresholding."""

    probabilities: np.ndarray  # (n_cells, n_classes) float32
    plan: InputPlan | None
    embeddings: np.ndarray | None = None
    embedding_key: str | None = None
    warnings: list[str] = field(default_factory=list)
    gene_panel: GenePanel | None = None
    # extra per-cell columns (e.g. reference_distance) and dataset-level findings
    obs: dict[str, np.ndarray] = field(default_factory=dict)
    uns: dict[str, Any] = field(default_factory=dict)
    # additive statistics behind findings (an observer's ``parts()``), to combine the predictions
    # of parts of a dataset: e.g. ``marker_overlap`` -> MarkerCounts, ``no_evidence`` -> NoEvidence
    parts: dict[str, Any] = field(default_factory=dict)

    def note_no_evidence(self, empty: np.ndarray, n_genes: int) -> None:
        """Record the cells without evidence (``empty``, per cell; their probabilities already
        uniform): the warning with their count, and the count for combining parts."""
        found = NoEvidence(int(np.count_nonzero(empty)), len(empty), int(n_genes))
        self.parts["no_evidence"] = found
        if found.warning:
            self.warnings.append(found.warning)


class ChunkObserver(Protocol):
    """Sees every chunk of features with its probabilities; adds obs columns and findings."""

    def observe(self, start: int, x: sp.csr_matrix, proba: np.ndarray) -> None: ...

    def finish(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]: ...


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
        # keys of the cells it fit on (cellfoundry.artifacts.cells), written with the artifact
        self.training_cells: np.ndarray | None = None
        # predictions on reference cells it did not fit on (cellfoundry.artifacts.heldout)
        self.heldout_predictions: HeldOutPredictions | None = None

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
    # refuse only when a result cannot be trusted: under 5 % of the model's genes or < 100 genes
    # (missing genes are unobserved, so partial panels work; the library default gate is replaced)
    min_coverage: ClassVar[float] = 0.05
    min_genes: ClassVar[int] = 100

    def __init__(self, manifest: Manifest, genes: list[str]) -> None:
        super().__init__(manifest)
        self.genes = genes
        # a query-aware refit: count queries are normalised over these genes (the ones shared
        # with the reference, over which the reference was normalised); None: over all genes
        self.normalise_over: list[str] | None = None

    @abstractmethod
    def logits_or_proba(self, x: sp.csr_matrix, present: np.ndarray | None = None) -> np.ndarray:
        """Calibrated class probabilities for a block of aligned features.

        ``present`` (per model gene) marks the genes the data has; absent genes are unobserved
        (never read as zero expression). ``None``: every gene is present.
        """

    def probabilities(self, x: sp.csr_matrix, present: np.ndarray | None = None) -> np.ndarray:
        """``logits_or_proba``, except that a cell with no value on any model gene (no counts on
        them) gets the uniform distribution: the model has no evidence for it, and the cell is
        Unknown (stats.labels.called_mask). Every prediction path (annotate, /predict) uses this."""
        return self._probabilities(x, present)[0]

    def _probabilities(
        self, x: sp.csr_matrix, present: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``probabilities`` and the cells without evidence (per row of ``x``)."""
        empty = no_evidence_rows(x)
        return uniform_where(self.logits_or_proba(x, present), empty), empty

    def observers(self, plan: InputPlan, n_cells: int, *, explain: bool) -> list[ChunkObserver]:
        """What else is computed while the chunks stream past (none by default)."""
        return []

    def plan(
        self,
        adata: ad.AnnData,
        report: ValidationReport | None = None,
        min_coverage: float = DEFAULT_MIN_COVERAGE,
    ) -> InputPlan:
        """The input plan; ``min_coverage`` at the library default means this family's own gate."""
        mc = self.min_coverage if min_coverage == DEFAULT_MIN_COVERAGE else float(min_coverage)
        key_kind: Literal["symbol", "ensembl"] = (
            "ensembl" if self.manifest.gene_key_kind == "ensembl" else "symbol"
        )
        try:
            plan = plan_input(
                adata,
                self.genes,
                representation=self.representation,
                key_kind=key_kind,
                target_name=f"genes of model '{self.name}'",
                min_coverage=mc,
                min_genes=self.min_genes,
                report=report,
            )
            if self.normalise_over is not None:
                plan = normalise_over(plan, adata, self.normalise_over, key_kind)
            return plan
        except CoverageError as err:
            raise CoverageError(
                err.message,
                f"{err.hint}; or give the labelled reference the model was trained on "
                "(annotate(reference=...) / --reference REF) to refit it on the genes the query has",
            ) from err

    def predict(
        self,
        adata: ad.AnnData,
        *,
        report: ValidationReport | None = None,
        chunk_size: int = 10_000,
        min_coverage: float = DEFAULT_MIN_COVERAGE,
        progress: bool = False,
        explain: bool = False,
    ) -> Prediction:
        plan = self.plan(adata, report, min_coverage)
        watchers = self.observers(plan, adata.n_obs, explain=explain)
        out = np.empty((adata.n_obs, len(self.classes)), dtype=np.float32)
        bar = tqdm(
            total=adata.n_obs,
            unit="cells",
            desc=f"annotating with {self.name}",
            disable=not progress,
        )
        present = plan.present
        mask = plan.unobserved_mask
        no_evidence = np.zeros(adata.n_obs, dtype=bool)
        for start, x in iter_features(adata, plan, chunk_size):
            proba, empty = self._probabilities(x, mask)
            no_evidence[start : start + x.shape[0]] = empty
            out[start : start + x.shape[0]] = proba
            for w in watchers:
                w.observe(start, x, proba)
            bar.update(x.shape[0])
        bar.close()
        panel = GenePanel.from_coverage(len(present), int(present.sum()), "unobserved")
        pred = Prediction(
            probabilities=out, plan=plan, warnings=list(plan.warnings), gene_panel=panel
        )
        pred.note_no_evidence(no_evidence, int(present.sum()))
        for w in watchers:
            obs, uns = w.finish()
            pred.obs.update(obs)
            pred.uns.update(uns)
            parts = getattr(w, "parts", None)  # optional: findings that parts of a dataset add up
            if parts is not None:
                pred.parts.update(parts())
        return pred

    @staticmethod
    def _genes(folder: Path) -> list[str]:
        return load_genes(folder)
