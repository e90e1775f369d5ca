"""Faults: a worker killed mid-run, the API restarted mid-run, the broker down at submit."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.service.conftest import (
    Server,
    Stack,
    base_env,
    free_port,
    wait_for,
    wait_run,
)

MODEL = "demo-logreg-pbmc68k"


def _db(stack: Stack) -> sa.Engine:
    url = stack.env.get("CELLFOUNDRY_DATABASE_URL") or f"sqlite:///{stack.home / 'cellfoundry.db'}"
    return sa.create_engine(url)


def _submit(stack: Stack, shared_dir: Path) -> str:
    c = stack.server.client()
    with open(shared_dir / "data" / "pbmc3k_labeled_counts.h5ad", "rb") as fh:
        ds = c.post("/upload", files={"file": ("pbmc3k.h5ad", fh)}).json()["id"]
    r = c.post("/submit", json={"dataset_id": ds, "model_id": MODEL, "params": {"layout": "none"}})
    assert r.status_code == 201, r.text
    return str(r.json()["run_id"])


def test_kill_9_worker_mid_run_completes_elsewhere(stack: Stack, shared_dir: Path) -> None:
    rid = _submit(stack, shared_dir)
    eng = _db(stack)
    q = sa.text(
        "SELECT worker, idx FROM run_shards WHERE run_id = :r AND state = 'running' AND worker IS NOT NULL"
    )

    def running_shard() -> tuple[str, int] | None:
        with eng.connect() as conn:
            row = conn.execute(q, {"r": rid}).first()
        return (str(row[0]), int(row[1])) if row else None

    worker, idx = wait_for(running_shard, 120, "a shard being annotated", interval=0.05)
    pid = int(worker.rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    st = wait_run(stack.server.client(), rid, timeout=180)
    assert st["state"] == "succeeded", (st, stack.logs())
    with eng.connect() as conn:
        shard = conn.execute(
            sa.text(
                "SELECT state, attempts, worker FROM run_shards WHERE run_id = :r AND idx = :i"
            ),
            {"r": rid, "i": idx},
        ).one()
        n_shards = conn.execute(
            sa.text("SELECT count(*) FROM run_shards WHERE run_id = :r"), {"r": rid}
        ).scalar()
    assert (
        shard[0] == "succeeded" and shard[1] >= 2 and shard[2] != worker
    )  # re-run by another worker
    assert n_shards == 9
    res = stack.server.client().get(f"/results/{rid}", params={"page_size": 1}).json()
    assert res["summary"]["n_cells"] == 2638 and res["cells"]["total"] == 2638
    eng.dispose()
    if stack.workers is not None:  # local workers are restarted by serve; replace the Celery one
        stack.workers.start(1)


def test_restart_api_mid_run_keeps_status(stack: Stack, shared_dir: Path) -> None:
    rid = _submit(stack, shared_dir)
    c = stack.server.client()
    wait_for(
        lambda: c.get(f"/status/{rid}").json()["state"] == "running",
        60,
        "the run to start",
        interval=0.1,
    )
    before = c.get(f"/status/{rid}").json()
    stack.server.kill(
        signal.SIGKILL
    )  # the API process only; local workers notice and finish their shard
    stack.server.start()
    c = stack.server.client()
    after = c.get(f"/status/{rid}").json()
    assert after["id"] == rid and after["created_at"] == before["created_at"]
    assert after["state"] in ("running", "succeeded") and after["progress"] >= before["progress"]
    wait_for(lambda: len(c.get("/health").json()["workers"]) >= 1, 90, "workers after the restart")
    st = wait_run(c, rid, timeout=180)
    assert st["state"] == "succeeded", (st, stack.logs())
    assert c.get(f"/results/{rid}", params={"page_size": 1}).json()["cells"]["total"] == 2638


def test_broker_down_submit_is_503_and_nothing_written(
    tmp_path: Path, demo_model_dir: Path, request: pytest.FixtureRequest
) -> None:
    closed = (
        free_port()
    )  # nothing listens there: the broker is "down" (the shared Redis is left alone)
    env = base_env(
        tmp_path,
        CELLFOUNDRY_QUEUE_BACKEND="celery",
        CELLFOUNDRY_BROKER_URL=f"redis://127.0.0.1:{closed}/0",
        CELLFOUNDRY_BROKER_TIMEOUT_S="0.5",
    )
    srv = Server(tmp_path, env, ["--model", str(demo_model_dir)])
    srv.start()
    try:
        c = srv.client()
        health = c.get("/health").json()
        assert health["status"] == "degraded" and not health["queue"]["ok"]
        small = tmp_path / "cells.csv"
        small.write_text("cell,CD3D,CD3E,MS4A1,LYZ\nc1,1,2,0,9\nc2,0,0,5,1\n")
        with open(small, "rb") as fh:
            ds = c.post("/upload", files={"file": ("cells.csv", fh)}).json()["id"]
        t0 = time.monotonic()
        r = c.post(
            "/submit", json={"dataset_id": ds, "model_id": MODEL, "params": {"min_coverage": 0}}
        )
        assert time.monotonic() - t0 < 30  # answered, not hung
        assert r.status_code == 503
        err = r.json()["error"]
        assert (
            err["code"] == "queue_unavailable"
            and "Redis" in err["hint"]
            and str(closed) in err["message"]
        )
        assert c.get("/runs").json()["total"] == 0
        eng = sa.create_engine(f"sqlite:///{tmp_path / 'cellfoundry.db'}")
        with eng.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM runs")).scalar() == 0
            assert conn.execute(sa.text("SELECT count(*) FROM run_shards")).scalar() == 0
        eng.dispose()
        assert not list((tmp_path / "storage" / "runs").iterdir())
    finally:
        srv.stop()
