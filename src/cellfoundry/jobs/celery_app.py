"""The Celery application: the same task code as the local workers, acks late, idempotent by run id.

A task that meets a database error before it could claim (or record) its work is rejected and
re-queued, not acked, so the message is delivered again when the database is back. Each worker
process creates its own database engine after the fork (``worker_process_init``); pools
inherited from the parent are discarded without closing the parent's connections.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from celery import Celery, signals
from celery.exceptions import Reject

from cellfoundry.config import Settings, get_settings
from cellfoundry.jobs import engine as engine_mod
from cellfoundry.jobs.engine import get_engine
from cellfoundry.jobs.queue import MERGE_TASK, RUN_TASK, SHARD_TASK, celery_config
from cellfoundry.jobs.retry import is_transient
from cellfoundry.jobs.shards import maybe_merge

log = logging.getLogger("cellfoundry.jobs")
_APP: Celery | None = None


def requeue_on_db_error(settings: Settings, what: str, fn: Callable[[], str]) -> str:
    """``fn()``; on a transient database error the message is rejected back to the queue."""
    try:
        return fn()
    except Exception as exc:
        if not is_transient(exc):
            raise
        log.warning("%s: database unavailable (%s); message re-queued", what, type(exc).__name__)
        time.sleep(min(settings.heartbeat_s, 2.0))  # do not spin while the database is away
        raise Reject(f"database unavailable: {type(exc).__name__}", requeue=True) from exc


def make_app(settings: Settings) -> Celery:
    """A Celery app for ``settings`` (broker = Redis; no result backend: the database holds state)."""
    app = Celery("cellfoundry")
    app.conf.update(celery_config(settings))

    @app.task(name=RUN_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
    def run_task(self: Any, run_id: str) -> str:
        eng = get_engine(settings, "celery")
        return requeue_on_db_error(settings, f"run {run_id}", lambda: eng.execute_run(run_id))

    @app.task(name=SHARD_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
    def shard_task(self: Any, run_id: str, idx: int) -> str:
        eng = get_engine(settings, "celery")
        return requeue_on_db_error(
            settings, f"shard {run_id}/{idx}", lambda: eng.execute_shard(run_id, idx)
        )

    @app.task(name=MERGE_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
    def merge_task(self: Any, run_id: str) -> str:
        eng = get_engine(settings, "celery")

        def run() -> str:
            maybe_merge(eng, run_id)
            return "merged-or-skipped"

        return requeue_on_db_error(settings, f"merge of {run_id}", run)

    return app


def get_app(settings: Settings | None = None) -> Celery:
    """The process-wide Celery app."""
    global _APP
    if _APP is None:
        _APP = make_app(settings or get_settings())
    return _APP


def reset_engines_after_fork() -> None:
    """Forget the engines (and their connection pools) inherited from the parent process.

    ``dispose(close=False)`` drops the inherited connections without closing them, so the
    parent's sockets are left alone; the next ``get_engine`` builds a new engine in this process.
    """
    for eng in engine_mod._ENGINES.values():
        eng.db.engine.dispose(close=False)  # first: nothing below may use the parent's sockets
        eng.stop(
            release=False
        )  # the parent's threads did not survive the fork; its lease is its own
    engine_mod._ENGINES.clear()


@signals.worker_process_init.connect
def _start_process(**_: Any) -> None:
    reset_engines_after_fork()
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
