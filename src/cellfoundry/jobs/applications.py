"""The registry of applications: what a run can do, its parameters and the model families it accepts.

Each application has a pydantic params schema (validated before anything is queued) and a task
function that only calls the library. Fine-tuning and evaluation from other modules plug in here.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cellfoundry.errors import CellfoundryError, DataError, NotFoundError

BASELINES = ("logreg", "knn")
#: the families that can explain their calls gene by gene (``annotate(explain=True)``)
EXPLAINABLE = BASELINES
MAX_CONSENSUS_MODELS = 5
EvalMethod = Literal["logreg", "knn", "head", "lora", "full"]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AnnotationParams(Params):
    threshold: float | None = Field(
        None, ge=0, le=1, description="Unknown threshold (default: the model's)"
    )
    min_coverage: float = Field(
        0.3, ge=0, le=1, description="refuse when fewer model genes are present"
    )
    label_key: str | None = Field(
        None, description="obs column with true labels: adds metrics to the summary"
    )
    layout: Literal["umap", "pca", "none"] = Field(
        "umap", description="2-D layout of the cells in the results"
    )
    species: str | None = Field(
        None,
        max_length=40,
        description="species of the genes (human, mouse, rhesus, cynomolgus, pig); default: "
        "detected. Non-human genes are mapped to human orthologs.",
    )
    explain: bool = Field(
        False,
        description="per cell, the genes contributing most to its call, with their contributions "
        "(prediction_top_genes; logreg and knn models; at most the server's explain_max_cells "
        "cells)",
    )


class ConsensusParams(AnnotationParams):
    other_model_ids: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]] = Field(
        ...,
        min_length=1,
        max_length=MAX_CONSENSUS_MODELS - 1,
        description="the models combined with model_id (each annotates every cell; the calls are "
        f"combined up the Cell Ontology): 1 to {MAX_CONSENSUS_MODELS - 1} other model ids",
    )

    @field_validator("other_model_ids")
    @classmethod
    def _distinct(cls, ids: list[str]) -> list[str]:
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"each model once; repeated: {', '.join(repeated)}")
        return ids

    def model_ids(self, model_id: str) -> list[str]:
        """Every model of the consensus, ``model_id`` first."""
        return [model_id, *self.other_model_ids]


def run_model_ids(params: Params, model_id: str) -> list[str]:
    """Every model a run uses: its ``model_id``, then a consensus's other models."""
    return params.model_ids(model_id) if isinstance(params, ConsensusParams) else [model_id]


class EmbeddingParams(Params):
    layout: Literal["umap", "pca"] = "umap"
    n_components: int = Field(50, ge=2, le=200, description="PCA components before the layout")


class EvaluationParams(Params):
    label_key: str = Field(..., min_length=1, description="obs column with the true labels")
    test_fraction: float = Field(
        0.3, gt=0.05, lt=0.95, description="held-out share for the baseline"
    )
    baseline_n_features: int = Field(
        3000, ge=20, le=50_000, description="genes used by the baseline"
    )
    baseline_max_iter: int = Field(
        1000, ge=10, le=10_000, description="solver iterations of the baseline"
    )
    seed: int = 0
    seeds: int = Field(1, ge=1, le=10, description="foundation models: seeds of the comparison")
    methods: list[EvalMethod] = Field(
        default_factory=lambda: list[EvalMethod](["logreg", "head"]),
        description="foundation models: methods compared by cellfoundry.evaluation.evaluate",
    )
    epochs: int = Field(3, ge=1, le=100, description="foundation models: fine-tuning epochs")


