"""The result of ``annotate()``: labels, confidence, Unknown calls, probabilities."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from cellfoundry.data.orthologs import OrthologyReport
from cellfoundry.data.report import Coverage
from cellfoundry.models.base import GenePanel
from cellfoundry.ontology import LabelMapping, map_labels, roll_up_classes, roll_up_counts
from cellfoundry.stats.labels import UNKNOWN, called_mask

PROBA_KEY = "cellfoundry_probabilities"
TERM_COLUMN = "predicted_cell_type_ontology_term_id"
LEVEL_COLUMN = "rolled_up_cell_type"
LEVEL_TERM_COLUMN = "rolled_up_cell_type_ontology_term_id"
OUT_OF_REFERENCE = "out_of_reference"


@dataclass
class AnnotationResult:
    """Per-cell predictions of one model over one dataset."""

    obs_names: pd.Index
    classes: list[str]
    probabilities: np.ndarray  # (n_cells, n_classes) float32
    threshold: float
    model_name: str
    model_family: str
    coverage: Coverage | None = None
    warnings: list[str] = field(default_factory=list)
    gene_mapping: str | None = None
    embeddings: np.ndarray | None = None
    embedding_key: str | None = None
    species: str | None = None  # of the data's genes (detected or given)
    orthology: OrthologyReport | None = None  # set when the data's genes were mapped to human
    adata: ad.AnnData | None = field(default=None, repr=False)
    ontology: LabelMapping | None = None  # class -> CL term; mapped from the names when None
    level: str | None = None  # report also at this broader CL term (roll-up), e.g. "T cell"
    gene_panel: GenePanel | None = None  # coverage and mode: all genes / unobserved / refit

    @property
    def gene_panel_mode(self) -> str | None:
        """``all_genes``, ``unobserved``, ``refit`` or ``family_default`` (see GenePanel)."""
        return None if self.gene_panel is None else self.gene_panel.mode

    # per-cell columns beside the predictions (reference_distance, out_of_reference,
    # prediction_top_genes) and dataset-level findings (reference_distance, marker_overlap)
    obs_columns: dict[str, np.ndarray] = field(default_factory=dict)
    findings: dict[str, Any] = field(default_factory=dict)
    # additive statistics behind findings, to combine results over parts of a dataset (shards):
    # ``marker_overlap`` -> cellfoundry.models.baselines.explain.MarkerCounts
    parts: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def n_cells(self) -> int:
        return int(self.probabilities.shape[0])

    @property
    def label_index(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def labels(self) -> np.ndarray:
        """The most probable label of every cell (never "Unknown")."""
        return np.asarray(self.classes, dtype=object)[self.label_index]

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1)

    @property
    def unknown(self) -> np.ndarray:
        """Below the threshold, or no evidence at all (uniform probabilities): see called_mask."""
        return ~called_mask(self.probabilities, self.threshold)

    @property
    def display_labels(self) -> np.ndarray:
        """Labels as shown to people: "Unknown" where the threshold rejects the call."""
        return np.where(self.unknown, UNKNOWN, self.labels)

    @property
    def class_terms(self) -> LabelMapping:
        """The Cell Ontology term of every class (``""`` for unmapped classes)."""
        if self.ontology is None:
            self.ontology = map_labels(self.classes)
        return self.ontology

    @property
    def term_ids(self) -> np.ndarray:
        """Per cell: the CL term of ``predicted_cell_type`` (the most probable class, as that column
        is); ``""`` for unmapped classes. Whether a call is trusted is ``prediction_unknown``."""
        per_class = np.asarray(self.class_terms.term_ids(self.classes), dtype=object)
        return per_class[self.label_index]

    def _class_rollup(self) -> tuple[list[str], list[str]]:
        """Per class: (name, term) at ``level``; an unmapped class keeps its own name, term ""."""
        assert self.level is not None
        return roll_up_classes(self.classes, self.class_terms.term_ids(self.classes), self.level)

    def _rolled_up(self) -> tuple[np.ndarray, np.ndarray]:
        """Per cell: (name, term) of ``predicted_cell_type`` rolled up to ``level``."""
        names, terms = self._class_rollup()
        idx = self.label_index
        return np.asarray(names, dtype=object)[idx], np.asarray(terms, dtype=object)[idx]

    def top_k(self, k: int = 3) -> list[list[tuple[str, float]]]:
        k = min(k, len(self.classes))
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return [
            [(self.classes[j], float(self.probabilities[i, j])) for j in row]
            for i, row in enumerate(order)
        ]

    def to_frame(self) -> pd.DataFrame:
        """One row per cell: predicted_cell_type, its CL term id, prediction_confidence,
        prediction_unknown, display_label, the extra columns the model produced (``obs_columns``)
        (+ the rolled-up name and term when ``level`` is set)."""
        df = pd.DataFrame(
            {
                "predicted_cell_type": pd.Categorical(self.labels, categories=self.classes),
                TERM_COLUMN: self.term_ids,
                "prediction_confidence": self.confidence.astype(np.float32),
                "prediction_unknown": self.unknown,
                "display_label": self.display_labels,
                **self.obs_columns,
            },
            index=pd.Index(self.obs_names, name="cell"),
        )
        if self.level is not None:
            df[LEVEL_COLUMN], df[LEVEL_TERM_COLUMN] = self._rolled_up()
        return df

    def out_of_reference_summary(self) -> dict[str, Any] | None:
        """Share of cells out of reference, overall and per predicted type (None without it)."""
        if OUT_OF_REFERENCE not in self.obs_columns:
            return None
        oor = np.asarray(self.obs_columns[OUT_OF_REFERENCE], dtype=bool)
        frame = pd.DataFrame({"type": self.labels, "oor": oor})
        per = frame.groupby("type", sort=True)["oor"].agg(["mean", "size"])
        info = self.findings.get("reference_distance", {})
        return {
            "share": float(oor.mean()) if self.n_cells else 0.0,
            "n_cells": int(oor.sum()),
            "threshold": info.get("threshold"),
            "by_predicted_type": {
                str(t): {"share": float(r["mean"]), "n_cells": int(r["size"])}
                for t, r in per.iterrows()
            },
        }

    def to_adata(self, adata: ad.AnnData | None = None) -> ad.AnnData:
        """Write predictions into ``adata`` (the annotated input by default) and return it."""
        target = adata if adata is not None else self.adata
        if target is None:
            target = ad.AnnData(obs=pd.DataFrame(index=self.obs_names))
        if target.isbacked:
            target = target.to_memory()
        if target.n_obs != self.n_cells:
            raise ValueError(f"result has {self.n_cells} cells, AnnData has {target.n_obs}")
        df = self.to_frame()
        first = ["predicted_cell_type", "prediction_confidence", "prediction_unknown"]
        for col in [*first, *self.obs_columns]:
            target.obs[col] = df[col].to_numpy() if col != "predicted_cell_type" else df[col].values
        cols = [TERM_COLUMN] + ([LEVEL_COLUMN, LEVEL_TERM_COLUMN] if self.level else [])
        for col in cols:
            target.obs[col] = pd.Categorical(df[col].astype(str).to_numpy())
        target.obsm[PROBA_KEY] = self.probabilities.astype(np.float32)
        if self.embeddings is not None and self.embedding_key:
            target.obsm[self.embedding_key] = self.embeddings
        target.uns["cellfoundry"] = {
            "model": self.model_name,
            "family": self.model_family,
            "classes": list(self.classes),
            "probability_key": PROBA_KEY,
            "unknown_threshold": float(self.threshold),
            "unknown_label": UNKNOWN,
            **self._ontology_uns(),
            **uns_safe(self.findings),
        }
        if self.warnings:  # e.g. the cells without evidence, with their count
            target.uns["cellfoundry"]["warnings"] = [str(w) for w in self.warnings]
        if self.orthology is not None:
            target.uns["cellfoundry"]["species_mapping"] = self.orthology.describe()
        if self.gene_panel is not None:
            target.uns["cellfoundry"]["gene_panel_mode"] = self.gene_panel.mode
            target.uns["cellfoundry"]["gene_panel"] = self.gene_panel.to_dict()
        oor = self.out_of_reference_summary()
        if oor is not None:
            target.uns["cellfoundry"]["out_of_reference"] = uns_safe(oor)
        return target

    def _ontology_uns(self) -> dict[str, Any]:
        """Class terms aligned with ``classes`` (h5ad-safe: no "/" keys, no None)."""
        m = self.class_terms
        out: dict[str, Any] = {
            "class_ontology_term_ids": m.term_ids(self.classes),
            "class_ontology_term_names": [m.term_name(c) for c in self.classes],
            "ontology": {"name": "CL", "version": m.ontology_version},
        }
        if self.level:
            out["ontology"]["level"] = self.level
        return out

    def summary(self) -> dict[str, Any]:
        counts = pd.Series(self.display_labels).value_counts()
        return {
            "model": self.model_name,
            "family": self.model_family,
            "n_cells": self.n_cells,
            "label_counts": {str(k): int(v) for k, v in counts.items()},
            "mean_confidence": float(self.confidence.mean()) if self.n_cells else 0.0,
            "unknown_share": float(self.unknown.mean()) if self.n_cells else 0.0,
            "unknown_threshold": float(self.threshold),
            "gene_coverage": None
            if self.coverage is None
            else float(self.coverage.fraction_present),
            "gene_mapping": self.gene_mapping,
            "species": self.species,
            "orthology": asdict(self.orthology) if self.orthology else None,
            "gene_panel_mode": self.gene_panel_mode,
            "gene_panel": None if self.gene_panel is None else self.gene_panel.to_dict(),
            "warnings": list(self.warnings),
            "ontology": self._ontology_summary(),
            **self.findings,
            **({"out_of_reference": oor} if (oor := self.out_of_reference_summary()) else {}),
        }

    def _ontology_summary(self) -> dict[str, Any]:
        m = self.class_terms
        out: dict[str, Any] = {
            "version": m.ontology_version,
            "terms": {c: {"id": m.term(c), "name": m.term_name(c)} for c in self.classes},
            "unmapped": [c for c in self.classes if not m.term(c)],
        }
        if self.level:  # the service rolls stored summaries up with the same function
            counts = pd.Series(self.display_labels).value_counts()
            out |= roll_up_counts(
                {str(k): int(v) for k, v in counts.items()},
                self.classes,
                m.term_ids(self.classes),
                self.level,
            )
        return out


#: "/" in an h5ad key makes a nested group ("CD4+/CD45RA+" would be read back as CD4+ ->
#: CD45RA+); keys (class names of per-type findings) carry this look-alike instead
UNS_KEY_SLASH = "\u2215"


def uns_safe(value: Any) -> Any:
    """A copy that h5ad can store: None entries dropped, tuples as lists, "/" in keys as
    ``UNS_KEY_SLASH`` (∕)."""
    if isinstance(value, dict):
        return {
            str(k).replace("/", UNS_KEY_SLASH): uns_safe(v)
            for k, v in value.items()
            if v is not None
        }
    if isinstance(value, list | tuple):
        return [uns_safe(v) for v in value if v is not None]
    return value
