"""What the baselines share: reference preparation, gene selection, artifact writing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import anndata as ad
import numpy as np
import scipy.sparse as sp

from cellfoundry.artifacts import (
    Manifest,
    cell_keys,
    load_arrays,
    load_genes,
    save_arrays,
    save_genes,
    write_training_cells,
)
from cellfoundry.artifacts.heldout import HeldOutPredictions, key_hashes, write_heldout
from cellfoundry.data.genes import gene_keys, genes_hash
from cellfoundry.data.matrix import source_var
from cellfoundry.data.prepare import InputPlan, features, plan_input
from cellfoundry.data.report import validate
from cellfoundry.errors import ModelError
from cellfoundry.models.base import ChunkObserver, FeatureAnnotator
from cellfoundry.models.baselines.distance import ReferenceDistance, fit_reference_distance
from cellfoundry.models.baselines.evidence import DistanceObserver, MarkerObserver, TopGenesObserver
from cellfoundry.models.baselines.explain import (
    MARKERS_KEY,
    N_TOP_GENES,
    display_names,
    reference_markers,
)
from cellfoundry.models.baselines.standardise import CLIP
from cellfoundry.models.fitting import (
    FitFn,
    Labels,
    ScoreFn,
    data_sha256,
    fit_with_holdout,
    read_labels,
)

PREPROCESSING = {
    "representation": "lognorm",
    "normalisation": "per-cell total counts (over all input genes) scaled to 10,000, then natural log1p; "
    "log-normalised input is used as given",
    "alignment": "model genes matched by name (symbol or Ensembl ID, version stripped); a model gene "
    "absent from the query is unobserved: it gets the reference mean (standardised value 0)",
    "standardisation": f"(x - reference mean) / reference sd, clipped at ±{CLIP:g}",
}


@dataclass
class PreparedReference:
    x: sp.csr_matrix  # lognorm, kept cells x selected genes
    genes: list[str]
    key_kind: str
    labels: Labels
    source: str
    n_cells_total: int
    symbols: list[str] | None = None  # display symbols of ``genes`` when they are Ensembl IDs
    cell_keys: np.ndarray | None = None  # of the kept cells (cellfoundry.artifacts.cells)


def reference_genes(adata: ad.AnnData, source: str) -> tuple[list[str], str]:
    """The reference's own gene list (first occurrence of duplicates) and its key kind."""
    genes, kind, _ = _reference_keys(adata, source)
    return genes, kind


def _reference_keys(adata: ad.AnnData, source: str) -> tuple[list[str], str, dict[str, str]]:
    """``reference_genes`` plus the symbol of each Ensembl gene (the reference's own, for display)."""
    names, var = source_var(adata, source)
    keys = gene_keys(list(names), var)
    if keys.id_kind.startswith("ensembl"):
        raw = [e or n for e, n in zip(keys.ensembl, keys.names, strict=True)]
        symbols = {g: s for g, s in zip(raw, keys.symbols, strict=True) if s}
        kind = "ensembl"
    else:
        raw = [s or n for s, n in zip(keys.symbols, keys.names, strict=True)]
        symbols = {}
        kind = "symbol"
    return list(dict.fromkeys(raw)), kind, symbols


def select_variable_genes(x: sp.csr_matrix, n_features: int | None) -> np.ndarray:
    """Indices of the ``n_features`` most variable genes (Seurat dispersion, via scanpy), sorted."""
    if not n_features or n_features >= x.shape[1]:
        return np.arange(x.shape[1])
    import scanpy as sc

    tmp = ad.AnnData(X=x.copy())
    sc.pp.highly_variable_genes(tmp, n_top_genes=n_features, flavor="seurat")
    return np.sort(np.nonzero(tmp.var["highly_variable"].to_numpy())[0])


def prepare_reference(
    adata: ad.AnnData, label_key: str, n_features: int | None
) -> PreparedReference:
    report = validate(adata)
    labels = read_labels(adata, label_key)
    src = report.chosen["counts"] or report.chosen["lognorm"] or "X"
    genes, kind, symbols = _reference_keys(adata, src)
    plan = plan_input(adata, genes, key_kind=kind, report=report, target_name="reference genes")  # type: ignore[arg-type]
    x = features(adata, plan)[labels.keep]
    sel = select_variable_genes(x, n_features)
    keys = cell_keys(adata)[labels.keep]
    return PreparedReference(
        x=x[:, sel].tocsr(),
        genes=[genes[i] for i in sel],
        key_kind=kind,
        labels=labels,
        source=plan.source,
        n_cells_total=adata.n_obs,
        symbols=[symbols.get(genes[i], genes[i]) for i in sel] if symbols else None,
        cell_keys=keys,
    )


SYMBOLS_FILE = "gene_symbols.txt"


def write_artifact(
    folder: str | Path,
    manifest: Manifest,
    arrays: dict[str, np.ndarray],
    genes: list[str],
    symbols: list[str] | None = None,
) -> Path:
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    save_arrays(path, arrays)
    save_genes(path, genes)
    if symbols is not None:
        save_genes(path, symbols, name=SYMBOLS_FILE)
    manifest.write(path)
    return path


