"""Query-aware refit: a baseline whose genes the query covers poorly is refit on the shared genes.

Missing genes are unobserved (standardised value 0) by default. When fewer than ``refit_below`` of
the model's genes are in the query and the labelled reference is at hand, the baseline is trained
again, with its own parameters, on the genes that the reference and the query share, and the
result says so. The reference is at hand when it is given (``annotate(reference=...)``,
``--reference``) or when the manifest records the file it was trained from (path + sha256) and
that file is still there, unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellfoundry.artifacts import sha256_file
from cellfoundry.data.genes import align_genes, genes_hash
from cellfoundry.data.io import as_anndata
from cellfoundry.data.matrix import iter_checked_chunks
from cellfoundry.data.prepare import (
    DEFAULT_MIN_COVERAGE,
    features,
    plan_input,
    select_columns,
)
from cellfoundry.data.report import ValidationReport, coverage, dataset_gene_keys, validate
from cellfoundry.data.species import to_human_space
from cellfoundry.errors import CoverageError, DataError
from cellfoundry.models.base import GenePanel, Prediction
from cellfoundry.models.baselines.common import StateAnnotator, reference_genes

DEFAULT_REFIT_BELOW = 0.8  # refit when fewer of the model's genes are in the query
MIN_SHARED_GENES = 100  # never refit on fewer genes
REFERENCE_FILE_KEY = "reference_file"  # manifest.training entry: {"path", "sha256"}
_CACHE_SIZE = 4


@dataclass
class ReferenceAtHand:
    adata: ad.AnnData
    description: str
    fingerprint: str | None  # sha256 of the file (refits are cached per model x gene set)


def reference_record(path: str | Path) -> dict[str, str]:
    """What the manifest keeps about a reference file: absolute path and sha256."""
    p = Path(path).resolve()
    return {"path": str(p), "sha256": _sha256_cached(p)}


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _sha256_cached(p: Path) -> str:
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_file(p)
    return _SHA_CACHE[key]


def reference_at_hand(
    model: StateAnnotator, reference: ad.AnnData | str | Path | None
) -> tuple[ReferenceAtHand | None, list[str]]:
    """The reference to refit on, if any, and warnings (e.g. the recorded file changed)."""
    species = model.manifest.training.get("species")  # as training saw it (given or detected)
    if reference is not None:
        if isinstance(reference, str | Path):
            p = Path(reference)
            return ReferenceAtHand(
                _human(as_anndata(p), species), f"given reference {p}", _sha256_cached(p.resolve())
            ), []
        return ReferenceAtHand(_human(reference, species), "given reference (in memory)", None), []
    rec = model.manifest.training.get(REFERENCE_FILE_KEY)
    if not isinstance(rec, dict) or "path" not in rec:
        return None, []
    p = Path(str(rec["path"]))
    if not p.is_file():
        return None, [f"the reference recorded in the model ({p}) is no longer there; not refit"]
    sha = _sha256_cached(p)
    if sha != rec.get("sha256"):
        return None, [
            f"the reference recorded in the model ({p}) has changed since training "
            "(sha256 differs); not used for a refit"
        ]
    return ReferenceAtHand(
        _human(as_anndata(p), species), f"reference file recorded in the model: {p}", sha
    ), []


def _human(adata: ad.AnnData, species: object = None) -> ad.AnnData:
    """The reference in human genes, as training saw it (non-human genes mapped to orthologs)."""
    return to_human_space(adata, species if isinstance(species, str) else None)[0]


def shared_genes(
    reference: ad.AnnData, query: ad.AnnData, query_report: ValidationReport
) -> tuple[list[str], str]:
    """Reference genes (its own key kind) that the query has, in reference order."""
    rep = validate(reference)
    src = rep.chosen["counts"] or rep.chosen["lognorm"] or "X"
    genes, kind = reference_genes(reference, src)
    qsrc = query_report.chosen["counts"] or query_report.chosen["lognorm"] or "X"
    al = align_genes(dataset_gene_keys(query, query_report, qsrc), genes, kind)  # type: ignore[arg-type]
    return [g for g, i in zip(genes, al.source_index, strict=True) if i >= 0], kind


def restricted_reference(
    reference: ad.AnnData, genes: list[str], key_kind: str, label_key: str, over_shared: bool
) -> ad.AnnData:
    """The reference on ``genes`` only, as a new AnnData.

    ``over_shared``: keep raw counts so that training normalises each cell over the shared genes,
    as the query's counts are normalised over its own genes; otherwise (a log-normalised query)
    keep the reference's log-normalised values, normalised over all its genes.
    """
    rep = validate(reference)
    plan = plan_input(
        reference,
        genes,
        key_kind=key_kind,  # type: ignore[arg-type]
        target_name="genes shared with the query",
        min_coverage=0.0,
        min_genes=0,
        report=rep,
    )
    if over_shared and plan.source_kind in ("raw_counts", "noninteger_counts"):
        x = sp.vstack(
            [
                select_columns(sp.csr_matrix(r, dtype=np.float32), plan)
                for _, r in iter_checked_chunks(reference, plan.source)
            ],
            format="csr",
        )
    else:
        x = features(reference, plan)
    if label_key not in reference.obs.columns:
        raise DataError(
            f"the reference has no obs column '{label_key}' (the model's label column)",
            "give the labelled reference the model was trained on",
            code="missing_label_key",
        )
    return ad.AnnData(
        X=x,
        obs=pd.DataFrame(
            {label_key: reference.obs[label_key].to_numpy()}, index=reference.obs_names
        ),
        var=pd.DataFrame(index=pd.Index(genes)),
    )


_REFITS: OrderedDict[tuple[str, ...], StateAnnotator] = OrderedDict()


def refit_on_genes(
    model: StateAnnotator, ref: ReferenceAtHand, genes: list[str], key_kind: str, over_shared: bool
) -> StateAnnotator:
    """Train ``model``'s family again, with its parameters, on ``genes`` of the reference (cached)."""
    m = model.manifest
    key = (
        m.name,
        m.genes_sha256,
        m.created_at,
        str(ref.fingerprint),
        genes_hash(genes),
        str(over_shared),
    )
    if ref.fingerprint is not None and key in _REFITS:
        _REFITS.move_to_end(key)
        return _REFITS[key]
    label_key = str(m.training.get("label_key", "cell_type"))
    sub = restricted_reference(ref.adata, genes, key_kind, label_key, over_shared)
    params: dict[str, Any] = dict(m.params)
    extra = {
        "holdout_fraction": m.training.get("holdout_fraction", 0.2),
        "refit": m.training.get("refit_on_all", True),
    }
    fitted = type(model).train(sub, label_key, name=m.name, **params, **extra)  # type: ignore[attr-defined]
    fitted.manifest.training["refit_of"] = {"model": m.name, "genes_sha256": m.genes_sha256}
    if over_shared:  # the reference was normalised over the shared genes: so is the query
        fitted.normalise_over = list(genes)
    if ref.fingerprint is not None:
        _REFITS[key] = fitted
        while len(_REFITS) > _CACHE_SIZE:
            _REFITS.popitem(last=False)
    return fitted  # type: ignore[no-any-return]


