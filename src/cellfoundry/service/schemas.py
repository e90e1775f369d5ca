"""Request (``*Create``) and response (``*Public``) bodies of the API, and its documented errors."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from cellfoundry.jobs.applications import APPLICATIONS


def _as_utc(value: dt.datetime) -> dt.datetime:
    """The store keeps naive UTC times; answers say so (RFC 3339 with a zone, e.g. ``...Z``)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


UtcDatetime = Annotated[dt.datetime, AfterValidator(_as_utc)]

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
DEFAULT_APPLICATION = "annotation"
MAX_LEVEL_LENGTH = 200  # /results?level=: a roll-up set, CL id or CL term name
MAX_PAGE = 1_000_000  # pages beyond this are refused (422), never sent to the database
MAX_CELL_INDEX = 100_000_000  # a cell row beyond this is refused (422)


# --- errors -------------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    code: str = Field(..., description="stable machine-readable error code")
    message: str = Field(..., description="what is wrong")
    hint: str | None = Field(None, description="how to fix it")
    request_id: str | None = Field(
        None, description="also in the X-Request-ID header; the server log has the details"
    )


class ErrorResponse(BaseModel):
    error: ErrorBody


_ERROR_TEXT = {
    400: "Malformed request",
    401: "Missing or invalid API key",
    404: "Not found (or not yours)",
    405: "Method not allowed",
    408: "The client stopped sending the request body (idle too long)",
    409: "Not in a state that allows this",
    413: "Too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Rate limit or quota reached (see Retry-After and the hint)",
    500: "Internal error (the server log has the details)",
    503: "A dependency (queue, model) is unavailable",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status answered with an ``ErrorResponse`` (422 and 500
    are always listed: request validation and the catch-all)."""
    return {
        s: {"model": ErrorResponse, "description": _ERROR_TEXT[s]}
        for s in sorted({*statuses, 422, 500})
    }


# --- platform -----------------------------------------------------------------------------------


class CheckPublic(BaseModel):
    ok: bool
    detail: str


class QueueCheckPublic(CheckPublic):
    backend: str


class WorkerPublic(BaseModel):
    name: str
    kind: str
    host: str
    pid: int
    last_seen: UtcDatetime | None


class HealthPublic(BaseModel):
    """Without an API key only ``status``; with one also the checks, workers and models."""

    status: Literal["ok", "degraded"]
    database: CheckPublic | None = None
    queue: QueueCheckPublic | None = None
    workers: list[WorkerPublic] | None = None
    loaded_models: list[str] | None = None


# --- stored figures -----------------------------------------------------------------------------
# Numbers the service measured and stored (model metrics, evaluation reports, validation reports),
# typed field by field. ``extra="allow"``: a stored key that no field names is passed through as
# stored, so older and newer rows answer unchanged.

Figure = float | None  # a measured number; null where it is undefined (e.g. no cell was called)


class Stored(BaseModel):
    model_config = ConfigDict(extra="allow")


class StoredAnswer(Stored):
    """Stored figures always sent whole (not under ``response_model_exclude_unset``): every field
    is in the answer, so the schema lists each one as required (null where not stored)."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


class MeanStdFigures(Stored):
    """Mean and standard deviation over seeds of a method's figures (foundation evaluations)."""

    accuracy_mean: Figure = None
    accuracy_std: Figure = None
    macro_f1_mean: Figure = None
    macro_f1_std: Figure = None
    coverage_mean: Figure = None
    coverage_std: Figure = None
    called_macro_f1_mean: Figure = None
    called_macro_f1_std: Figure = None
    ontology_score_mean: Figure = None
    ontology_score_std: Figure = None
    expressible_share_mean: Figure = None
    expressible_share_std: Figure = None


class ReferenceFigures(MeanStdFigures):
    """What a model without information reaches: the majority class or chance (label
    frequencies); single figures, or mean/std over seeds in foundation evaluations."""

    label: str | None = Field(None, description="the majority class")
    accuracy: Figure = None
    macro_f1: Figure = None


class OntologyScoresPublic(Stored):
    """Cell Ontology-aware scores (``cellfoundry.evaluation.ontology_scores``)."""

    n_cells: int | None = None
    ontology_accuracy: Figure = None
    ontology_score: Figure = None
    ontology_macro_score: Figure = None
    coverage: Figure = None
    called_ontology_accuracy: Figure = None
    called_ontology_score: Figure = None
    coarser_share: Figure = None
    expressible_share: Figure = None
    truth_unmapped_share: Figure = None
    credit_rule: str | None = None
    truth_terms: dict[str, str] = Field(default_factory=dict)
    model_terms: dict[str, str] = Field(default_factory=dict)
    truth_unmapped: list[str] = Field(default_factory=list)
    model_unmapped: list[str] = Field(default_factory=list)
    per_true_term_score: dict[str, Figure] = Field(default_factory=dict)


class MetricsPublic(Stored):
    """Classification figures as stored: a model's training hold-out, an evaluation, or an
    annotation with true labels (``cellfoundry.stats.metrics.classification_metrics``)."""

    n_cells: int | None = None
    n_unlabelled_dropped: int | None = None
    macro_f1_over: str | None = None
    n_true_labels: int | None = None
    accuracy: Figure = None
    macro_f1: Figure = None
    weighted_f1: Figure = None
    coverage: Figure = Field(None, description="share of cells the model called (not Unknown)")
    called_accuracy: Figure = None
    called_macro_f1: Figure = None
    ece: Figure = None
    ece_before_temperature: Figure = None
    unknown_share: Figure = None
    reference: dict[str, ReferenceFigures] | None = Field(
        None, description="majority-class and chance rows for the same cells"
    )
    evaluated_on: str | None = None
    split: dict[str, int] | None = None
    share_of_cells_with_model_labels: Figure = None
    n_training_cells_left_out: int | None = None
    ontology: OntologyScoresPublic | None = None
    ontology_accuracy: Figure = None
    ontology_score: Figure = None
    expressible_share: Figure = None
    scored: str | None = Field(None, description="foundation evaluations: what was scored")
    per_method: dict[str, MeanStdFigures] | None = Field(
        None, description="foundation evaluations: each method's own figures ({model}-{method})"
    )


class ModelRequirementsPublic(StoredAnswer):
    needs: str | None = Field(None, description="what input the model needs, in words")
    gene_key_kind: str | None = Field(None, description="symbol / ensembl")
    representation: str | None = Field(None, description="counts / lognorm")
    n_genes: int | None = None
    kind: str | None = None
    n_parameters: int | None = None
    embedding_dim: int | None = None


class ParamSpecPublic(BaseModel):
    """One parameter of an application, read from its JSON schema (``params_schema``)."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)
    name: str
    type: Literal["integer", "number", "boolean", "string", "choice", "multi", "array", "json"]
    default: Any = Field(None, description="the value used when none is given")
    description: str | None = None
    choices: list[str | int | float | bool] | None = None
    minimum: float | None = None
    maximum: float | None = None
    required: bool


def param_specs(schema: dict[str, Any]) -> list[ParamSpecPublic]:
    """The parameters of a pydantic JSON schema ({properties, required, $defs})."""
    required = set(schema.get("required", []))
    defs = schema.get("$defs", {})
    out = []
    for name, raw in schema.get("properties", {}).items():
        p = dict(raw)
        if "$ref" in p:
            p = {**defs.get(p["$ref"].rsplit("/", 1)[-1], {}), **p}
        kind = p.get("type")
        choices = p.get("enum") or ([p["const"]] if "const" in p else None)
        low = p.get("minimum", p.get("exclusiveMinimum"))
        high = p.get("maximum", p.get("exclusiveMaximum"))
        for alt in p.get("anyOf", []) + p.get("oneOf", []):
            if alt.get("type") == "null":
                continue
            kind = kind or alt.get("type")
            choices = alt.get("enum", choices)
            low = low if low is not None else alt.get("minimum", alt.get("exclusiveMinimum"))
            high = high if high is not None else alt.get("maximum", alt.get("exclusiveMaximum"))
        if kind == "array" and "enum" in p.get("items", {}):
            kind, choices = "multi", p["items"]["enum"]
        elif choices:
            kind = "choice"
        elif kind == "object":
            kind = "json"
        out.append(
            ParamSpecPublic(
                name=name,
                type=kind or "string",
                default=p.get("default"),
                description=p.get("description") or p.get("title"),
                choices=choices,
                minimum=low,
                maximum=high,
                required=name in required,
            )
        )
    return out


# --- validation report --------------------------------------------------------------------------


class ReportMessagePublic(BaseModel):
    level: Literal["error", "warning", "info"]
    code: str
    message: str
    hint: str | None = None


class MatrixPublic(StoredAnswer):
    """What one candidate matrix holds, from a sample of its rows."""

    source: str = Field(..., description='"X", "layers/counts", "raw/X"')
    kind: str = Field(..., description="raw_counts / noninteger_counts / log_normalized / ...")
    shape: list[int] = Field(..., description="(cells, genes)")
    sampled_rows: int | None = None
    nnz_fraction: Figure = None
    min_value: Figure = None
    max_value: Figure = None
    n_nan: int | None = None
    n_inf: int | None = None
    n_negative: int | None = None
    integer_fraction: Figure = None
    median_row_total: Figure = None
    log_target_sum: Figure = None
    log_base: str | None = None
    log_target: str | None = None
    log_gene_subset: bool | None = None
    log_evidence: str | None = None


class GeneCoveragePublic(StoredAnswer):
    """How well the dataset covers a target gene list: ``target`` is "model {model id}" for a
    registered model."""

    target: str
    n_target: int
    n_present: int
    fraction_present: float
    fraction_counts_mapped: Figure = None
    key_kind: str | None = None
    missing_examples: list[str] = Field(default_factory=list)


class OrthologyReportPublic(StoredAnswer):
    """How a mouse/macaque/pig dataset's genes map to human genes (``cellfoundry.data.orthologs``)."""

    species: str
    species_evidence: str | None = None
    species_source: str | None = None
    table: str
    gene_route: str | None = None
    n_genes: int
    n_genes_mapped: int
    n_human_genes: int
    n_human_summed: int | None = None
    n_one_to_many: int | None = None
    n_one_to_many_kept: int | None = None
    fraction_genes_mapped: float
    fraction_counts_mapped: Figure = None
    rule: str | None = None
    examples_unmapped: list[str] = Field(default_factory=list)


class ValidationReportPublic(StoredAnswer):
    """What a dataset holds, which matrix serves which purpose, and what is wrong
    (``cellfoundry.data.report.ValidationReport``)."""

    ok: bool = Field(..., description="no error-level message")
    n_cells: int
    n_genes: int
    sparsity: Figure = None
    matrices: list[MatrixPublic] = Field(default_factory=list)
    chosen: dict[str, str | None] = Field(
        default_factory=dict, description='purpose ("counts", "lognorm") -> matrix source'
    )
    gene_id_kind: str = "unknown"
    species: str | None = None
    species_evidence: str | None = None
    species_source: str | None = None
    symbol_source: str | None = None
    ensembl_source: str | None = None
    n_duplicate_genes: int = 0
    duplicate_examples: list[str] = Field(default_factory=list)
    messages: list[ReportMessagePublic] = Field(default_factory=list)
    coverage: list[GeneCoveragePublic] = Field(default_factory=list)
    obs_columns: list[str] = Field(default_factory=list)
    orthology: OrthologyReportPublic | None = None


# --- catalogue ----------------------------------------------------------------------------------


class ApplicationPublic(BaseModel):
    id: str
    name: str
    description: str
    families: list[str] | None = Field(..., description="model families accepted; null: every")
    params_schema: dict[str, Any] = Field(..., description="JSON schema of the run's params")
    params: list[ParamSpecPublic] = Field(..., description="the params, read from params_schema")


class EvaluationPublic(BaseModel):
    run_id: str
    dataset_id: str
    label_key: str
    metrics: MetricsPublic
    created_at: UtcDatetime


class ModelMetricsPublic(BaseModel):
    training_holdout: MetricsPublic
    evaluations: list[EvaluationPublic]


class ModelPublic(BaseModel):
    id: str
    name: str
    family: str
    size_bytes: int
    n_genes: int
    classes: list[str]
    requirements: ModelRequirementsPublic
    ready: bool
    status: str
    applications: list[str]
    metrics: ModelMetricsPublic
    source_run_id: str | None
    created_at: UtcDatetime


# --- datasets -----------------------------------------------------------------------------------


class DatasetPublic(BaseModel):
    id: str
    filename: str
    sha256: str
    size_bytes: int
    format: str
    n_cells: int
    n_genes: int
    created_at: UtcDatetime
    report: ValidationReportPublic
    duplicate: bool = False


UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": ".h5ad, 10x .h5 or .csv/.tsv (optionally .gz)",
                        }
                    },
                    "required": ["file"],
                }
            }
        },
    }
}


