"""The Celery application: the same task code as the local workers, acks late, idempotent by run id."""

from __future__ import annotations

import contextlib
from typing import Any

from celery import Celery, signals

from cellfoundry.config import Settings, get_settings
from cellfoundry.jobs.engine import get_engine
from cellfoundry.jobs.queue import RUN_TASK, SHARD_TASK, celery_config

_APP: Celery | None = None


def make_app(settings: Settings) -> Celery:
    """A Celery app for ``settings`` (broker = Redis; no result backend: the database holds state)."""
    app = Celery("cellfoundry")
    app.conf.update(celery_config(settings))

    @app.task(name=RUN_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
    def run_task(self: Any, run_id: str) -> str:
        return get_engine(settings, "celery").execute_run(run_id)

    @app.task(name=SHARD_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
    def shard_task(self: Any, run_id: str, idx: int) -> str:
        return get_engine(settings, "celery").execute_shard(run_id, idx)

    return app


def get_app(settings: Settings | None = None) -> Celery:
    """The process-wide Celery app."""
    global _APP
    if _APP is None:
        _APP = make_app(settings or get_settings())
    return _APP


@signals.worker_process_init.connect
def _start_process(**_: Any) -> None:
    engine = get_engine(get_settings(), "celery")
    with contextlib.suppress(Exception):  # the tasks report their own errors
        engine.warm_up()
    engine.start_presence()


@signals.worker_ready.connect
def _ready(**_: Any) -> None:
    engine = get_engine(get_settings(), "celery")
    with contextlib.suppress(Exception):
        engine.warm_up()  # the solo pool runs tasks in this process
    engine.start_presence()


app = get_app()
