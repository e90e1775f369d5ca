"""``GET /health``: database, queue, workers and loaded models."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter
from sqlalchemy import select, text

from cellfoundry.service.deps import PlatformDep, SessionDep
from cellfoundry.service.public import aware
from cellfoundry.service.schemas import HealthPublic, errors
from cellfoundry.store.tables import Worker, utcnow

router = APIRouter(tags=["platform"])


@router.get("/health", response_model=HealthPublic, responses=errors())
def health(s: SessionDep, platform: PlatformDep) -> HealthPublic:
    """Database, queue, workers and loaded models."""
    settings = platform.settings
    try:
        s.execute(text("SELECT 1"))
        db_ok, db_detail = True, platform.db.engine.dialect.name
    except Exception as exc:
        db_ok, db_detail = False, f"{type(exc).__name__}: {exc}"
    q_ok, q_detail = platform.engine.queue.check()
    workers = []
    if db_ok:
        since = utcnow() - dt.timedelta(seconds=max(3 * settings.heartbeat_s, 10))
        workers = [
            {
                "name": w.name,
                "kind": w.kind,
                "host": w.host,
                "pid": w.pid,
                "last_seen": aware(w.last_seen),
            }
            for w in s.scalars(
                select(Worker).where(Worker.last_seen >= since, Worker.kind != "api")
            )
        ]
    return HealthPublic.model_validate(
        {
            "status": "ok" if db_ok and q_ok else "degraded",
            "database": {"ok": db_ok, "detail": db_detail},
            "queue": {"ok": q_ok, "backend": settings.queue_backend, "detail": q_detail},
            "workers": workers,
            "loaded_models": sorted(platform.predictor.models),
        }
    )
