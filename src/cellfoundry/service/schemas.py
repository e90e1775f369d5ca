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


# --- catalogue ----------------------------------------------------------------------------------


class ApplicationPublic(BaseModel):
    id: str
    name: str
    description: str
    families: list[str] | None = Field(..., description="model families accepted; null: every")
    params_schema: dict[str, Any] = Field(..., description="JSON schema of the run's params")


class EvaluationPublic(BaseModel):
    run_id: str
    dataset_id: str
    label_key: str
    metrics: dict[str, Any]
    created_at: UtcDatetime


class ModelMetricsPublic(BaseModel):
    training_holdout: dict[str, Any]
    evaluations: list[EvaluationPublic]


class ModelPublic(BaseModel):
    id: str
    name: str
    family: str
    size_bytes: int
    n_genes: int
    classes: list[str]
    requirements: dict[str, Any]
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
    report: dict[str, Any]
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


class ResultSummaryPublic(BaseModel):
    """The run's stored summary. The fields below are an annotation's; other applications add
    their own keys (evaluation metrics, confusion, ...), passed through as stored."""

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