class FinetuneParams(Params):
    label_key: str = Field(..., min_length=1, description="obs column with the training labels")
    name: str | None = Field(None, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")
    seed: int = 0
    options: dict[str, Any] = Field(
        default_factory=dict, description="family-specific training options"
    )


@dataclass
class TaskContext:
    """What a task gets: inputs, an output folder and a progress callback that checks cancellation."""

    run_id: str
    dataset_path: Path
    model_dir: Path
    model_family: str
    params: Any
    out_dir: Path
    report: Callable[[str, float], None]
    settings: Any = None
    register_model: Callable[[Path], str] | None = None


@dataclass
class TaskOutput:
    """A finished task: summary JSON, files (name -> path) and measured metrics to store."""

    summary: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None  # {"label_key", "metrics"} stored against the model


@dataclass
class ApplicationSpec:
    id: str
    name: str
    description: str
    params: type[Params]
    families: tuple[str, ...] | None  # None: every family
    task: Callable[[TaskContext], TaskOutput] | None  # None: sharded annotation (see engine)
    sharded: bool = False

    def accepts(self, family: str) -> bool:
        return self.families is None or family in self.families

    def validate(self, params: dict[str, Any] | None) -> Params:
        try:
            return self.params.model_validate(params or {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}" for e in exc.errors()
            )
            raise CellfoundryError(
                f"invalid params for application '{self.id}': {problems}",
                f"see GET /applications for the params of '{self.id}'",
                code="invalid_params",
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "families": list(self.families) if self.families else None,
            "params_schema": self.params.model_json_schema(),
        }


APPLICATIONS: dict[str, ApplicationSpec] = {}


def register_application(spec: ApplicationSpec) -> None:
    """Add (or replace) an application."""
    APPLICATIONS[spec.id] = spec


def get_application(app_id: str) -> ApplicationSpec:
    try:
        return APPLICATIONS[app_id]
    except KeyError:
        raise NotFoundError(
            f"unknown application '{app_id}'",
            f"choose one of: {', '.join(APPLICATIONS)}",
            code="unknown_application",
        ) from None


# --- shared helpers -----------------------------------------------------------------------------


def read_dataset(path: Path, backed: bool = False) -> Any:
    from cellfoundry.data.io import read_data

    return read_data(path, backed=backed and path.name.endswith(".h5ad"))


def label_column(adata: Any, key: str) -> np.ndarray:
    if key not in adata.obs.columns:
        raise DataError(
            f"the dataset has no obs column '{key}'",
            f"choose one of: {', '.join(map(str, adata.obs.columns)) or '(none)'}",
        )
    return adata.obs[key].astype(str).to_numpy()


MAX_OBS_CATEGORIES = 200
OBS_PREFIX = "obs:"


def text_obs_columns(obs: pd.DataFrame) -> list[str]:
    """The categorical/string obs columns with at most ``MAX_OBS_CATEGORIES`` distinct values."""
    out = []
    for col in obs.columns:
        s = obs[col]
        is_text = isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(s.dtype)
        if not is_text or pd.api.types.is_bool_dtype(s.dtype):
            continue
        if s.nunique(dropna=True) <= MAX_OBS_CATEGORIES:
            out.append(col)
    return out


def categorical_obs(obs: pd.DataFrame, rows: np.ndarray) -> dict[str, list[str | None]]:
    """The columns of :func:`text_obs_columns` at ``rows``."""
    return {
        str(col): [
            None if pd.isna(v) else str(v) for v in obs[col].iloc[rows].to_numpy(dtype=object)
        ]
        for col in text_obs_columns(obs)
    }


def with_layout_obs(coords: pd.DataFrame, obs: pd.DataFrame) -> pd.DataFrame:
    """``coords`` (rows ``i`` of the dataset) plus its categorical obs columns as ``obs:<name>``
    (stored as categoricals: a million rows cost a code each, not a string)."""
    rows = coords["i"].to_numpy()
    extra: dict[str, pd.Categorical] = {}
    for col in text_obs_columns(obs):
        vals = obs[col].iloc[rows]
        missing = vals.isna().to_numpy()
        text = vals.astype(str).to_numpy(dtype=object)
        text[missing] = None
        extra[f"{OBS_PREFIX}{col}"] = pd.Categorical(text)
    if not extra:
        return coords
    return pd.concat([coords, pd.DataFrame(extra, index=coords.index)], axis=1)


def stratified_sample(labels: np.ndarray, max_cells: int, seed: int = 0) -> np.ndarray:
    """All indices, or about ``max_cells`` of them drawn per label in proportion (sorted)."""
    n = len(labels)
    idx = np.arange(n)
    if n <= max_cells:
        return idx
    rng = np.random.default_rng(seed)
    parts = []
    for lab in np.unique(labels):
        members = idx[labels == lab]
        k = max(1, round(len(members) * max_cells / n))
        parts.append(rng.choice(members, size=min(k, len(members)), replace=False))
    return np.sort(np.concatenate(parts))


#: rows read, featurised and placed at once when a layout is applied to every cell
LAYOUT_CHUNK = 20_000


def layout_frame(
    xy: np.ndarray,
    cells: np.ndarray,
    labels: np.ndarray | None,
    shown_cells: int,
    obs: pd.DataFrame,
    seed: int = 0,
) -> pd.DataFrame:
    """The stored layout of every cell: row ``i``, ``cell``, ``x``, ``y``, ``label``, ``shown``
    (the stratified sample of at most ``shown_cells`` points that GET /results returns) and the
    categorical obs columns."""
    n = xy.shape[0]
    strata = labels if labels is not None else np.zeros(n, dtype=np.int8)
    shown = np.zeros(n, dtype=bool)
    shown[stratified_sample(strata, shown_cells, seed)] = True
    frame = pd.DataFrame(
        {
            "i": np.arange(n, dtype=np.int64),
            "cell": np.asarray(cells).astype(str),
            "x": xy[:, 0].astype(np.float32),
            "y": xy[:, 1].astype(np.float32),
        }
    )
    if labels is not None:
        frame["label"] = pd.Categorical(np.asarray(labels, dtype=str))
    frame["shown"] = shown
    return with_layout_obs(frame, obs)


def layout_2d(
    x: Any,
    labels: np.ndarray,
    method: str,
    fit_cells: int,
    n_components: int = 50,
    seed: int = 0,
) -> np.ndarray:
    """2-D positions (cells x 2) of every cell of ``x`` (in memory): fitted on a sample of at most
    ``fit_cells`` cells stratified by label, the rest placed by :mod:`cellfoundry.stats.layout`."""
    from cellfoundry.stats.layout import layout_cells, row_chunks

    n = x.shape[0]
    fit_rows = stratified_sample(labels, fit_cells, seed)
    return layout_cells(
        n,
        fit_rows,
        lambda rows: x[rows],
        ((a, x[a:b]) for a, b in row_chunks(n, LAYOUT_CHUNK)),
        "umap" if method == "umap" else "pca",
        n_components,
        seed,
    )


def model_features(adata: Any, model_dir: Path, min_coverage: float = 0.0) -> Any:
    """The model's input features of every cell (the library's shared preprocessing)."""
    from cellfoundry.data.prepare import features
    from cellfoundry.data.species import to_human_space
    from cellfoundry.models.registry import load_model

    adata, _ = to_human_space(adata)  # mouse/macaque/pig genes: human orthologs
    ann = load_model(model_dir)
    plan_fn = getattr(ann, "plan", None)
    if plan_fn is None:
        raise CellfoundryError(
            f"model family '{ann.family}' has no feature space for a layout",
            "use an embedding model",
            code="unsupported_model",
        )
    return features(adata, plan_fn(adata, None, min_coverage))


# --- embedding ----------------------------------------------------------------------------------


def embedding_task(ctx: TaskContext) -> TaskOutput:
    """Embed cells (the model's embedding, else a PCA of its input features) and lay them out in 2-D."""
    p: EmbeddingParams = ctx.params
    ctx.report("reading data", 5)
    adata = read_dataset(ctx.dataset_path)
    emb = None
    embed = _optional("cellfoundry.api", "embed") or _optional("cellfoundry", "embed")
    if embed is not None and ctx.model_family not in BASELINES:
        ctx.report("embedding", 20)
        out = embed(adata, ctx.model_dir)
        emb = np.asarray(getattr(out, "embeddings", out))
    if emb is None:
        ctx.report("computing features", 20)
        emb = model_features(adata, ctx.model_dir)
    ctx.report("layout", 60)
    fit_cells = ctx.settings.layout_fit_cells if ctx.settings else 20_000
    shown_cells = ctx.settings.umap_max_cells if ctx.settings else 5000
    xy = layout_2d(emb, np.zeros(adata.n_obs, np.int8), p.layout, fit_cells, p.n_components)
    coords = layout_frame(xy, np.asarray(adata.obs_names), None, shown_cells, adata.obs)
    sampled = adata.n_obs > shown_cells
    files = {"layout": ctx.out_dir / "layout.parquet"}
    coords.to_parquet(files["layout"])
    return TaskOutput(
        summary={
            "n_cells": int(adata.n_obs),
            "layout": p.layout,
            "layout_sampled": sampled,
            "embedding_dim": int(emb.shape[1]),
        },
        files=files,
    )


# --- evaluation ---------------------------------------------------------------------------------


def _optional(module: str, attr: str) -> Any:
    try:
        return getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None


def _metrics_block(
    truth: np.ndarray,
    pred: np.ndarray,
    proba: np.ndarray | None,
    classes: list[str] | None,
    threshold: float | None = None,
) -> dict[str, Any]:
    from cellfoundry.stats.metrics import classification_metrics

    return classification_metrics(truth, pred, proba, classes, threshold=threshold)


def _ontology_block(truth: np.ndarray, res: Any) -> dict[str, Any]:
    """Ontology-aware scores of an annotation (model and data label vocabularies may differ)."""
    from cellfoundry.evaluation.ontology_scores import ontology_metrics

    return ontology_metrics(
        truth, res.labels, res.classes, model_mapping=res.ontology, called=~res.unknown
    )


def evaluation_task(ctx: TaskContext) -> TaskOutput:
    """Measure a model against true labels, beside a logistic-regression baseline trained on the data."""
    p: EvaluationParams = ctx.params
    evaluate = _optional("cellfoundry.evaluation", "evaluate")
    if evaluate is not None:
        out = _call_evaluate(evaluate, ctx)
        if out is not None:
            return out
    from sklearn.model_selection import train_test_split

    from cellfoundry.api import annotate, train
    from cellfoundry.artifacts import trained_on
    from cellfoundry.stats.labels import labelled_mask
    from cellfoundry.stats.metrics import confusion_frame, most_confused

    ctx.report("reading data", 5)
    adata = read_dataset(ctx.dataset_path)
    label_column(adata, p.label_key)
    # unlabelled cells are dropped (never a "nan" class); the model is never scored on the cells
    # it was trained on (the artifact records them)
    labelled = labelled_mask(adata.obs[p.label_key].to_numpy())
    seen = trained_on(adata, ctx.model_dir) & labelled
    if not (labelled & ~seen).any():
        raise DataError(
            f"no labelled cell of this dataset is left to evaluate on: {int(labelled.sum())} "
            f"labelled, {int(seen.sum())} of them used to train this model",
            "evaluate on a dataset the model was not trained on; its held-out metrics from "
            "training are in the model's details",
        )
    n_in = int(adata.n_obs)
    if not (labelled & ~seen).all():
        adata = adata[labelled & ~seen].copy()
    truth = label_column(adata, p.label_key)
    ctx.report("annotating with the model", 20)
    res = annotate(adata, ctx.model_dir)
    model_metrics = _metrics_block(
        truth, res.labels, res.probabilities, res.classes, threshold=res.threshold
    )
    known = np.isin(truth, res.classes)
    model_metrics["share_of_cells_with_model_labels"] = float(known.mean())
    model_metrics["n_unlabelled_dropped"] = int((~labelled).sum())
    model_metrics["n_training_cells_left_out"] = int(seen.sum())
    model_metrics["ontology"] = _ontology_block(truth, res)
    model_metrics |= {
        k: model_metrics["ontology"][k]
        for k in ("ontology_accuracy", "ontology_score", "expressible_share")
    }
    ctx.report("training the baseline", 50)
    idx = np.arange(adata.n_obs)
    counts = pd.Series(truth).value_counts()
    strat = truth if counts.min() >= 2 else None
    tr, te = train_test_split(idx, test_size=p.test_fraction, random_state=p.seed, stratify=strat)
    base = train(
        adata[tr].copy(),
        p.label_key,
        "logreg",
        seed=p.seed,
        n_features=p.baseline_n_features,
        max_iter=p.baseline_max_iter,
    )
    ctx.report("annotating the held-out cells", 75)
    test = adata[te].copy()
    base_res = annotate(test, base)
    model_te = res.labels[te]
    comparison = {
        "model_on_test": _metrics_block(
            truth[te], model_te, res.probabilities[te], res.classes, res.threshold
        ),
        "logreg_baseline_on_test": _metrics_block(
            truth[te], base_res.labels, base_res.probabilities, base_res.classes, base_res.threshold
        ),
        "n_train": len(tr),
        "n_test": len(te),
    }
    cm = confusion_frame(truth, res.labels)
    mc = most_confused(truth, res.labels)
    files = {
        "confusion": ctx.out_dir / "confusion.csv",
        "most_confused": ctx.out_dir / "most_confused.csv",
        "predictions": ctx.out_dir / "predictions.parquet",
    }
    cm.to_csv(files["confusion"])
    mc.to_csv(files["most_confused"], index=False)
    write_predictions_parquet(_predictions_frame(res, truth), files["predictions"])
    summary = {
        "label_key": p.label_key,
        "metrics": model_metrics,
        "baseline_comparison": comparison,
        "confusion": {
            "labels_true": list(map(str, cm.index)),
            "labels_pred": list(map(str, cm.columns)),
            "counts": cm.to_numpy().tolist(),
        },
        "most_confused": mc.to_dict(orient="records"),
        "n_cells": int(adata.n_obs),
        "n_cells_in_dataset": n_in,
        "evaluator": "cellfoundry.service baseline comparison",
    }
    return TaskOutput(
        summary=summary,
        files=files,
        evaluation={"label_key": p.label_key, "metrics": model_metrics},
    )


def _call_evaluate(evaluate: Callable[..., Any], ctx: TaskContext) -> TaskOutput | None:
    """Foundation models: ``cellfoundry.evaluation.evaluate`` (methods x seeds, report folder).

    Trained baselines are measured directly (the built-in path): ``evaluate`` compares training
    methods on a reference rather than measuring one trained model.
    """
    p: EvaluationParams = ctx.params
    if ctx.model_family in BASELINES:
        return None
    target = _optional("cellfoundry.evaluation.compare", "evaluate") or evaluate
    accepted = inspect.signature(target).parameters
    wanted: dict[str, Any] = {
        "label_key": p.label_key,
        "model": str(ctx.model_dir),
        "out": ctx.out_dir / "report",
        "seeds": p.seeds,
        "methods": tuple(p.methods),
        "epochs": p.epochs,
        "test_fraction": p.test_fraction,
        "umap": False,
    }
    if "out" not in accepted or "model" not in accepted:
        return None
    kwargs = {k: v for k, v in wanted.items() if k in accepted}
    ctx.report(f"evaluating {', '.join(p.methods)} over {p.seeds} seed(s)", 10)
    report: dict[str, Any] = evaluate(str(ctx.dataset_path), **kwargs) or {}
    report_dir = ctx.out_dir / "report"
    files = {f.name.replace(".", "_"): f for f in report_dir.glob("*") if f.is_file()}
    # each method's own metrics; none of them is the model under test (every method is trained
    # on this dataset's cells), so no method's figure is stored as the model's accuracy / macro-F1
    metrics: dict[str, Any] = {
        "scored": "each method trained from this model on the dataset's own training split; "
        "these are the methods' metrics, not the stored model's"
    }
    mean_std = report_dir / "summary_mean_std.csv"
    if mean_std.is_file():
        table = pd.read_csv(mean_std)
        keys = [
            f"{m}_{s}"
            for m in (
                "accuracy",
                "macro_f1",
                "coverage",
                "called_macro_f1",
                "ontology_score",
                "expressible_share",
            )
            for s in ("mean", "std")
        ]
        rows = table.to_dict(orient="records")
        metrics["per_method"] = {
            f"{r['model']}-{r['method']}": {k: r[k] for k in keys if k in r}
            for r in rows
            if r["model"] != "reference"
        }
        metrics["reference"] = {
            r["method"]: {k: r[k] for k in keys if k in r}
            for r in rows
            if r["model"] == "reference"
        }
    summary = {
        "label_key": p.label_key,
        "evaluator": "cellfoundry.evaluation.evaluate",
        "metrics": metrics,
        "report": report,
    }
    return TaskOutput(
        summary=summary, files=files, evaluation={"label_key": p.label_key, "metrics": metrics}
    )


#: rows per parquet row group of the predictions file: a page of /results reads only the groups
#: it overlaps (``service.results.page_predictions``)
PREDICTION_ROW_GROUP = 10_000


def write_predictions_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write the per-cell predictions in row groups of ``PREDICTION_ROW_GROUP`` rows."""
    frame.to_parquet(path, row_group_size=PREDICTION_ROW_GROUP)


def _predictions_frame(res: Any, truth: np.ndarray | None = None) -> pd.DataFrame:
    df = res.to_frame().reset_index()
    df["predicted_cell_type"] = df["predicted_cell_type"].astype(str)
    top = np.argsort(-res.probabilities, axis=1, kind="stable")[:, :3]
    for r in range(min(3, len(res.classes))):
        df[f"top{r + 1}_label"] = np.asarray(res.classes, dtype=object)[top[:, r]]
        df[f"top{r + 1}_probability"] = res.probabilities[np.arange(len(df)), top[:, r]].astype(
            np.float32
        )
    if truth is not None:
        df["true_label"] = truth
    return df


# --- fine-tuning / training ---------------------------------------------------------------------


def finetune_task(ctx: TaskContext) -> TaskOutput:
    """Train a new model on the dataset's labels (baselines) or fine-tune a foundation model."""
    p: FinetuneParams = ctx.params
    out_dir = ctx.out_dir / "model"
    ctx.report("reading data", 5)
    if ctx.model_family in BASELINES:
        from cellfoundry.api import train
        from cellfoundry.models.baselines.refit import REFERENCE_FILE_KEY, reference_record

        adata = read_dataset(ctx.dataset_path)
        label_column(adata, p.label_key)
        ctx.report("training", 20)
        name = p.name or f"{ctx.model_family}-{ctx.run_id}"
        model = train(adata, p.label_key, ctx.model_family, name=name, seed=p.seed, **p.options)
        # the stored dataset is the model's reference: a query lacking many of the model's genes
        # is annotated by a refit on the shared genes while this file is unchanged
        model.manifest.training[REFERENCE_FILE_KEY] = reference_record(ctx.dataset_path)
        model.save(out_dir)
    else:
        finetune = _optional("cellfoundry.tuning", "finetune") or _optional(
            "cellfoundry.api", "finetune"
        )
        if finetune is None:
            raise CellfoundryError(
                "fine-tuning of foundation models is not available in this installation",
                "update cellfoundry, or fine-tune a baseline (logreg, knn)",
                code="not_available",
            )
        ctx.report("fine-tuning", 20)
        opts = dict(p.options)
        method = str(opts.pop("method", "lora"))
        try:
            finetune(
                str(ctx.dataset_path),
                p.label_key,
                model=str(ctx.model_dir),
                method=method,
                out=out_dir,
                seed=p.seed,
                **opts,
            )
        except TypeError as exc:
            raise CellfoundryError(
                f"invalid fine-tuning options: {exc}",
                "see cellfoundry.tuning.finetune for the accepted options",
                code="invalid_params",
            ) from exc
    ctx.report("registering the model", 95)
    new_id = ctx.register_model(out_dir) if ctx.register_model else None
    return TaskOutput(summary={"label_key": p.label_key, "new_model_id": new_id})


register_application(
    ApplicationSpec(
        id="annotation",
        name="Cell-type annotation",
        description="Label every cell with a trained model: top labels, confidence, Unknown below the threshold.",
        params=AnnotationParams,
        families=None,
        task=None,
        sharded=True,
    )
)
register_application(
    ApplicationSpec(
        id="consensus",
        name="Consensus of models",
        description="Label every cell with several models and combine their calls up the Cell "
        "Ontology: the most specific term most of the models' probability supports, how many "
        "models agree, and each model's own call.",
        params=ConsensusParams,
        families=None,
        task=None,
        sharded=True,
    )
)
register_application(
    ApplicationSpec(
        id="embedding",
        name="Embedding + UMAP",
        description="Embed every cell with a model (or a PCA of its input genes) and lay the cells out in 2-D.",
        params=EmbeddingParams,
        families=None,
        task=embedding_task,
    )
)
register_application(
    ApplicationSpec(
        id="finetune",
        name="Fine-tuning",
        description="Train a new model on a labelled dataset: baselines from scratch, foundation models fine-tuned.",
        params=FinetuneParams,
        families=None,
        task=finetune_task,
    )
)
register_application(
    ApplicationSpec(
        id="evaluation",
        name="Evaluation",
        description="Measure a model against the dataset's true labels beside a logistic-regression baseline "
        "(accuracy, macro-F1, confusion matrix, most-confused pairs).",
        params=EvaluationParams,
        families=None,
        task=evaluation_task,
    )
)