# --- runs ---------------------------------------------------------------------------------------


def _submit_variants(schema: dict[str, Any]) -> None:
    """The body's JSON schema: one variant per application, each with its own ``params``."""
    variants = []
    for app_id, spec in APPLICATIONS.items():
        params = spec.params.model_json_schema()
        params.pop("title", None)
        variants.append(
            {
                "title": f"submit {app_id}",
                "properties": {"application_id": {"const": app_id}, "params": params},
                "required": [] if app_id == DEFAULT_APPLICATION else ["application_id"],
            }
        )
    schema["oneOf"] = variants


class SubmitCreate(BaseModel):
    """A run to queue; ``params`` are the chosen application's (see GET /applications)."""

    model_config = ConfigDict(
        extra="forbid", protected_namespaces=(), json_schema_extra=_submit_variants
    )
    dataset_id: str = Field(..., pattern=ID_PATTERN)
    model_id: str = Field(..., pattern=ID_PATTERN)
    application_id: str = Field(DEFAULT_APPLICATION, pattern=ID_PATTERN)
    params: dict[str, Any] = Field(default_factory=dict)


class SubmitPublic(BaseModel):
    run_id: str
    state: str


class RunError(BaseModel):
    code: str | None
    message: str | None
    hint: str | None


class RunPublic(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    id: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    stage: str
    progress: float
    application_id: str
    dataset_id: str
    model_id: str
    model_ids: list[str] = Field(
        default_factory=list,
        description="every model the run uses: model_id, then a consensus's other models",
    )
    params: dict[str, Any]
    attempts: int
    worker: str | None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    updated_at: UtcDatetime | None
    error: RunError | None


class RunPage(BaseModel):
    items: list[RunPublic]
    total: int
    page: int
    page_size: int


# --- results ------------------------------------------------------------------------------------


class TopLabel(BaseModel):
    label: str
    probability: float


class LayoutPublic(BaseModel):
    """The 2-D points with, per point, the stored prediction and the dataset's obs values."""

    method: str | None
    sampled: bool
    n_points: int
    cells: list[str]
    indices: list[int] | None = Field(
        None, description="per point, the cell's row (GET /results/{run_id}/cells/{index})"
    )
    x: list[float]
    y: list[float]
    labels: list[str] | None
    confidence: list[float] | None
    top3: list[list[TopLabel]] | None
    obs: dict[str, list[str | None]]
    model_labels: dict[str, list[str]] | None = Field(
        None,
        description="consensus: per point, each model's own label (Unknown below its threshold; "
        "with level, rolled up), by model id",
    )


class GeneContribution(BaseModel):
    gene: str
    contribution: float | None = Field(
        None, description="how much the gene adds to the score of the call (null: not stored)"
    )


class ModelCall(BaseModel):
    """One model's own call of a cell in a consensus run."""

    label: str = Field(..., description='``predicted``, or "Unknown" below the model\'s threshold')
    predicted: str = Field(..., description="the model's most probable class")
    confidence: float
    unknown: bool
    ontology_term_id: str | None = None
    top_genes: list[GeneContribution] | None = Field(
        None, description="explain=true: the genes contributing most to this model's call"
    )


class LayoutBox(BaseModel):
    x0: float
    x1: float
    y0: float
    y1: float


class LayoutPoints(BaseModel):
    """The points inside the viewport (parallel lists; ``label`` indexes ``labels``)."""

    sampled: bool = Field(
        description="more points were inside than max_points: these are the ones of lowest fixed "
        "random rank (a point shown stays shown when zooming in)"
    )
    row: list[int] = Field(description="the cell's row in the dataset")
    cell: list[str]
    x: list[float]
    y: list[float]
    label: list[int]
    confidence: list[float] | None = Field(
        None, description="the stored prediction confidence (runs with per-cell predictions)"
    )


class LayoutDensity(BaseModel):
    """Cells per label in each non-empty bin of a ``bins x bins`` grid over the viewport
    (parallel lists: bin column ``bx`` from x0, bin row ``by`` from y0, ``label`` indexes
    ``labels``)."""

    bins: int
    bin_width: float
    bin_height: float
    bx: list[int]
    by: list[int]
    label: list[int]
    count: list[int]


class LayoutViewPublic(BaseModel):
    """A viewport of the layout of every cell: points when few enough, else binned counts."""

    method: str | None
    n_cells: int = Field(description="cells in the stored layout")
    extent: LayoutBox = Field(description="bounds of every point")
    viewport: LayoutBox
    n_in_view: int
    labels: list[str] = Field(description="the labels that ``label`` values index")
    mode: Literal["points", "density"]
    points: LayoutPoints | None = None
    density: LayoutDensity | None = None
    level: str | None = Field(
        None, description="the level asked for: ``labels`` are rolled up to it"
    )
    source: str | None = Field(
        None,
        description="whose calls ``labels`` are: a consensus's model id (that model's own calls, "
        "``Unknown`` below its threshold); absent: the run's own (a consensus's combined) calls",
    )
    sources: list[str] | None = Field(
        None, description="consensus: the model ids that can be given as ``source``"
    )


class CellPrediction(BaseModel):
    cell: str
    index: int | None = Field(
        None, description="row of the cell in the dataset (GET /results/{run_id}/cells/{index})"
    )
    label: str
    predicted: str
    confidence: float
    unknown: bool
    top3: list[TopLabel]
    true_label: str | None = None
    ontology_term_id: str | None = Field(
        None, description='Cell Ontology term of ``predicted`` ("": its class is unmapped)'
    )
    reference_distance: float | None = Field(
        None, description="distance to the model's training cells (scaled: 1 = typical)"
    )
    out_of_reference: bool | None = Field(
        None, description="farther from the training cells than the model's threshold"
    )
    top_genes: list[GeneContribution] | None = Field(
        None,
        description="explain=true: the genes contributing most to the call, strongest first",
    )
    agreement: float | None = Field(
        None,
        description="consensus: share of the models whose own call agrees with the consensus "
        "call (same Cell Ontology term, or one above or below it)",
    )
    models: dict[str, ModelCall] | None = Field(
        None, description="consensus: each model's own call, by model id"
    )
    rolled_up_label: str | None = Field(
        None, description="``label`` at the requested level (``Unknown`` stays); with ``level``"
    )
    rolled_up_predicted: str | None = Field(
        None, description="``predicted`` at the requested level (an unmapped class keeps its name)"
    )
    rolled_up_ontology_term_id: str | None = Field(
        None, description='Cell Ontology term of ``rolled_up_predicted`` ("": unmapped class)'
    )


class CellPage(BaseModel):
    page: int
    page_size: int
    total: int
    items: list[CellPrediction]


class OntologyTermPublic(BaseModel):
    id: str = Field(..., description='CL term id ("" when the class is unmapped)')
    name: str


class OntologySummaryPublic(BaseModel):
    """The Cell Ontology term of every class of the model."""

    model_config = ConfigDict(extra="allow")
    version: str | None = None
    terms: dict[str, OntologyTermPublic] = Field(default_factory=dict)
    unmapped: list[str] = Field(default_factory=list)
    level: str | list[str] | None = Field(
        None, description="the broader level the rolled-up figures are at (when asked for)"
    )
    rolled_up_counts: dict[str, int] | None = Field(
        None, description="``label_counts`` summed at ``level`` (``Unknown`` kept)"
    )
    rolled_up_terms: dict[str, str] | None = Field(
        None, description="Cell Ontology term of each rolled-up name (mapped ones)"
    )


class TypeShare(BaseModel):
    share: float
    n_cells: int


class OutOfReferencePublic(BaseModel):
    """Cells far from every training cell of the model (``out_of_reference`` obs column)."""

    share: float
    n_cells: int
    threshold: float | None = None
    by_predicted_type: dict[str, TypeShare] = Field(default_factory=dict)


class MarkerTypePublic(BaseModel):
    """One predicted type: its top query markers against the reference's markers of the class."""

    n_cells: int
    overlap: float | None = Field(
        None, description="shared / n_markers; null when the type has too few cells"
    )
    shared_markers: list[str] = Field(default_factory=list)
    query_markers: list[str] = Field(default_factory=list)
    reference_markers: list[str] = Field(default_factory=list)


class MarkerOverlapPublic(BaseModel):
    """Per predicted type, the share of its top query markers among the reference's markers of
    that class (stored in the model); from every cell of the run, sharded or not."""

    model_config = ConfigDict(extra="allow")
    n_markers: int
    test: str
    expected_by_chance: float | None = None
    mean_overlap: float | None = Field(None, description="weighted by the types' cell counts")
    by_predicted_type: dict[str, MarkerTypePublic] = Field(default_factory=dict)


class AgreementCount(BaseModel):
    agreement: float
    n_cells: int
    share: float


class ModelAgreementPublic(BaseModel):
    agreement: float = Field(
        ...,
        description="share of cells where the model's call is the consensus call or lies above "
        "or below it in the Cell Ontology (Unknown consensus: no agreement)",
    )
    same_call: float = Field(..., description="share of cells where it is the consensus call")


class ConsensusSummaryPublic(BaseModel):
    """How the models' calls were combined, and how much they agree."""

    model_config = ConfigDict(extra="allow")
    model_ids: list[str] = Field(default_factory=list, description="the models, model_id first")
    rule: str | None = None
    min_support: float | None = None
    weights: dict[str, float] = Field(default_factory=dict, description="by model id")
    mean_agreement: float | None = None
    share_full_agreement: float | None = None
    share_unknown: float | None = None
    share_broader_term: float | None = Field(
        None, description="share of cells called a term broader than every model's classes"
    )
    agreement_distribution: list[AgreementCount] = Field(default_factory=list)
    per_model: dict[str, ModelAgreementPublic] = Field(default_factory=dict)


class GenePanelPublic(Stored):
    """How the model's genes were matched to the data's (``cellfoundry.models.base.GenePanel``)."""

    mode: str = Field(..., description="all_genes / unobserved / refit / family_default")
    n_model_genes: int
    n_present: int
    description: str
    coverage: Figure = None
    n_shared_genes: int | None = None
    reference: str | None = None


class ConfusionPublic(BaseModel):
    """Cell counts: rows are true labels, columns predicted labels."""

    labels_true: list[str]
    labels_pred: list[str]
    counts: list[list[int]]


class ConfusedPairPublic(Stored):
    true: str
    predicted: str
    count: int
    share_of_true: Figure = None
    model: str | None = Field(None, description="foundation evaluations: the method's model")
    method: str | None = None


class BaselineComparisonPublic(BaseModel):
    """The model and a logistic regression trained on the dataset, on the same held-out cells."""

    model_on_test: MetricsPublic
    logreg_baseline_on_test: MetricsPublic
    n_train: int
    n_test: int


class SeedFiguresPublic(Stored):
    """One method, one seed of a foundation evaluation (``model`` "reference": a no-information
    row, ``method`` majority or chance)."""

    model: str
    method: str
    seed: int
    n_cells: int | None = None
    accuracy: Figure = None
    macro_f1: Figure = None
    weighted_f1: Figure = None
    coverage: Figure = None
    called_accuracy: Figure = None
    called_macro_f1: Figure = None
    ece: Figure = None
    ontology_accuracy: Figure = None
    ontology_score: Figure = None
    expressible_share: Figure = None
    trainable_parameters: Figure = None
    train_seconds: Figure = None


class MethodSummaryPublic(MeanStdFigures):
    """One method of a foundation evaluation: mean and std over its seeds."""

    model: str
    method: str
    n_seeds: int
    weighted_f1_mean: Figure = None
    weighted_f1_std: Figure = None
    called_accuracy_mean: Figure = None
    called_accuracy_std: Figure = None
    ece_mean: Figure = None
    ece_std: Figure = None
    ontology_accuracy_mean: Figure = None
    ontology_accuracy_std: Figure = None
    train_seconds_mean: Figure = None
    train_seconds_std: Figure = None


class CalibrationPublic(BaseModel):
    ece_before_temperature: Figure = None
    ece_after_temperature: Figure = None


class PerClassPublic(Stored):
    model: str
    method: str
    class_: str = Field(..., alias="class")
    precision: Figure = None
    recall: Figure = None
    f1: Figure = None
    support: int


class EvaluationContextPublic(Stored):
    label_key: str | None = None
    seeds: int | None = None
    epochs: int | None = None
    methods: list[str] = Field(default_factory=list)
    split: str | None = None
    test_fraction: Figure = None
    macro_f1_over: str | None = None
    ontology_credit_rule: str | None = None
    metrics: str | None = None


class MethodRunPublic(Stored):
    """One trained method and seed of a foundation evaluation."""

    model: str
    method: str
    seed: int
    file: str | None = None
    train_seconds: Figure = None
    trainable_parameters: int | None = None
    temperature: Figure = None
    threshold: Figure = None
    random_init: bool | None = None


class FoundationReportPublic(Stored):
    """``cellfoundry.evaluation.evaluate``'s report: methods x seeds on the dataset."""

    title: str | None = None
    context: EvaluationContextPublic | None = None
    summary: list[SeedFiguresPublic] = Field(default_factory=list)
    mean_std: list[MethodSummaryPublic] = Field(default_factory=list)
    calibration: dict[str, CalibrationPublic] = Field(
        default_factory=dict, description="{model}-{method} -> ECE before / after temperature"
    )
    misclassified_top5: list[ConfusedPairPublic] = Field(default_factory=list)
    per_class: list[PerClassPublic] = Field(default_factory=list)
    runs: list[MethodRunPublic] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    images: dict[str, list[list[str]]] = Field(
        default_factory=dict, description="{model}-{method} -> [caption, file name] pairs"
    )


class ResultSummaryPublic(Stored):
    """The run's stored summary: an annotation's fields, then the other applications' (embedding,
    evaluation, fine-tuning). Only the keys the run stored are sent; a stored key that no field
    names is passed through as stored."""

    model_config = ConfigDict(extra="allow")
    n_cells: int | None = None
    label_counts: dict[str, int] | None = None
    mean_confidence: float | None = None
    unknown_share: float | None = None
    unknown_threshold: float | None = None
    gene_coverage: float | None = Field(
        None, description="share of the model's genes present in the data"
    )
    gene_panel_mode: str | None = Field(
        None, description="all_genes / unobserved / refit / family_default"
    )
    species: str | None = None
    ontology: OntologySummaryPublic | None = None
    out_of_reference: OutOfReferencePublic | None = None
    marker_overlap: MarkerOverlapPublic | None = None
    consensus: ConsensusSummaryPublic | None = None
    members: dict[str, ResultSummaryPublic] | None = Field(
        None,
        description="consensus: each model's own summary (label counts, marker_overlap, ...), "
        "by model id",
    )
    model: str | None = Field(None, description="the model's name")
    family: str | None = None
    classes: list[str] | None = None
    warnings: list[str] | None = None
    gene_mapping: str | None = None
    gene_panel: GenePanelPublic | None = None
    orthology: OrthologyReportPublic | None = None
    species_mapping: str | None = Field(
        None, description="non-human data: how its genes became human orthologs, in words"
    )
    label_key: str | None = Field(None, description="obs column of the true labels")
    metrics: MetricsPublic | None = Field(
        None,
        description="annotation with label_key: against the true labels; evaluation: the model's",
    )
    layout: str | None = Field(None, description="umap / pca")
    layout_sampled: bool | None = None
    # embedding
    embedding_dim: int | None = None
    # evaluation (a trained baseline: the built-in comparison; a foundation model: evaluate())
    evaluator: str | None = None
    n_cells_in_dataset: int | None = None
    baseline_comparison: BaselineComparisonPublic | None = None
    confusion: ConfusionPublic | None = None
    most_confused: list[ConfusedPairPublic] | None = None
    report: FoundationReportPublic | None = None
    # fine-tuning
    new_model_id: str | None = Field(None, description="the model the run registered")


class LevelOption(BaseModel):
    """A level worth asking GET /results for (``level=``): a named set, or a broader CL term
    that merges at least two (not all) of the run's predicted types."""

    level: str = Field(description="the value to give as ``level``")
    name: str = Field(description="the set's name, or the CL term's name")
    term: str | None = Field(None, description="the CL term id (none for a named set)")
    labels: list[str] = Field(description="the run's predicted types under it")
    n_cells: int = Field(description="cells of those types")


class ResultsPublic(BaseModel):
    """``layout`` is present when the run stored one, ``cells`` when it has per-cell output."""

    run: RunPublic
    summary: ResultSummaryPublic
    files: list[str]
    layout: LayoutPublic | None = None
    cells: CellPage | None = None
    level: str | None = Field(
        default=None,
        description="the level asked for: summary.ontology has rolled-up counts, the cells "
        "rolled-up labels and terms, and the layout's labels are at this level",
    )
    levels: list[LevelOption] | None = Field(
        default=None,
        description="the levels worth offering for this run: the named sets ('broad'), then the "
        "Cell Ontology terms that merge at least two of its predicted types, most cells first "
        "(any other CL id or name can be given as well)",
    )


DOWNLOAD_CONTENT: dict[str, Any] = {
    "application/x-hdf5": {"schema": {"type": "string", "format": "binary"}},
    "text/csv": {"schema": {"type": "string"}},
    "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
}


# --- real time ----------------------------------------------------------------------------------


Cell = Annotated[dict[str, float], Field(min_length=1)]  # one cell of /predict: {gene: value}


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    expression: Cell | Annotated[list[Cell], Field(min_length=1)] = Field(
        ...,
        description="one cell {gene: value}, or a list of cells (each with at least one gene)",
        examples=[{"CD19": 8.5, "MS4A1": 9.2}],
    )
    model_id: str | None = Field(
        None, pattern=ID_PATTERN, description="default: the first preloaded model"
    )
    top_k: int = Field(3, ge=1, le=50)
    values: Literal["counts", "lognorm"] = Field(
        "counts", description="raw counts or log1p-CP10k values"
    )
    threshold: float | None = Field(None, ge=0, le=1)
    species: str | None = Field(
        None,
        max_length=40,
        description="species of the genes (human, mouse, rhesus, cynomolgus, pig); default: "
        "detected from the gene names. Non-human genes are mapped to human orthologs.",
    )
    panel: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        None,
        max_length=100_000,
        description="the genes measured for these cells (e.g. the var names of a filtered matrix). "
        "A panel gene that a cell does not name is zero; a model gene outside the panel is "
        "unobserved (reference mean), as in a batch run on that matrix. Default: a model gene "
        "that a cell does not name counts as zero.",
    )


class CellLabels(BaseModel):
    label: str
    confidence: float
    unknown: bool
    top_k: list[TopLabel]


class CoveragePublic(BaseModel):
    n_model_genes: int
    n_present: int
    fraction_present: float
    missing_examples: list[str]


class OrthologyPublic(BaseModel):
    table: str
    n_genes: int
    n_genes_mapped: int
    n_human_genes: int
    fraction_counts_mapped: float | None


class PredictPublic(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    model_id: str
    threshold: float
    values: Literal["counts", "lognorm"]
    predictions: list[CellLabels]
    coverage: CoveragePublic
    warnings: list[str]
    species: str
    orthology: OrthologyPublic | None = None
