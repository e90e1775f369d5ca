"""Fault matrix on PostgreSQL + Celery/Redis: every run survives, identical, none stuck or doubled.

The harness (``tests/service/fault_matrix.py``) starts its own PostgreSQL cluster and its own
redis-server on free ports, so killing and restarting them touches nothing shared.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.service.fault_matrix import describe, matrix, pg_tool, run_all, table

pytestmark = [pytest.mark.slow, pytest.mark.faults]


def test_fault_matrix_every_run_succeeds_identically(
    tmp_path: Path, shared_dir: Path, demo_model_dir: Path
) -> None:
    assert pg_tool("initdb") and pg_tool("pg_ctl")  # PostgreSQL's own tools (CI has them)
    assert shutil.which("redis-server"), "redis-server is needed for the fault matrix"
    with matrix(tmp_path, shared_dir, demo_model_dir) as m:
        rows = run_all(m, kills=10)
        report = table(rows) + f"\n{describe(rows)}\n" + m.logs()[-6000:]
    assert [r.fault for r in rows] == [
        "kill -9 worker (x10)",
        "restart Redis",
        "restart PostgreSQL",
        "kill API after commit",
    ]
    for r in rows:
        assert r.ok, report
