"""``GET /health``: ok or degraded for anyone; the checks, workers and models with an API key."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Literal

from fastapi import APIRouter, Request
from sqlalchemy import select, text

from cellfoundry.service.deps import PlatformDep, SessionDep, user_of_request
from cellfoundry.service.schemas import HealthPublic, errors
from cellfoundry.store.tables import Worker, utcnow

router = APIRouter(tags=["platform"])
log = logging.getLogger("cellfoundry.service")


@router.get(
    "/health", response_model=HealthPublic, response_model_exclude_unset=True, responses=errors()
)
def health(request: Request, s: SessionDep, platform: PlatformDep) -> HealthPublic:
    """``status`` (ok or degraded); with a valid API key also database, queue, workers and models."""
    settings = platform.settings
    try:
        s.execute(text("SELECT 1"))
        db_ok, db_detail = True, platform.db.engine.dialect.name
    except Exception as exc:
        log.warning("health: database check failed: %r", exc)
        db_ok, db_detail = False, "unreachable"
    q_ok, q_detail = platform.engine.queue.check()
    status: Literal["ok", "degraded"] = "ok" if db_ok and q_ok else "degraded"
    try:
        user_of_request(request, platform)
    except Exception:  # no key, a bad key, or no database to check it against
        return HealthPublic(status=status)
    workers = []
    if db_ok:
        since = utcnow() - dt.timedelta(seconds=max(3 * settings.heartbeat_s, 10))
        workers = [
            {
                "name": w.name,
                "kind": w.kind,
                "host": w.host,
                "pid": w.pid,
                "last_seen": w.last_seen,
            }
            for w in s.scalars(
                select(Worker).where(Worker.last_seen >= since, Worker.kind != "api")
            )
        ]
    return HealthPublic.model_validate(
        {
            "status": status,
            "database": {"ok": db_ok, "detail": db_detail},
            "queue": {"ok": q_ok, "backend": settings.queue_backend, "detail": q_detail},
            "workers": workers,
            "loaded_models": sorted(platform.predictor.models),
        }
    )
