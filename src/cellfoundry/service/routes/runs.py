"""Queueing runs, following them and cancelling them."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from cellfoundry.errors import CellfoundryError, ConflictError, NotFoundError
from cellfoundry.jobs.applications import (
    EXPLAINABLE,
    AnnotationParams,
    ApplicationSpec,
    ConsensusParams,
    get_application,
)
from cellfoundry.jobs.queue import QueueUnavailable
from cellfoundry.jobs.shards import remove_shard_files
from cellfoundry.jobs.states import cancel_run
from cellfoundry.service.deletion import delete_runs
from cellfoundry.service.deps import OwnRunDep, PlatformDep, SessionDep, UserDep
from cellfoundry.service.idempotency import (
    SUBMIT_CREATED,
    IdempotencyKeyDep,
    keyed_run,
    replay,
    request_sha256,
)
from cellfoundry.service.json_body import JsonBodyRoute
from cellfoundry.service.public import run_public
from cellfoundry.service.quotas import check_run_quota, lock_user
from cellfoundry.service.schemas import (
    ID_PATTERN,
    MAX_PAGE,
    RunPage,
    RunPublic,
    SubmitCreate,
    SubmitPublic,
    errors,
)
from cellfoundry.store.model_records import can_use, check_ready
from cellfoundry.store.tables import Dataset, ModelRecord, Run, RunState

router = APIRouter(tags=["runs"], route_class=JsonBodyRoute)  # /submit: JSON body errors
#: test-only: set to make the API process exit right after the submit commit, before dispatch
EXIT_AFTER_COMMIT = "CELLFOUNDRY_FAULT_EXIT_AFTER_SUBMIT_COMMIT"


@router.post(
    "/submit",
    status_code=201,
    response_model=SubmitPublic,
    responses={**errors(400, 401, 404, 409, 413, 415, 429, 503), 201: SUBMIT_CREATED},
)
def submit(
    body: SubmitCreate,
    s: SessionDep,
    uid: UserDep,
    platform: PlatformDep,
    key: IdempotencyKeyDep,
    response: Response,
) -> SubmitPublic:
    """Queue a run of an application on a dataset with a model (params validated first).

    Body: a JSON object sent with ``Content-Type: application/json`` (another or no
    Content-Type: 415 ``not_json``), encoded as UTF-8 (RFC 8259 §8.1; a leading UTF-8 byte order
    mark is ignored); an empty body, one that is not UTF-8 (UTF-16 and UTF-32 included) or not
    valid JSON is refused with 422 (``empty_body``, ``body_not_utf8`` with the offset of the
    first bad byte or the encoding the body is in, ``invalid_json`` with the line, column and
    character of the error), as on ``/predict``.

    Retries: send an ``Idempotency-Key`` header (1-255 visible ASCII characters, e.g. a new
    UUID per run) and the same key with every retry of the same submit, so that a retry after
    a lost answer (a timeout, a dropped connection) creates no second run. The first request
    that creates a run stores the key; a later one of yours with the same key and the same body
    (key order and whitespace aside) answers that run again (201, its ``run_id`` and current
    ``state``, header ``Idempotent-Replayed: true``) and queues and counts nothing against your
    quota; two sent at once make one run. The same key with a different body is refused
    (422 ``idempotency_key_reused``: use a new key for a different request); a malformed key
    is 422 ``invalid_idempotency_key``. Keys are yours alone (another user's same key is
    another run) and last as long as the run: after ``DELETE /runs/{run_id}`` (or the delete
    of its dataset) the key creates a new run. A refused submit stores nothing; retry it with
    the same key. Without the header every submit creates a run.
    """
    digest = request_sha256(body)
    if key is not None and (done := keyed_run(s, uid, key)) is not None:
        return replay(done, digest, response)  # before any other check: the run exists
    d = s.get(Dataset, body.dataset_id)
    if d is None or d.owner_id != uid:
        raise NotFoundError(
            f"no dataset '{body.dataset_id}'",
            "upload the data first (POST /upload) and use the returned id",
            code="dataset_not_found",
        )
    rec = usable_model(s, platform, uid, body.model_id, "model_id")
    spec = get_application(body.application_id)
    check_accepts(spec, rec)
    validated = spec.validate(body.params)
    params = validated.model_dump(mode="json")
    recs = [rec]
    if isinstance(validated, ConsensusParams):
        if body.model_id in validated.other_model_ids:
            raise CellfoundryError(
                f"model '{body.model_id}' is both model_id and in params.other_model_ids",
                "list each model of the consensus once: model_id, then the others in "
                "params.other_model_ids",
                code="invalid_params",
            )
        for other in validated.other_model_ids:
            recs.append(usable_model(s, platform, uid, other, "params.other_model_ids"))
            check_accepts(spec, recs[-1])
    if isinstance(validated, AnnotationParams) and validated.explain:
        check_explain(recs, d.n_cells, platform.settings.explain_max_cells)
    queue = platform.engine.queue
    ok, detail = queue.check()
    if not ok:
        raise QueueUnavailable(
            f"the job queue is unavailable: {detail}",
            "start Redis (or fix CELLFOUNDRY_BROKER_URL) and submit again; nothing was queued",
        )
    if key is not None:  # a submit with this key that was at work above is done by now
        lock_user(s, uid)
        if (done := keyed_run(s, uid, key)) is not None:
            return replay(done, digest, response)
    check_run_quota(s, platform.settings, uid)  # locks the user until the run is committed
    check_not_deleted(s, d.id, [r.id for r in recs])
    run = Run(
        owner_id=uid,
        dataset_id=d.id,
        model_id=rec.id,
        application_id=spec.id,
        params=params,
        backend=platform.settings.queue_backend,
        idempotency_key=key,
        request_sha256=digest if key is not None else None,
    )
    s.add(run)
    try:
        s.commit()
    except IntegrityError:  # the unique (owner_id, idempotency_key): another submit came first
        s.rollback()
        if key is None or (done := keyed_run(s, uid, key)) is None:
            raise
        return replay(done, digest, response)
    if os.environ.get(EXIT_AFTER_COMMIT):  # fault-injection hook of the fault-matrix tests
        os._exit(70)
    try:
        queue.dispatch_run(run.id)
    except QueueUnavailable as exc:
        s.delete(run)
        s.commit()
        raise QueueUnavailable(exc.message, (exc.hint or "") + "; nothing was queued") from exc
    return SubmitPublic(run_id=run.id, state=run.state)


def usable_model(
    s: SessionDep, platform: PlatformDep, uid: str, model_id: str, field: str
) -> ModelRecord:
    """A model the caller may use and whose artifact is in place (404 / 409 otherwise)."""
    rec = s.get(ModelRecord, model_id)
    if rec is None or not can_use(rec, uid):
        raise NotFoundError(
            f"no model '{model_id}' ({field})",
            "see GET /models for the ids",
            code="model_not_found",
        )
    ready, status = check_ready(platform.storage, rec)
    if not ready:
        raise ConflictError(
            f"model '{rec.id}' is not ready: {status}",
            "restore the model's artifact folder or choose another model",
            code="model_not_ready",
        )
    return rec


def check_not_deleted(s: SessionDep, dataset_id: str, model_ids: list[str]) -> None:
    """404 when the dataset or a model was deleted after it was read (under the user's lock,
    which a delete also takes: the run is never inserted for a row that is gone)."""
    if s.scalar(select(Dataset.id).where(Dataset.id == dataset_id)) is None:
        raise NotFoundError(
            f"no dataset '{dataset_id}' (it was deleted while the run was being submitted)",
            "upload the data again (POST /upload) and submit with the returned id",
            code="dataset_not_found",
        )
    there = set(s.scalars(select(ModelRecord.id).where(ModelRecord.id.in_(model_ids))))
    for mid in model_ids:
        if mid not in there:
            raise NotFoundError(
                f"no model '{mid}' (it was deleted while the run was being submitted)",
                "see GET /models for the ids",
                code="model_not_found",
            )


def check_accepts(spec: ApplicationSpec, rec: ModelRecord) -> None:
    if not spec.accepts(rec.family):
        raise CellfoundryError(
            f"application '{spec.id}' does not accept {rec.family} models (model '{rec.id}')",
            f"see GET /applications/{spec.id}/models",
            code="model_not_supported",
        )


def check_explain(recs: list[ModelRecord], n_cells: int, max_cells: int) -> None:
    """``explain`` needs gene-based models and at most ``max_cells`` cells (422 otherwise)."""
    cannot = [f"{r.id} ({r.family})" for r in recs if r.family not in EXPLAINABLE]
    if cannot:
        raise CellfoundryError(
            f"params.explain: model {', '.join(cannot)} cannot explain its calls gene by gene",
            f"explain works with {', '.join(EXPLAINABLE)} models; submit without explain",
            code="invalid_params",
        )
    if n_cells > max_cells:
        raise CellfoundryError(
            f"params.explain: the dataset has {n_cells:,} cells; a run explains at most "
            f"{max_cells:,}",
            "submit without explain, or upload a subset of the cells to explain",
            code="invalid_params",
        )


@router.get("/status/{run_id}", response_model=RunPublic, responses=errors(401, 404))
def status(run: OwnRunDep) -> RunPublic:
    """State, stage, progress (0-100), timestamps and the reason of a failure."""
    return run_public(run)


@router.post("/runs/{run_id}/cancel", response_model=RunPublic, responses=errors(401, 404))
def cancel(run: OwnRunDep, s: SessionDep, platform: PlatformDep) -> RunPublic:
    """Cancel a queued or running run (a finished run is left as it is)."""
    if run.state in (RunState.QUEUED, RunState.RUNNING):
        cancelled = cancel_run(s, run.id)  # compare-and-set: a finished run stays finished
        s.commit()
        s.refresh(run)
        if cancelled:  # a shard still at work removes what it writes when it sees the cancel
            remove_shard_files(platform.storage, run.id)
    return run_public(run)


@router.delete(
    "/runs/{run_id}", status_code=204, response_class=Response, responses=errors(401, 404, 409)
)
def remove_run(run: OwnRunDep, s: SessionDep, platform: PlatformDep) -> Response:
    """Delete one of your finished runs and its files (409 while it is queued or running;
    a model it produced stays, with its files)."""
    delete_runs(platform, s, [run])
    s.commit()  # then its files go (deletion.remove_after_commit), then the answer
    return Response(status_code=204)


@router.get("/runs", response_model=RunPage, responses=errors(401))
def runs(
    s: SessionDep,
    uid: UserDep,
    state: Annotated[RunState | None, Query()] = None,
    application_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    dataset_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> RunPage:
    """Your runs, newest first, paged and filterable."""
    cond = [Run.owner_id == uid]
    if state:
        cond.append(Run.state == state)
    if application_id:
        cond.append(Run.application_id == application_id)
    if dataset_id:
        cond.append(Run.dataset_id == dataset_id)
    total = s.scalar(select(func.count()).select_from(Run).where(*cond)) or 0
    rows = s.scalars(
        select(Run)
        .where(*cond)
        .order_by(Run.created_at.desc(), Run.id)
        .offset((page - 1) * page_size)
        .limit(page_size)
    ).all()
    return RunPage(items=[run_public(r) for r in rows], total=total, page=page, page_size=page_size)
