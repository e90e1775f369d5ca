"""The FastAPI application factory: routes, auth, JSON errors, start-up and the web UI."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from cellfoundry.errors import CellfoundryError
from cellfoundry.jobs.applications import APPLICATIONS, get_application
from cellfoundry.jobs.engine import Engine
from cellfoundry.jobs.queue import QueueUnavailable
from cellfoundry.service.models import check_ready, model_public, sync_applications
from cellfoundry.service.predict import Predictor
from cellfoundry.service.schemas import (
    ID_PATTERN,
    DatasetPublic,
    ErrorResponse,
    PredictRequest,
    RunPage,
    RunPublic,
    SubmitCreate,
    SubmitPublic,
)
from cellfoundry.service.settings import Settings, get_settings
from cellfoundry.service.upload import UploadProblem, receive_upload
from cellfoundry.store.db import Database, migrate
from cellfoundry.store.keys import verify_key
from cellfoundry.store.storage import FileStorage
from cellfoundry.store.tables import Dataset, ModelRecord, Result, Run, User, Worker, utcnow

log = logging.getLogger("cellfoundry.service")

STATUS_OF_CODE = {
    "low_gene_coverage": 422,
    "invalid_params": 422,
    "invalid_id": 422,
    "invalid_data": 422,
    "unknown_application": 404,
    "queue_unavailable": 503,
    "unsupported_model": 422,
    "invalid_expression": 422,
}
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
}


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message", "hint"}}`` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.hint = status, code, message, hint


def _err(
    status: int,
    code: str,
    message: str,
    hint: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "hint": hint}},
        status_code=status,
        headers=headers,
    )


def _iso(t: dt.datetime | None) -> dt.datetime | None:
    return t if t is None or t.tzinfo else t.replace(tzinfo=dt.UTC)


class Platform:
    """What the app holds: settings, database, storage, predictor and the API-side engine."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url)
        self.storage = FileStorage(settings.storage)
        self.engine = Engine(settings, "api", self.db)
        self.predictor = Predictor()
        self._keys: dict[str, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    def start(self) -> None:
        with self.db.session() as s:
            sync_applications(s)
        self.preload()
        self._reaper = threading.Thread(target=self._reap_loop, daemon=True, name="cf-reaper")
        self._reaper.start()

    def stop(self) -> None:
        self._stop.set()
        self.db.dispose()

    def _reap_loop(self) -> None:
        while not self._stop.wait(self.settings.reaper_s):
            try:
                for item in self.engine.reap():
                    log.warning("re-queued %s after its worker stopped responding", item)
            except Exception:
                log.exception("stale-run recovery failed")

    def preload(self) -> None:
        with self.db.session() as s:
            recs = s.scalars(select(ModelRecord).order_by(ModelRecord.created_at)).all()
        wanted = set(self.settings.preload_models)
        for rec in recs:
            if wanted and rec.id not in wanted:
                continue
            try:
                ann = self.engine.annotator(rec)
                self.predictor.add(rec.id, ann)
            except CellfoundryError as exc:
                log.info("model %s not preloaded for /predict: %s", rec.id, exc.message)

    def user_for_key(self, key: str) -> str | None:
        now = time.monotonic()
        hit = self._keys.get(key)
        if hit and hit[1] > now:
            return hit[0]
        with self.db.session() as s:
            user = verify_key(s, key)
            uid = user.id if user else None
        if uid:
            if len(self._keys) > 10_000:
                self._keys.clear()
            self._keys[key] = (uid, now + self.settings.key_cache_s)
        return uid


def _platform(request: Request) -> Platform:
    return request.app.state.platform  # type: ignore[no-any-return]


def get_session(request: Request) -> Iterator[Session]:
    """A database session for one request."""
    with _platform(request).db.session() as s:
        yield s


def current_user(request: Request) -> str:
    """The id of the user owning the request's ``Authorization: Bearer KEY``; 401 otherwise."""
    auth = request.headers.get("authorization", "")
    scheme, _, key = auth.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401,
            "unauthorized",
            "this endpoint needs an API key",
            "send 'Authorization: Bearer KEY' (create one with: cellfoundry keys create NAME)",
        )
    uid = _platform(request).user_for_key(key.strip())
    if uid is None:
        raise ApiError(
            401,
            "invalid_key",
            "the API key is unknown or revoked",
            "create a new key with: cellfoundry keys create NAME",
        )
    return uid


