"""The Python entry points: ``train``, ``annotate``, ``load_model``, ``inspect``."""

from __future__ import annotations

import inspect as pyinspect
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad

from cellfoundry.data.io import as_anndata
from cellfoundry.data.prepare import DEFAULT_MIN_COVERAGE
from cellfoundry.data.report import ValidationReport, validate
from cellfoundry.data.species import to_human_space
from cellfoundry.errors import CellfoundryWarning, ModelError
from cellfoundry.models.base import Annotator, FeatureAnnotator, GenePanel
from cellfoundry.models.baselines.common import StateAnnotator
from cellfoundry.models.baselines.refit import (
    DEFAULT_REFIT_BELOW,
    REFERENCE_FILE_KEY,
    predict_with_panel,
    reference_record,
)
from cellfoundry.models.registry import annotator_class, family_info, load_model
from cellfoundry.ontology import level_terms, map_labels, read_label_map
from cellfoundry.result import AnnotationResult


def inspect(data: ad.AnnData | str | Path, *, species: str | None = None) -> ValidationReport:
    """The validation report of a dataset (reads .h5ad backed, so large files are cheap).

    ``species`` overrides the species detected from the gene IDs (see ``annotate``).
    """
    adata = as_anndata(data, backed=isinstance(data, str | Path) and str(data).endswith(".h5ad"))
    return validate(adata, species)


def train(
    reference: ad.AnnData | str | Path,
    label_key: str = "cell_type",
    model: str = "logreg",
    *,
    out: str | Path | None = None,
    species: str | None = None,
    label_map: str | Path | dict[str, str] | None = None,
    **params: Any,
) -> Annotator:
    """Train an annotator of family ``model`` on ``reference.obs[label_key]``; save it to ``out`` if given.

    A mouse, macaque or pig reference is first mapped to human orthologs (``species`` as in
    ``annotate``), so its model annotates data of any supported species.

    Every class gets a Cell Ontology term in the manifest; ``label_map`` (a
    ``label,ontology_term_id`` CSV or a dict) wins over the automatic mapping.
    """
    if label_map is not None and not isinstance(label_map, dict):
        read_label_map(label_map)  # a bad CSV fails before the training, not after
    info = family_info(model)
    cls = annotator_class(info.name)
    trainer = getattr(cls, "train", None)
    if trainer is None:
        raise ValueError(
            f"model family '{model}' cannot be trained with train(); see `cellfoundry models`"
        )
    if "progress" in params and "progress" not in pyinspect.signature(trainer).parameters:
        params.pop("progress")  # a family without progress reporting
    if params.get("cv_folds") and "cv_folds" not in pyinspect.signature(trainer).parameters:
        raise ValueError(
            f"model family '{model}' keeps no out-of-fold predictions; train it without cv_folds"
        )
    ref, ref_report = to_human_space(as_anndata(reference), species)
    if label_map is not None and label_key in ref.obs:  # checked against the labels before training
        labels = sorted(ref.obs[label_key].dropna().astype(str).unique())
        for warning in map_labels(labels, label_map, check=True).warnings:
            warnings.warn(warning, CellfoundryWarning, stacklevel=2)
    fitted: Annotator = trainer(ref, label_key, **params)
    fitted.set_label_map(label_map)
    if isinstance(reference, str | Path) and Path(reference).is_file():
        # a query that lacks many model genes can then refit on the shared genes (if unchanged)
        fitted.manifest.training[REFERENCE_FILE_KEY] = reference_record(reference)
    fitted.manifest.training["species"] = ref_report.species
    if ref_report.orthology is not None:  # trained on human orthologs of another species' genes
        fitted.manifest.training["species_mapping"] = ref_report.orthology.describe()
    if out is not None:
        fitted.save(out)
    return fitted


ModelRef = str | Path | Annotator


