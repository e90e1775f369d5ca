"""Database rows as the API shows them (the ``*Public`` schemas)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from cellfoundry.errors import looks_internal, public_text
from cellfoundry.jobs.applications import APPLICATIONS
from cellfoundry.service.schemas import (
    DatasetPublic,
    ModelPublic,
    RunPublic,
    ValidationReportPublic,
)
from cellfoundry.store.model_records import check_ready
from cellfoundry.store.storage import FileStorage
from cellfoundry.store.tables import Dataset, Evaluation, ModelRecord, Run, RunState


@cache
def api_prefixes() -> frozenset[str]:
    """The first parts of the API's paths (``runs``, ``datasets``, ...): paths under them are
    the API's own and stay in messages; every other absolute path is the server's."""
    from cellfoundry.service.routes import ROUTERS  # the routes import this module

    paths = (getattr(r, "path", "") for router in ROUTERS for r in router.routes)
    return frozenset(p.strip("/").split("/")[0] for p in paths) | {"docs", "openapi.json"}


def client_text(text: str, roots: Iterable[str | Path] = ()) -> str:
    """``text`` as a client may see it: server paths cut to their last part (API paths kept)."""
    return public_text(text, roots, api_prefixes())


def run_public(run: Run) -> RunPublic:
    err = None
    if run.state == RunState.FAILED or run.error_message:
        message, hint = run.error_message or "", run.error_hint or ""
        if looks_internal(message) or looks_internal(hint):  # stored by an older version
            message = "the run stopped on an unexpected error"
            hint = "the worker log has the details"
        err = {
            "code": run.error_code,
            "message": run.error_message and client_text(message),
            "hint": run.error_hint and client_text(hint),
        }
    return RunPublic.model_validate(
        {
            "id": run.id,
            "state": run.state,
            "stage": run.stage,
            "progress": run.progress,
            "application_id": run.application_id,
            "dataset_id": run.dataset_id,
            "model_id": run.model_id,
            "model_ids": [run.model_id, *(run.params or {}).get("other_model_ids", [])],
            "params": run.params,
            "attempts": run.attempts,
            "worker": run.worker,
            "created_at": run.created_at,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "updated_at": run.updated_at,
            "error": err,
        }
    )


def dataset_public(d: Dataset, duplicate: bool = False) -> DatasetPublic:
    return DatasetPublic(
        id=d.id,
        filename=d.filename,
        sha256=d.sha256,
        size_bytes=d.size_bytes,
        format=d.format,
        n_cells=d.n_cells,
        n_genes=d.n_genes,
        created_at=d.created_at,
        report=ValidationReportPublic.model_validate(d.report),
        duplicate=duplicate,
    )


def model_public(session: Session, storage: FileStorage, rec: ModelRecord) -> ModelPublic:
    """A model as the API shows it: metrics come from stored evaluations and the training hold-out."""
    evals = session.scalars(
        select(Evaluation)
        .where(Evaluation.model_id == rec.id)
        .order_by(Evaluation.created_at.desc())
        .limit(20)
    ).all()
    ready, status = check_ready(storage, rec)
    apps = [a.id for a in APPLICATIONS.values() if a.accepts(rec.family)]
    return ModelPublic.model_validate(
        {
            "id": rec.id,
            "name": rec.name,
            "family": rec.family,
            "size_bytes": rec.size_bytes,
            "n_genes": rec.n_genes,
            "classes": rec.classes,
            "requirements": rec.requirements,
            "ready": ready,
            "status": status,
            "applications": apps,
            "metrics": {
                "training_holdout": rec.training_metrics,
                "evaluations": [
                    {
                        "run_id": e.run_id,
                        "dataset_id": e.dataset_id,
                        "label_key": e.label_key,
                        "metrics": e.metrics,
                        "created_at": e.created_at,
                    }
                    for e in evals
                ],
            },
            "source_run_id": rec.source_run_id,
            "created_at": rec.created_at,
        }
    )