async def current_user_fast(request: Request) -> str:
    """``current_user`` on the event loop (keys are cached, so the database is rarely touched)."""
    return current_user(request)


SessionDep = Annotated[Session, Depends(get_session)]
UserDep = Annotated[str, Depends(current_user)]
RunId = Annotated[str, PathParam(pattern=ID_PATTERN, description="a run id from POST /submit")]


def create_app(settings: Settings | None = None, run_migrations: bool = True) -> FastAPI:
    """The API for ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    if run_migrations:
        migrate(settings.database_url)
    platform = Platform(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        platform.start()
        yield
        platform.stop()

    app = FastAPI(
        title="cellfoundry",
        version="0.1.0",
        lifespan=lifespan,
        description="Annotate single-cell RNA-seq data: uploads, durable runs, real-time /predict.",
    )
    app.state.platform = platform

    # --- errors ---------------------------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _err(exc.status, exc.code, exc.message, exc.hint, headers)

    @app.exception_handler(UploadProblem)
    async def _upload_error(_: Request, exc: UploadProblem) -> JSONResponse:
        return _err(exc.status, exc.code, exc.message, exc.hint)

    @app.exception_handler(CellfoundryError)
    async def _cf_error(_: Request, exc: CellfoundryError) -> JSONResponse:
        return _err(
            STATUS_OF_CODE.get(exc.code, 422 if isinstance(exc, CellfoundryError) else 400),
            exc.code,
            exc.message,
            exc.hint,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors()[:10]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
            parts.append(f"{loc}: {e.get('msg')}")
        return _err(
            422,
            "invalid_request",
            "; ".join(parts) or "invalid request",
            "fix the listed fields; the schema is at /docs",
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(
            exc.status_code, "http_error"
        )
        hint = "see /docs for the available endpoints" if exc.status_code in (404, 405) else None
        return _err(exc.status_code, code, str(exc.detail), hint)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _err(
            500,
            "internal_error",
            f"{type(exc).__name__}: {exc}",
            "this is a bug; the server log has details",
        )

    def own_run(s: Session, run_id: str, uid: str) -> Run:
        run = s.get(Run, run_id)
        if run is None or run.owner_id != uid:
            raise ApiError(
                404, "run_not_found", f"no run '{run_id}'", "list your runs with GET /runs"
            )
        return run

    def run_public(run: Run) -> RunPublic:
        err = None
        if run.state == "failed" or run.error_message:
            err = {"code": run.error_code, "message": run.error_message, "hint": run.error_hint}
        return RunPublic.model_validate(
            {
                "id": run.id,
                "state": run.state,
                "stage": run.stage,
                "progress": run.progress,
                "application_id": run.application_id,
                "dataset_id": run.dataset_id,
                "model_id": run.model_id,
                "params": run.params,
                "attempts": run.attempts,
                "worker": run.worker,
                "created_at": _iso(run.created_at),
                "started_at": _iso(run.started_at),
                "finished_at": _iso(run.finished_at),
                "updated_at": _iso(run.updated_at),
                "error": err,
            }
        )

    # --- public ---------------------------------------------------------------------------------
    @app.get("/health", tags=["platform"])
    def health(s: SessionDep) -> dict[str, Any]:
        """Database, queue, workers and loaded models."""
        try:
            s.execute(text("SELECT 1"))
            db_ok, db_detail = True, platform.db.engine.dialect.name
        except Exception as exc:
            db_ok, db_detail = False, f"{type(exc).__name__}: {exc}"
        q_ok, q_detail = platform.engine.queue.check()
        workers: list[dict[str, Any]] = []
        if db_ok:
            since = utcnow() - dt.timedelta(seconds=max(3 * settings.heartbeat_s, 10))
            workers = [
                {
                    "name": w.name,
                    "kind": w.kind,
                    "host": w.host,
                    "pid": w.pid,
                    "last_seen": _iso(w.last_seen),
                }
                for w in s.scalars(
                    select(Worker).where(Worker.last_seen >= since, Worker.kind != "api")
                )
            ]
        ok = db_ok and q_ok
        return {
            "status": "ok" if ok else "degraded",
            "database": {"ok": db_ok, "detail": db_detail},
            "queue": {"ok": q_ok, "backend": settings.queue_backend, "detail": q_detail},
            "workers": workers,
            "loaded_models": sorted(platform.predictor.models),
        }

    @app.get("/applications", tags=["catalogue"])
    def applications() -> list[dict[str, Any]]:
        """What can be done, with each application's params schema."""
        return [a.to_dict() for a in APPLICATIONS.values()]

    @app.get("/models", tags=["catalogue"])
    def models(s: SessionDep) -> list[dict[str, Any]]:
        """Registered models with measured metrics, size, input requirements and readiness."""
        recs = s.scalars(select(ModelRecord).order_by(ModelRecord.created_at)).all()
        return [model_public(s, platform.storage, r) for r in recs]

    @app.get("/applications/{app_id}/models", tags=["catalogue"], responses=ERRORS)
    def app_models(
        app_id: Annotated[str, PathParam(pattern=ID_PATTERN)], s: SessionDep
    ) -> list[dict[str, Any]]:
        """The models that serve an application."""
        spec = get_application(app_id)
        recs = s.scalars(select(ModelRecord).order_by(ModelRecord.created_at)).all()
        return [model_public(s, platform.storage, r) for r in recs if spec.accepts(r.family)]

    # --- datasets -------------------------------------------------------------------------------
    @app.post("/upload", tags=["data"], responses=ERRORS, response_model=DatasetPublic)
    async def upload(request: Request, uid: UserDep) -> DatasetPublic:
        """Multipart upload (field ``file``) of .h5ad / 10x .h5 / CSV; the same file twice is one dataset."""
        up = await receive_upload(request, platform.storage.tmp_dir(), settings.upload_limit_bytes)
        from starlette.concurrency import run_in_threadpool

        try:
            return await run_in_threadpool(_register_upload, platform, uid, up)
        finally:
            up.path.unlink(missing_ok=True)

    @app.get("/datasets", tags=["data"], responses=ERRORS)
    def datasets(s: SessionDep, uid: UserDep) -> list[DatasetPublic]:
        """Your datasets."""
        rows = s.scalars(
            select(Dataset).where(Dataset.owner_id == uid).order_by(Dataset.created_at.desc())
        ).all()
        return [_dataset_public(d) for d in rows]

    @app.get("/datasets/{dataset_id}", tags=["data"], responses=ERRORS)
    def dataset(
        dataset_id: Annotated[str, PathParam(pattern=ID_PATTERN)], s: SessionDep, uid: UserDep
    ) -> DatasetPublic:
        """One of your datasets with its validation report."""
        d = s.get(Dataset, dataset_id)
        if d is None or d.owner_id != uid:
            raise ApiError(
                404,
                "dataset_not_found",
                f"no dataset '{dataset_id}'",
                "list yours with GET /datasets",
            )
        return _dataset_public(d)

    # --- runs -----------------------------------------------------------------------------------
    @app.post(
        "/submit",
        tags=["runs"],
        responses={**ERRORS, 503: {"model": ErrorResponse}},
        status_code=201,
    )
    def submit(body: SubmitCreate, s: SessionDep, uid: UserDep) -> SubmitPublic:
        """Queue a run of an application on a dataset with a model (params validated first)."""
        d = s.get(Dataset, body.dataset_id)
        if d is None or d.owner_id != uid:
            raise ApiError(
                404,
                "dataset_not_found",
                f"no dataset '{body.dataset_id}'",
                "upload the data first (POST /upload) and use the returned id",
            )
        rec = s.get(ModelRecord, body.model_id)
        if rec is None:
            raise ApiError(
                404, "model_not_found", f"no model '{body.model_id}'", "see GET /models for the ids"
            )
        spec = get_application(body.application_id)
        if not spec.accepts(rec.family):
            raise ApiError(
                422,
                "model_not_supported",
                f"application '{spec.id}' does not accept {rec.family} models",
                f"see GET /applications/{spec.id}/models",
            )
        params = spec.validate(body.params).model_dump(mode="json")
        ready, status = check_ready(platform.storage, rec)
        if not ready:
            raise ApiError(
                409,
                "model_not_ready",
                f"model '{rec.id}' is not ready: {status}",
                "restore the model's artifact folder or choose another model",
            )
        queue = platform.engine.queue
        ok, detail = queue.check()
        if not ok:
            raise ApiError(
                503,
                "queue_unavailable",
                f"the job queue is unavailable: {detail}",
                "start Redis (or fix CELLFOUNDRY_BROKER_URL) and submit again; nothing was queued",
            )
        run = Run(
            owner_id=uid,
            dataset_id=d.id,
            model_id=rec.id,
            application_id=spec.id,
            params=params,
            backend=settings.queue_backend,
        )
        s.add(run)
        s.commit()
        try:
            queue.dispatch_run(run.id)
        except QueueUnavailable as exc:
            s.delete(run)
            s.commit()
            raise ApiError(
                503, "queue_unavailable", exc.message, (exc.hint or "") + "; nothing was queued"
            ) from exc
        return SubmitPublic(run_id=run.id, state=run.state)

    @app.get("/status/{run_id}", tags=["runs"], responses=ERRORS)
    def status(run_id: RunId, s: SessionDep, uid: UserDep) -> RunPublic:
        """State, stage, progress (0-100), timestamps and the reason of a failure."""
        return run_public(own_run(s, run_id, uid))

    @app.post("/runs/{run_id}/cancel", tags=["runs"], responses=ERRORS)
    def cancel(run_id: RunId, s: SessionDep, uid: UserDep) -> RunPublic:
        """Cancel a queued or running run (a finished run is left as it is)."""
        run = own_run(s, run_id, uid)
        if run.state in ("queued", "running"):
            run.state, run.stage, run.finished_at = "cancelled", "cancelled", utcnow()
            s.commit()
        return run_public(run)

    @app.get("/runs", tags=["runs"], responses=ERRORS)
    def runs(
        s: SessionDep,
        uid: UserDep,
        state: Annotated[
            str | None, Query(pattern="^(queued|running|succeeded|failed|cancelled)$")
        ] = None,
        application_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        dataset_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        page: Annotated[int, Query(ge=1)] = 1,
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
        return RunPage(
            items=[run_public(r) for r in rows], total=total, page=page, page_size=page_size
        )

    def finished_result(s: Session, run_id: str, uid: str) -> tuple[Run, Result]:
        run = own_run(s, run_id, uid)
        if run.state != "succeeded":
            reason = f": {run.error_message}" if run.error_message else ""
            raise ApiError(
                409,
                "run_not_finished",
                f"run '{run_id}' is {run.state}{reason}",
                "poll GET /status/{run_id} until the state is 'succeeded'",
            )
        res = s.get(Result, run_id)
        if res is None:
            raise ApiError(
                404,
                "result_not_found",
                f"run '{run_id}' has no stored result",
                "submit the run again",
            )
        return run, res

    @app.get("/results/{run_id}", tags=["runs"], responses=ERRORS)
    def results(
        run_id: RunId,
        s: SessionDep,
        uid: UserDep,
        page: Annotated[int, Query(ge=1)] = 1,
        page_size: Annotated[int, Query(ge=1, le=5000)] = 100,
    ) -> dict[str, Any]:
        """Summary, 2-D layout (per point: confidence, top 3, obs columns), paged per-cell predictions."""
        run, res = finished_result(s, run_id, uid)
        out: dict[str, Any] = {
            "run": run_public(run).model_dump(mode="json"),
            "summary": res.summary,
            "files": sorted(res.files),
        }
        if "layout" in res.files:
            out["layout"] = _layout_block(platform, s, run, res)
        if "predictions" in res.files:
            out["cells"] = _page_predictions(
                platform.storage.resolve(res.files["predictions"]), page, page_size
            )
        return out

    @app.get("/download/{run_id}", tags=["runs"], responses=ERRORS)
    def download(
        run_id: RunId,
        s: SessionDep,
        uid: UserDep,
        format: Annotated[str, Query(pattern="^(h5ad|csv|parquet)$")] = "h5ad",
    ) -> Response:
        """The annotated dataset (h5ad) or the per-cell predictions (csv, parquet), streamed."""
        run, res = finished_result(s, run_id, uid)
        if "predictions" not in res.files:
            raise ApiError(
                404,
                "no_predictions",
                f"run '{run_id}' ({run.application_id}) has no per-cell output",
                "download annotation or evaluation runs",
            )
        pred = platform.storage.resolve(res.files["predictions"])
        if format == "parquet":
            return FileResponse(
                pred, media_type="application/vnd.apache.parquet", filename=f"{run_id}.parquet"
            )
        if format == "csv":
            return StreamingResponse(
                _csv_stream(pred),
                media_type="text/csv",
                headers={"Content-Disposition": f'attachment; filename="{run_id}.csv"'},
            )
        if "probabilities" not in res.files:
            raise ApiError(
                404,
                "no_annotated_dataset",
                f"run '{run_id}' has no annotated dataset",
                "use format=csv or format=parquet",
            )
        d = s.get(Dataset, run.dataset_id)
        assert d is not None
        path = _annotated_h5ad(platform, run, res, d)
        return FileResponse(path, media_type="application/x-hdf5", filename=f"{run_id}.h5ad")

    # --- real time ------------------------------------------------------------------------------
    predict_body = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
        }
    }

    @app.post("/predict", tags=["predict"], responses=ERRORS, openapi_extra=predict_body)
    async def predict(
        request: Request, uid: Annotated[str, Depends(current_user_fast)]
    ) -> Response:
        """Top-k labels per cell from a preloaded model; same preprocessing and answer as a batch run.

        Body: ``PredictRequest`` (parsed and validated in one pass by pydantic's JSON parser).
        """
        try:
            body = PredictRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        cells = body.expression if isinstance(body.expression, list) else [body.expression]
        if not cells or any(not c for c in cells):
            raise ApiError(
                422,
                "empty_expression",
                "every cell needs at least one gene value",
                'send {"expression": {"CD19": 8.5, ...}}',
            )
        if len(cells) > 10_000:
            raise ApiError(
                413,
                "too_many_cells",
                f"{len(cells)} cells in one request (limit 10,000)",
                "split the request or submit a batch run",
            )
        pred = platform.predictor
        mid = body.model_id or next(iter(pred.models), None)
        if mid is None:
            raise ApiError(
                503,
                "no_model_loaded",
                "no model is loaded for real-time prediction",
                "register a baseline model and restart, or set CELLFOUNDRY_PRELOAD_MODELS",
            )
        model = pred.models.get(mid)
        if model is None:
            model = await _load_on_demand(platform, mid)
        out = pred.predict(
            model, cells, top_k=body.top_k, values=body.values, threshold=body.threshold
        )
        return Response(json.dumps(out), media_type="application/json")

    # --- web UI ---------------------------------------------------------------------------------
    web = settings.web_dir
    if web is not None and Path(web).is_dir():
        root = Path(web).resolve()

        api_prefixes = {r.path.strip("/").split("/")[0] for r in app.routes if hasattr(r, "path")}

        @app.get("/{full_path:path}", include_in_schema=False)
        def spa(full_path: str) -> Response:
            if full_path.split("/")[0] in api_prefixes:
                raise ApiError(
                    404, "not_found", f"no endpoint '/{full_path}'", "see /docs for the endpoints"
                )
            target = (root / full_path).resolve()
            if full_path and target.is_relative_to(root) and target.is_file():
                return FileResponse(target)
            index = root / "index.html"
            if index.is_file():
                return FileResponse(index)
            raise ApiError(404, "not_found", f"no page '{full_path}'", "see /docs")

    return app