def annotate(
    data: ad.AnnData | str | Path,
    model: ModelRef | Sequence[ModelRef],
    *,
    threshold: float | None = None,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    chunk_size: int = 10_000,
    progress: bool = False,
    species: str | None = None,
    label_map: str | Path | dict[str, str] | None = None,
    level: str | None = None,
    reference: ad.AnnData | str | Path | None = None,
    refit_below: float = DEFAULT_REFIT_BELOW,
    explain: bool = False,
) -> AnnotationResult:
    """Annotate every cell of ``data`` with a trained model (an artifact folder or an Annotator).

    ``threshold`` overrides the model's stored Unknown threshold. ``species`` overrides the
    species detected from the gene IDs ("mouse", "rhesus", "cynomolgus", "pig"; "human" uses the
    genes as named); data of those species is mapped to human orthologs first.
    ``label_map`` overrides the model's Cell Ontology terms for the classes it names; ``level``
    (a CL term id or name such as "T cell", or "broad") also reports every call rolled up to
    that broader term.

    For a baseline, model genes missing from the query are unobserved (reference mean); when
    fewer than ``refit_below`` of them are present and the labelled ``reference`` is at hand
    (given, or recorded in the model's manifest and unchanged), the baseline is refit on the genes
    shared by reference and query. ``result.gene_panel`` says which mode was used.
    ``explain=True`` adds ``obs["prediction_top_genes"]`` (baselines: the genes contributing
    most to each call) and ``obs["prediction_top_gene_contributions"]`` (their contributions).

    Several models (a list) give their consensus (``cellfoundry.consensus``): every model
    annotates the cells with the options above, then the calls are combined up the Cell Ontology.
    """
    if level is not None:
        level_terms(level)  # an unknown level fails before the annotation, not after
    if isinstance(model, list | tuple):
        if not model:
            raise ValueError("give at least one model")
        if len(model) > 1:
            return _annotate_consensus(
                data,
                list(model),
                threshold=threshold,
                min_coverage=min_coverage,
                chunk_size=chunk_size,
                progress=progress,
                species=species,
                label_map=label_map,
                level=level,
                reference=reference,
                refit_below=refit_below,
                explain=explain,
            )
        model = model[0]
    annotator = load_model(model)  # type: ignore[arg-type]
    terms = map_labels(annotator.classes, label_map, base=annotator.ontology, check=True)
    adata = as_anndata(data, backed=isinstance(data, str | Path) and str(data).endswith(".h5ad"))
    extra: dict[str, Any] = {}
    if explain:
        if not isinstance(annotator, FeatureAnnotator):
            raise ModelError(
                f"model '{annotator.name}' ({annotator.family}) cannot explain its calls per gene",
                "explain works with the gene-based baselines (logreg, knn); annotate without explain",
                code="explain_unavailable",
            )
        extra["explain"] = True
    human, report = to_human_space(adata, species, chunk_size=chunk_size)
    if isinstance(annotator, StateAnnotator):
        pred, annotator = predict_with_panel(
            annotator,
            human,
            report=report,
            reference=reference,
            refit_below=refit_below,
            min_coverage=min_coverage,
            chunk_size=chunk_size,
            progress=progress,
            explain=explain,
        )
    else:
        pred = annotator.predict(
            human,
            report=report,
            chunk_size=chunk_size,
            min_coverage=min_coverage,
            progress=progress,
            **extra,
        )
    panel = pred.gene_panel
    if panel is None and pred.plan is not None:
        cov = pred.plan.coverage
        panel = GenePanel.from_coverage(cov.n_target, cov.n_present, "family_default")
    return AnnotationResult(
        obs_names=adata.obs_names.copy(),
        classes=annotator.classes,
        probabilities=pred.probabilities,
        threshold=annotator.threshold if threshold is None else float(threshold),
        model_name=annotator.name,
        model_family=annotator.family,
        coverage=pred.plan.coverage if pred.plan else None,
        warnings=[*terms.warnings, *pred.warnings],
        gene_mapping=pred.plan.gene_mapping if pred.plan else None,
        species=report.species,
        orthology=report.orthology,
        embeddings=pred.embeddings,
        embedding_key=pred.embedding_key,
        adata=adata,
        ontology=terms,
        level=level,
        gene_panel=panel,
        obs_columns=dict(pred.obs),
        findings=dict(pred.uns),
        parts=dict(pred.parts),
    )


def _annotate_consensus(
    data: ad.AnnData | str | Path, models: list[ModelRef], **options: Any
) -> AnnotationResult:
    from cellfoundry.consensus import consensus, model_weights

    annotators = [load_model(m) for m in models]
    names = [a.name for a in annotators]
    if len(set(names)) < len(names):  # e.g. two "logreg" models: name them by their folders
        names = [
            Path(m).name if isinstance(m, str | Path) else a.name
            for m, a in zip(models, annotators, strict=True)
        ]
    adata = as_anndata(data, backed=isinstance(data, str | Path) and str(data).endswith(".h5ad"))
    results = [annotate(adata, a, **options) for a in annotators]
    weighting = model_weights(annotators, results)
    return consensus(results, names, weights=weighting.weights, weighting=weighting)