class StateAnnotator(FeatureAnnotator):
    """A baseline whose whole state is a dict of arrays (saved as safetensors)."""

    def __init__(
        self,
        manifest: Manifest,
        genes: list[str],
        state: dict[str, np.ndarray],
        symbols: list[str] | None = None,
    ) -> None:
        super().__init__(manifest, genes)
        self.state = state
        # the reference's own symbols of Ensembl-keyed genes, for explanations
        self.symbols = symbols if symbols is not None and len(symbols) == len(genes) else None

    @classmethod
    def _train(
        cls,
        ref: PreparedReference,
        fit: FitFn,
        score: ScoreFn,
        params: dict[str, Any],
        *,
        name: str,
        seed: int,
        holdout_fraction: float,
        refit: bool,
        label_key: str,
        progress: bool,
        cv_folds: int = 0,
    ) -> Self:
        """Fit with a held-out split (metrics, temperature, Unknown threshold), then refit.

        ``cv_folds`` > 1 also keeps out-of-fold predictions of every labelled cell (for weighing
        the model in a consensus; ``cv_folds`` more fits), else the held-out parts' predictions.
        """
        out = fit_with_holdout(
            ref.x,
            ref.labels.y,
            ref.labels.classes,
            fit,
            score,
            seed=seed,
            holdout_fraction=holdout_fraction,
            refit=refit,
            progress=progress,
            cv_folds=cv_folds,
        )
        counts = np.bincount(ref.labels.y, minlength=len(ref.labels.classes))
        heldout = out.holdout["index"]
        dist = fit_reference_distance(
            ref.x[np.setdiff1d(np.arange(len(ref.labels.y)), heldout)], ref.x[heldout], seed=seed
        )
        n_classes = len(ref.labels.classes)
        state = (
            out.state
            | dist.to_state()
            | reference_markers(ref.x, ref.labels.y, n_classes)
            | cls.explain_state(ref.x, ref.labels.y, n_classes)
        )
        manifest = Manifest(
            family=cls.family,
            name=name,
            classes=ref.labels.classes,
            genes_sha256=genes_hash(ref.genes),
            n_genes=len(ref.genes),
            gene_key_kind=ref.key_kind,
            preprocessing=dict(PREPROCESSING),
            unknown_threshold=out.threshold,
            temperature=out.temperature,
            params=params | {"seed": seed},
            metrics=out.metrics,
            training={
                "label_key": label_key,
                "n_cells": len(ref.labels.y),
                "n_cells_in_file": ref.n_cells_total,
                "dropped": ref.labels.dropped,
                "matrix": ref.source,
                "class_counts": {
                    c: int(n) for c, n in zip(ref.labels.classes, counts, strict=True)
                },
                "data_sha256": data_sha256(ref.x, ref.labels.y),
                "holdout_fraction": holdout_fraction,
                "refit_on_all": refit,
            },
            extra={"reference_distance": dist.describe()},
        )
        model = cls(manifest, ref.genes, state, ref.symbols)
        model.holdout = out.holdout
        if ref.cell_keys is not None:
            model.training_cells = ref.cell_keys[out.holdout["train_index"]]
            pred = out.predictions
            model.heldout_predictions = HeldOutPredictions(
                key_hashes(ref.cell_keys[pred["index"]]), pred["y"], pred["proba"], pred["kind"]
            )
            manifest.training["heldout_predictions"] = model.heldout_predictions.describe() | (
                {"folds": pred["folds"]} if "folds" in pred else {}
            )
        return model

    def save(self, folder: str | Path) -> Path:
        if self.training_cells is not None:
            write_training_cells(folder, self.training_cells)
        if self.heldout_predictions is not None:
            write_heldout(folder, self.heldout_predictions)
        return write_artifact(folder, self.manifest, self.state, self.genes, self.symbols)

    @classmethod
    def explain_state(
        cls, x: sp.csr_matrix, y: np.ndarray, n_classes: int
    ) -> dict[str, np.ndarray]:
        """Arrays the family needs to explain its calls, computed at training time (none by default)."""
        return {}

    def contributions(
        self, x: sp.csr_matrix, called: np.ndarray, present: np.ndarray
    ) -> np.ndarray:
        """(cells, genes) contribution of each gene to the called class (``explain=True``)."""
        raise ModelError(
            f"model '{self.name}' ({self.family}) cannot explain its calls",
            "retrain it with this version of cellfoundry, or annotate without explain",
            code="explain_unavailable",
        )

    def observers(self, plan: InputPlan, n_cells: int, *, explain: bool) -> list[ChunkObserver]:
        present = plan.present
        names = display_names(self.symbols or self.genes)
        out: list[ChunkObserver] = []
        dist = ReferenceDistance.from_state(self.state)
        if dist is not None:
            out.append(DistanceObserver(dist, n_cells, present))
        if MARKERS_KEY in self.state:
            out.append(MarkerObserver(self.state[MARKERS_KEY], self.classes, names, present))
        if explain:
            self.contributions(
                sp.csr_matrix((0, len(self.genes)), dtype=np.float32),
                np.zeros(0, np.int64),
                present,
            )
            out.append(TopGenesObserver(self.contributions, names, n_cells, present, N_TOP_GENES))
        return out

    @classmethod
    def load(cls, folder: str | Path, manifest: Manifest) -> Self:
        path = Path(folder)
        symbols = load_genes(path, SYMBOLS_FILE) if (path / SYMBOLS_FILE).is_file() else None
        return cls(manifest, cls._genes(path), load_arrays(path), symbols)
