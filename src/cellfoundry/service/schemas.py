"""Request and response bodies of the API (pydantic)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class ErrorBody(BaseModel):
    code: str
    message: str
    hint: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class SubmitCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    dataset_id: str = Field(..., pattern=ID_PATTERN)
    model_id: str = Field(..., pattern=ID_PATTERN)
    application_id: str = Field("annotation", pattern=ID_PATTERN)
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
    params: dict[str, Any]
    attempts: int
    worker: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    updated_at: dt.datetime | None
    error: RunError | None


class RunPage(BaseModel):
    items: list[RunPublic]
    total: int
    page: int
    page_size: int


class DatasetPublic(BaseModel):
    id: str
    filename: str
    sha256: str
    size_bytes: int
    format: str
    n_cells: int
    n_genes: int
    created_at: dt.datetime
    report: dict[str, Any]
    duplicate: bool = False


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    expression: dict[str, float] | list[dict[str, float]] = Field(
        ...,
        description="one cell {gene: value}, or a list of cells",
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
