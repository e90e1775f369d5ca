"""Database rows as the API shows them (the ``*Public`` schemas)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from cellfoundry.errors import redact_paths
from cellfoundry.jobs.applications import APPLICATIONS
from cellfoundry.service.schemas import DatasetPublic, ModelPublic, RunPublic
from cellfoundry.store.model_records import check_ready
from cellfoundry.store.storage import FileStorage
from cellfoundry.store.tables import Dataset, Evaluation, ModelRecord, Run, RunState


def run_public(run: Run) -> RunPublic:
    err = None
    if run.state == RunState.FAILED or run.error_message:
        err = {
            "code": run.error_code,
            "message": run.error_message and redact_paths(run.error_message),
            "hint": run.error_hint and redact_paths(run.error_hint),
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
        report=d.report,
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
