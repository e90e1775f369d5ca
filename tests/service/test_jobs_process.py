"""Celery worker processes: a database error before the claim re-queues the message (no ack),
and each forked process builds its own engine instead of sharing the parent's connections."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from celery.exceptions import Reject

from cellfoundry.config import Settings
from cellfoundry.jobs import engine as engine_mod
from cellfoundry.jobs.celery_app import requeue_on_db_error, reset_engines_after_fork
from cellfoundry.jobs.engine import get_engine
from cellfoundry.store.db import migrate
from tests.service.conftest import free_port


def test_claim_on_a_database_error_requeues_the_message(tmp_path: Path) -> None:
    """The database is down (nothing listens on the port): the task is rejected with requeue,
    so the broker delivers it again, instead of being acked as done."""
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none?connect_timeout=1"
    settings = Settings(home=tmp_path, database_url=url, heartbeat_s=0.1)
    eng = engine_mod.Engine(settings, "celery")
    with pytest.raises(Reject) as info:
        requeue_on_db_error(settings, "run r_x", lambda: eng.execute_run("r_x"))
    assert info.value.requeue is True and "database unavailable" in str(info.value.reason)
    eng.db.dispose()


def test_a_bug_is_not_requeued_forever(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)

    def bug() -> str:
        raise KeyError("not a database error")

    with pytest.raises(KeyError):
        requeue_on_db_error(settings, "run r_x", bug)


@pytest.mark.postgres
def test_forked_worker_builds_its_own_engine(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    url = pg_database()
    migrate(url)
    settings = Settings(home=tmp_path, database_url=url)
    engine_mod._ENGINES.clear()
    parent = get_engine(settings, "celery")
    with parent.db.engine.connect() as conn:  # a pooled connection the child inherits
        pid_before = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # the child: what worker_process_init does, then use the database
        code = 1
        try:
            reset_engines_after_fork()
            mine = get_engine(settings, "celery")
            with mine.db.engine.connect() as conn:
                backend = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            os.write(w, f"{mine is not parent} {backend}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    _, status = os.waitpid(child, 0)
    new_engine, child_backend = os.read(r, 100).decode().split()
    os.close(r)
    assert os.waitstatus_to_exitcode(status) == 0
    assert new_engine == "True" and int(child_backend) != pid_before  # its own connection
    with parent.db.engine.connect() as conn:  # the parent's pooled connection still works
        assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar() == pid_before
    parent.db.dispose()
    engine_mod._ENGINES.clear()
