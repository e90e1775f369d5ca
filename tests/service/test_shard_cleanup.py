"""Shard files do not outlive their run: a cancel, a final failure, a shard that finishes after
the end, and the reaper (for what a crashed worker left) all remove them."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from cellfoundry.config import Settings
from cellfoundry.jobs import states
from cellfoundry.jobs.engine import Engine
from cellfoundry.service.app import create_app
from cellfoundry.store.db import Database
from cellfoundry.store.tables import Dataset, Run, RunState
from tests.service.conftest import state_with_model


def _csv(model_dir: Path, n_cells: int = 4) -> bytes:
    """Counts of ``n_cells`` cells over every gene of the model (coverage is no issue)."""
    from cellfoundry.models.registry import load_model

    genes = list(load_model(model_dir).genes)
    rng = np.random.default_rng(0)
    rows = [",".join(["cell", *genes])]
    for i in range(n_cells):
        rows.append(",".join([f"c{i}", *map(str, rng.poisson(1.0, len(genes)))]))
    return ("\n".join(rows) + "\n").encode()


@dataclass
class Env:
    client: TestClient
    auth: dict[str, str]
    settings: Settings
    db: Database
    body: dict[str, object]

    def worker(self, n: int) -> Engine:
        e = Engine(self.settings, "local", self.db)
        e.name = f"local:test:{n}"
        return e

    def shard_dir(self, run_id: str) -> Path:
        return self.settings.storage / "runs" / run_id / "shards"

    def sharded_run(self) -> str:
        """A submitted run (4 cells, one shard each) whose shard 0 has written its files."""
        r = self.client.post("/submit", json=self.body, headers=self.auth)
        assert r.status_code == 201, r.text
        rid = str(r.json()["run_id"])
        assert self.worker(0).execute_run(rid) == "sharded"
        out = self.worker(0).execute_shard(rid, 0)
        assert out == "succeeded", self.client.get(f"/status/{rid}", headers=self.auth).json()[
            "error"
        ]
        assert (self.shard_dir(rid) / "0.npy").is_file()
        return rid

    def state(self, run_id: str) -> str:
        return str(self.client.get(f"/status/{run_id}", headers=self.auth).json()["state"])


@pytest.fixture
def env(tmp_path: Path, demo_model_dir: Path) -> Iterator[Env]:
    settings = Settings(
        home=tmp_path / "home",
        demo_model=False,
        web_dir=tmp_path / "no-web",
        shard_size=1,
        reaper_s=3600,  # the API's own reaper stays out of the way; the tests call reap()
        shard_sweep_s=0,
    )
    key = state_with_model(settings, demo_model_dir)
    db = Database(settings.database_url)
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings)) as c:  # no workers: the test's engines do the work
        ds = c.post(
            "/upload", files={"file": ("a.csv", _csv(demo_model_dir))}, headers=auth
        ).json()["id"]
        body = {
            "dataset_id": ds,
            "model_id": c.get("/models").json()[0]["id"],
            "params": {"layout": "none"},
        }
        yield Env(c, auth, settings, db, body)
    db.dispose()


def test_cancel_removes_the_shard_files_and_a_late_shard_leaves_none(env: Env) -> None:
    rid = env.sharded_run()
    late = env.worker(1)
    with env.db.session() as s:  # shard 1 is at work when the cancel comes
        assert late.claim_shard(s, rid, 1)
    r = env.client.post(f"/runs/{rid}/cancel", headers=env.auth)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert not env.shard_dir(rid).exists()
    assert late.execute_shard_claimed(rid, 1) == "lost"  # it wrote its files, then saw the cancel
    assert not env.shard_dir(rid).exists()
    assert env.worker(2).execute_shard(rid, 2) == "skipped"  # not claimable: nothing written
    assert not env.shard_dir(rid).exists()


def test_a_final_failure_removes_the_shard_files(env: Env) -> None:
    rid = env.sharded_run()
    with env.db.session() as s:  # the stored dataset is gone: shard 1 cannot read it
        path = s.scalar(sa.select(Dataset.path))
    assert path is not None
    (env.settings.storage / path).unlink()
    assert env.worker(1).execute_shard(rid, 1) == "failed"
    assert env.state(rid) == "failed"
    assert not env.shard_dir(rid).exists()


def test_a_merged_run_keeps_its_result_and_no_shard_files(env: Env) -> None:
    rid = env.sharded_run()
    for idx in (1, 2, 3):
        assert env.worker(idx).execute_shard(rid, idx) == "succeeded"
    assert env.state(rid) == "succeeded"
    assert not env.shard_dir(rid).exists()
    assert (env.settings.storage / "runs" / rid / "predictions.parquet").is_file()


def test_the_reaper_removes_shard_files_left_by_ended_runs_only(env: Env) -> None:
    crashed = env.sharded_run()  # cancelled by a process that died before removing the files
    with env.db.session() as s:
        assert states.cancel_run(s, crashed)
    running = env.sharded_run()  # still at work: its files are kept
    orphan = env.settings.storage / "runs" / "r_deleted" / "shards"  # its run row is gone
    orphan.mkdir(parents=True)
    (orphan / "0.npy").write_bytes(b"x")
    reaper = env.worker(9)
    reaper.reap()
    assert env.shard_dir(crashed).is_dir()  # ended within the grace period: a shard may be writing
    assert env.shard_dir(running).is_dir() and not orphan.parent.exists()  # nor its folder
    old = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=env.settings.stale_after_s + 5)
    with env.db.session() as s:
        s.execute(sa.update(Run).where(Run.id == crashed).values(finished_at=old))
    reaper.reap()
    assert not env.shard_dir(crashed).exists()
    assert env.shard_dir(running).is_dir() and env.state(running) == RunState.RUNNING


@pytest.mark.parametrize("deleted", ["run", "dataset"])
def test_a_shard_whose_run_was_deleted_stops_and_leaves_nothing(
    env: Env, deleted: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Cancel, then delete at once (the hint of the 409): a shard still at work has written its
    files into the folder of a run that no row owns; when it sees the run gone it stops quietly
    (no 'bug' traceback in the log) and removes them, with the run's folder."""
    rid = env.sharded_run()
    late = env.worker(1)
    with env.db.session() as s:  # shard 1 is at work when the cancel and the delete come
        assert late.claim_shard(s, rid, 1)
    assert env.client.post(f"/runs/{rid}/cancel", headers=env.auth).status_code == 200
    doomed = f"/runs/{rid}" if deleted == "run" else f"/datasets/{env.body['dataset_id']}"
    assert env.client.delete(doomed, headers=env.auth).status_code == 204
    run_dir = env.settings.storage / "runs" / rid
    assert not run_dir.exists()
    env.shard_dir(rid).mkdir(parents=True)  # what shard 1 wrote after the delete
    (env.shard_dir(rid) / "1.npy").write_bytes(b"x")
    with caplog.at_level(logging.ERROR, logger="cellfoundry"):
        assert late.execute_shard_claimed(rid, 1) == "lost"
    assert not run_dir.exists()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