def predict_with_panel(
    model: StateAnnotator,
    adata: ad.AnnData,
    *,
    report: ValidationReport | None = None,
    reference: ad.AnnData | str | Path | None = None,
    refit_below: float = DEFAULT_REFIT_BELOW,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    chunk_size: int = 10_000,
    progress: bool = False,
    explain: bool = False,
) -> tuple[Prediction, StateAnnotator]:
    """Predict with missing genes unobserved, or refit on the shared genes when coverage is low.

    Returns the prediction and the annotator that made it (the refit one, when refit).
    """
    report = report if report is not None else validate(adata)
    key_kind = "ensembl" if model.manifest.gene_key_kind == "ensembl" else "symbol"
    cov = coverage(adata, report, model.genes, f"genes of model '{model.name}'", key_kind)  # type: ignore[arg-type]
    warnings: list[str] = []
    if cov.fraction_present < refit_below:
        ref, warnings = reference_at_hand(model, reference)
        if ref is not None:
            genes, kind = shared_genes(ref.adata, adata, report)
            if len(genes) < MIN_SHARED_GENES:
                raise CoverageError(
                    f"only {len(genes)} genes are shared by the reference and the query "
                    f"(at least {MIN_SHARED_GENES} are needed for a refit)",
                    "check that the query's gene names are symbols or Ensembl IDs of the same "
                    "species as the reference",
                )
            src = report.chosen["lognorm"]
            info = report.matrix(src) if src else None
            over_shared = info is not None and info.kind in ("raw_counts", "noninteger_counts")
            fitted = refit_on_genes(model, ref, genes, kind, over_shared)
            pred = fitted.predict(
                adata,
                report=report,
                min_coverage=0.0,
                chunk_size=chunk_size,
                progress=progress,
                explain=explain,
            )
            pred.gene_panel = GenePanel(
                mode="refit",
                n_model_genes=cov.n_target,
                n_present=cov.n_present,
                description=(
                    f"refit on {len(fitted.genes):,} of the {len(genes):,} genes shared by the "
                    f"reference and the query: only {cov.n_present:,} of the model's "
                    f"{cov.n_target:,} genes ({cov.fraction_present:.1%}) are in the query"
                ),
                n_shared_genes=len(genes),
                reference=ref.description,
            )
            pred.warnings = warnings + [w for w in pred.warnings if "genes are present" not in w]
            return pred, fitted
        if not warnings:
            warnings = [
                f"only {cov.fraction_present:.1%} of the model's {cov.n_target:,} genes are in the "
                f"query (refit level {refit_below:.0%}); give the labelled reference "
                "(reference= / --reference REF) to refit the model on the shared genes"
            ]
    pred = model.predict(
        adata,
        report=report,
        min_coverage=min_coverage,
        chunk_size=chunk_size,
        progress=progress,
        explain=explain,
    )
    pred.warnings = warnings + pred.warnings
    return pred, model


def clear_refit_cache() -> None:
    _REFITS.clear()
    _SHA_CACHE.clear()