async def _load_on_demand(platform: Platform, model_id: str) -> Any:
    from starlette.concurrency import run_in_threadpool

    def load() -> Any:
        with platform.db.session() as s:
            rec = s.get(ModelRecord, model_id)
            if rec is None:
                raise ApiError(
                    404, "model_not_found", f"no model '{model_id}'", "see GET /models for the ids"
                )
            s.expunge(rec)
        platform.predictor.add(model_id, platform.engine.annotator(rec))
        return platform.predictor.models[model_id]

    return await run_in_threadpool(load)


def _dataset_public(d: Dataset, duplicate: bool = False) -> DatasetPublic:
    return DatasetPublic(
        id=d.id,
        filename=d.filename,
        sha256=d.sha256,
        size_bytes=d.size_bytes,
        format=d.format,
        n_cells=d.n_cells,
        n_genes=d.n_genes,
        created_at=_iso(d.created_at),  # type: ignore[arg-type]
        report=d.report,
        duplicate=duplicate,
    )


def _register_upload(platform: Platform, uid: str, up: Any) -> DatasetPublic:
    """Validate the uploaded file, keep one copy per content hash, and record the dataset."""
    import os

    from cellfoundry.data.io import detect_format, read_data
    from cellfoundry.data.report import coverage, validate
    from cellfoundry.jobs.engine import _jsonable

    with platform.db.session() as s:
        existing = s.scalar(
            select(Dataset).where(Dataset.owner_id == uid, Dataset.sha256 == up.sha256)
        )
        if existing is not None:
            return _dataset_public(existing, duplicate=True)
    folder = platform.storage.dataset_dir(up.sha256)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / up.filename
    if not dest.exists():
        os.replace(up.path, dest)  # same file system (storage/tmp): a rename, not a copy
    try:
        fmt = detect_format(dest)
        adata = read_data(dest, backed=fmt == "h5ad")
        report = validate(adata)
        if report.errors:
            first = report.errors[0]
            raise ApiError(422, first.code, f"{up.filename}: {first.message}", first.hint)
        for mid, lm in list(platform.predictor.models.items()):
            ann = lm.annotator
            try:
                coverage(
                    adata,
                    report,
                    ann.genes,
                    f"model {mid}",
                    "ensembl" if ann.manifest.gene_key_kind == "ensembl" else "symbol",
                )
            except Exception as exc:  # coverage is informative; never block the upload on it
                log.warning("coverage for %s failed: %s", mid, exc)
        if getattr(adata, "isbacked", False):
            adata.file.close()
    except ApiError:
        _drop_blob(folder, dest)
        raise
    except CellfoundryError as exc:
        _drop_blob(folder, dest)
        raise ApiError(
            422, exc.code if exc.code != "error" else "unreadable_file", exc.message, exc.hint
        ) from exc
    except Exception as exc:
        _drop_blob(folder, dest)
        raise ApiError(
            422,
            "unreadable_file",
            f"{up.filename} could not be read: {type(exc).__name__}: {exc}",
            "upload a valid .h5ad, 10x .h5 or cells x genes CSV",
        ) from exc
    with platform.db.session() as s:
        existing = s.scalar(
            select(Dataset).where(Dataset.owner_id == uid, Dataset.sha256 == up.sha256)
        )
        if existing is not None:
            return _dataset_public(existing, duplicate=True)
        d = Dataset(
            owner_id=uid,
            sha256=up.sha256,
            filename=up.filename,
            path=platform.storage.relative(dest),
            size_bytes=up.size,
            format=fmt,
            n_cells=report.n_cells,
            n_genes=report.n_genes,
            report=_jsonable(report.to_dict()),
        )
        s.add(d)
        s.flush()
        return _dataset_public(d)


