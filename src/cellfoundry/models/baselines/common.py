"""What the baselines share: reference preparation, gene selection, artifact writing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import anndata as ad
import numpy as np
import scipy.sparse as sp

from cellfoundry.artifacts import Manifest, load_arrays, save_arrays, save_genes
from cellfoundry.data.genes import gene_keys, genes_hash
from cellfoundry.data.matrix import source_var
from cellfoundry.data.prepare import features, plan_input
from cellfoundry.data.report import validate
from cellfoundry.models.base import FeatureAnnotator
from cellfoundry.models.fitting import (
    FitFn,
    Labels,
    ScoreFn,
    data_sha256,
    fit_with_holdout,
    read_labels,
)

CLIP = 10.0  # standardised values are clipped at ±CLIP (CellTypist clips at 10)

PREPROCESSING = {
    "representation": "lognorm",
    "normalisation": "per-cell total counts (over all input genes) scaled to 10,000, then natural log1p; "
    "log-normalised input is used as given",
    "alignment": "model genes matched by name (symbol or Ensembl ID, version stripped); a model gene "
    "absent from the query is unobserved: it gets the reference mean (standardised value 0)",
    "standardisation": f"(x - reference mean) / reference sd, clipped at ±{CLIP:g}",
}


def standardise(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Dense ``clip((x - mean) / scale, ±CLIP)`` (training side)."""
    return np.clip((x - mean) / scale, -CLIP, CLIP)


def standardised_product(
    x: sp.csr_matrix,
    mean: np.ndarray,
    scale: np.ndarray,
    m: np.ndarray,
    present: np.ndarray | None = None,
) -> np.ndarray:
    """``standardise(x) @ m`` with absent genes (``present`` False) at standardised value 0.

    Computed without densifying ``x``: every zero of gene j has the same standardised value
    ``z0_j = clip(-mean_j / scale_j)``, so the product is ``z0 @ m`` plus a sparse correction at the
    stored entries. An absent gene is unobserved, not zero: it contributes nothing (z = 0), as if
    it had the reference mean (CellTypist drops such features the same way).
    """
    mean64 = np.asarray(mean, dtype=np.float64)
    scale64 = np.asarray(scale, dtype=np.float64)
    m64 = np.asarray(m, dtype=np.float64)
    z0 = np.clip(-mean64 / scale64, -CLIP, CLIP)
    if present is not None:
        z0 = np.where(present, z0, 0.0)
    x = sp.csr_matrix(x)
    cols = x.indices
    z = np.clip((x.data.astype(np.float64) - mean64[cols]) / scale64[cols], -CLIP, CLIP)
    delta = sp.csr_matrix((z - z0[cols], cols, x.indptr), shape=x.shape)
    return np.asarray(delta @ m64) + z0 @ m64


@dataclass
class PreparedReference:
    x: sp.csr_matrix  # lognorm, kept cells x selected genes
    genes: list[str]
    key_kind: str
    labels: Labels
    source: str
    n_cells_total: int


def reference_genes(adata: ad.AnnData, source: str) -> tuple[list[str], str]:
    """The reference's own gene list (first occurrence of duplicates) and its key kind."""
    names, var = source_var(adata, source)
    keys = gene_keys(list(names), var)
    if keys.id_kind.startswith("ensembl"):
        raw = [e or n for e, n in zip(keys.ensembl, keys.names, strict=True)]
        kind = "ensembl"
    else:
        raw = [s or n for s, n in zip(keys.symbols, keys.names, strict=True)]
        kind = "symbol"
    return list(dict.fromkeys(raw)), kind


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
    genes, kind = reference_genes(adata, src)
    plan = plan_input(adata, genes, key_kind=kind, report=report, target_name="reference genes")  # type: ignore[arg-type]
    x = features(adata, plan)[labels.keep]
    sel = select_variable_genes(x, n_features)
    return PreparedReference(
        x=x[:, sel].tocsr(),
        genes=[genes[i] for i in sel],
        key_kind=kind,
        labels=labels,
        source=plan.source,
        n_cells_total=adata.n_obs,
    )


def write_artifact(
    folder: str | Path, manifest: Manifest, arrays: dict[str, np.ndarray], genes: list[str]
) -> Path:
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    save_arrays(path, arrays)
    save_genes(path, genes)
    manifest.write(path)
    return path


class StateAnnotator(FeatureAnnotator):
    """A baseline whose whole state is a dict of arrays (saved as safetensors)."""

    def __init__(self, manifest: Manifest, genes: list[str], state: dict[str, np.ndarray]) -> None:
        super().__init__(manifest, genes)
        self.state = state

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
    ) -> Self:
        """Fit with a held-out split (metrics, temperature, Unknown threshold), then refit."""
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
        )
        counts = np.bincount(ref.labels.y, minlength=len(ref.labels.classes))
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
        )
        model = cls(manifest, ref.genes, out.state)
        model.holdout = out.holdout
        return model

    def save(self, folder: str | Path) -> Path:
        return write_artifact(folder, self.manifest, self.state, self.genes)

    @classmethod
    def load(cls, folder: str | Path, manifest: Manifest) -> Self:
        return cls(manifest, cls._genes(Path(folder)), load_arrays(Path(folder)))
