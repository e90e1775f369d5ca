"""The Celery application: the same task code as the local workers, acks late, idempotent by run id."""

from __future__ import annotations

import contextlib
from typing import Any

from celery import Celery, signals

from cellfoundry.service.settings import Settings, get_settings

_APP: Celery | None = None


def make_app(settings: Settings) -> Celery:
    """A Celery app for ``settings`` (broker = Redis; no result backend: the database holds state)."""
    app = Celery("cellfoundry", broker=settings.broker_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=settings.queue_name,
        broker_connection_timeout=settings.broker_timeout_s,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.celery_visibility_timeout_s,
            "socket_timeout": settings.broker_timeout_s,
            "socket_connect_timeout": settings.broker_timeout_s,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )

    @app.task(name="cellfoundry.run", bind=True, acks_late=True, reject_on_worker_lost=True)
    def run_task(self: Any, run_id: str) -> str:
        from cellfoundry.jobs.engine import get_engine

        return get_engine(settings, "celery").execute_run(run_id)

    @app.task(name="cellfoundry.shard", bind=True, acks_late=True, reject_on_worker_lost=True)
    def shard_task(self: Any, run_id: str, idx: int) -> str:
        from cellfoundry.jobs.engine import get_engine

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
    from cellfoundry.jobs.engine import get_engine

    engine = get_engine(get_settings(), "celery")
    with contextlib.suppress(Exception):  # the tasks report their own errors
        engine.warm_up()
    engine.start_presence()


@signals.worker_ready.connect
def _ready(**_: Any) -> None:
    from cellfoundry.jobs.engine import get_engine

    engine = get_engine(get_settings(), "celery")
    with contextlib.suppress(Exception):
        engine.warm_up()  # the solo pool runs tasks in this process
    engine.start_presence()


app = get_app()