def _drop_blob(folder: Path, dest: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def _layout_block(platform: Any, s: Session, run: Run, res: Result) -> dict[str, Any]:
    """The 2-D points with, per point, the stored prediction (confidence, top 3) and obs values."""
    import pandas as pd

    from cellfoundry.jobs.applications import OBS_PREFIX, categorical_obs, read_dataset

    lay = pd.read_parquet(platform.storage.resolve(res.files["layout"]))
    cells = lay["cell"].astype(str).tolist()
    block: dict[str, Any] = {
        "method": res.summary.get("layout"),
        "sampled": bool(res.summary.get("layout_sampled")),
        "n_points": len(lay),
        "cells": cells,
        "x": lay["x"].astype(float).round(4).tolist(),
        "y": lay["y"].astype(float).round(4).tolist(),
        "labels": lay["label"].astype(str).tolist() if "label" in lay else None,
        "confidence": None,
        "top3": None,
    }
    if "predictions" in res.files:
        pred = _prediction_rows(platform.storage.resolve(res.files["predictions"]), lay)
        if pred is not None:
            block["confidence"] = [float(c) for c in pred["prediction_confidence"]]
            tops = [c.removesuffix("_label") for c in pred.columns if c.endswith("_label")]
            labels = [pred[f"{t}_label"].astype(str).tolist() for t in tops]
            probs = [pred[f"{t}_probability"].astype(float).tolist() for t in tops]
            block["top3"] = [
                [
                    {"label": lab[j], "probability": pr[j]}
                    for lab, pr in zip(labels, probs, strict=True)
                ]
                for j in range(len(pred))
            ]
    obs_cols = [c for c in lay.columns if str(c).startswith(OBS_PREFIX)]
    if obs_cols:
        block["obs"] = {
            c.removeprefix(OBS_PREFIX): [None if pd.isna(v) else str(v) for v in lay[c]]
            for c in obs_cols
        }
    else:  # layouts written before the obs columns were stored: read them from the dataset
        block["obs"] = {}
        d = s.get(Dataset, run.dataset_id)
        if d is not None and "i" in lay:
            try:
                adata = read_dataset(platform.storage.resolve(d.path), backed=True)
                if adata.n_obs > int(lay["i"].max()):
                    block["obs"] = categorical_obs(adata.obs, lay["i"].to_numpy())
            except (OSError, CellfoundryError) as exc:
                log.warning("obs columns of %s unavailable: %s", run.id, exc)
    return block


def _prediction_rows(path: Path, lay: Any) -> Any:
    """The stored prediction rows of the layout's points, in the layout's order (None: no match)."""
    import numpy as np
    import pyarrow.parquet as pq

    cols = [
        c
        for c in pq.read_schema(path).names
        if c in ("cell", "prediction_confidence")
        or (c.startswith("top") and c.endswith(("_label", "_probability")))
    ]
    table = pq.read_table(path, columns=cols)
    cells = lay["cell"].astype(str).to_numpy()
    if "i" in lay:
        idx = lay["i"].to_numpy(dtype=np.int64)
        if len(idx) == 0 or (idx.min() >= 0 and idx.max() < table.num_rows):
            rows = table.take(idx).to_pandas()
            if np.array_equal(rows["cell"].astype(str).to_numpy(), cells):
                return rows.reset_index(drop=True)
    frame = table.to_pandas().drop_duplicates("cell").set_index("cell")
    frame.index = frame.index.astype(str)
    if not np.isin(cells, frame.index).all():
        return None
    return frame.loc[cells].reset_index()


def _page_predictions(path: Path, page: int, page_size: int) -> dict[str, Any]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    total = table.num_rows
    chunk = table.slice((page - 1) * page_size, page_size).to_pandas()
    items = []
    tops = [
        c.removesuffix("_label")
        for c in chunk.columns
        if c.startswith("top") and c.endswith("_label")
    ]
    for rec in chunk.to_dict(orient="records"):
        items.append(
            {
                "cell": str(rec["cell"]),
                "label": str(rec["display_label"]),
                "predicted": str(rec["predicted_cell_type"]),
                "confidence": float(rec["prediction_confidence"]),
                "unknown": bool(rec["prediction_unknown"]),
                "top3": [
                    {"label": str(rec[f"{t}_label"]), "probability": float(rec[f"{t}_probability"])}
                    for t in tops
                ],
                **({"true_label": str(rec["true_label"])} if "true_label" in rec else {}),
            }
        )
    return {"page": page, "page_size": page_size, "total": total, "items": items}


def _csv_stream(path: Path) -> Iterator[bytes]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    first = True
    for batch in pf.iter_batches(batch_size=20_000):
        yield batch.to_pandas().to_csv(index=False, header=first).encode()
        first = False


_H5AD_LOCK = threading.Lock()


def _annotated_h5ad(platform: Platform, run: Run, res: Result, d: Dataset) -> Path:
    """The dataset with the run's predictions written in (built once, then served from disk)."""
    import numpy as np

    from cellfoundry.data.io import read_data
    from cellfoundry.result import AnnotationResult

    out = platform.storage.run_dir(run.id) / "annotated.h5ad"
    with _H5AD_LOCK:
        if out.is_file():
            return out
        adata = read_data(platform.storage.resolve(d.path))
        probs = np.load(platform.storage.resolve(res.files["probabilities"]))
        summ = res.summary
        ar = AnnotationResult(
            obs_names=adata.obs_names.copy(),
            classes=list(summ["classes"]),
            probabilities=probs,
            threshold=float(summ["unknown_threshold"]),
            model_name=str(summ["model"]),
            model_family=str(summ["family"]),
            warnings=list(summ.get("warnings", [])),
        )
        annotated = ar.to_adata(adata)
        annotated.uns["cellfoundry"]["run_id"] = run.id
        tmp = out.with_suffix(".tmp.h5ad")
        annotated.write_h5ad(tmp)
        tmp.replace(out)
    return out


def user_name(s: Session, uid: str) -> str | None:
    u = s.get(User, uid)
    return u.name if u else None
