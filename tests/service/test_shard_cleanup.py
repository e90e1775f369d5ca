"""Shard files do not outlive their run: a cancel, a final failure, a shard that finishes after
the end, and the reaper (for what a crashed worker left) all remove them."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from cellfoundry.config import Settings
from cellfoundry.jobs import shards, states
from cellfoundry.jobs.applications import TaskContext, TaskOutput, get_application
from cellfoundry.jobs.engine import Engine, LostRun
from cellfoundry.service.app import create_app
from cellfoundry.service.deletion import delete_runs
from cellfoundry.store.db import Database
from cellfoundry.store.tables import Dataset, ModelRecord, Result, Run, RunShard, RunState
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


def _cancel_and_delete(env: Env, run_id: str) -> None:
    """What the 409 of a delete tells the user to do: cancel the run, then delete it."""
    r = env.client.post(f"/runs/{run_id}/cancel", headers=env.auth)
    assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
    assert env.client.delete(f"/runs/{run_id}", headers=env.auth).status_code == 204
    assert not (env.settings.storage / "runs" / run_id).exists()  # the delete removed it


@pytest.mark.parametrize("when", ["before_its_folder_is_made", "while_it_writes"])
def test_a_run_deleted_while_its_worker_is_at_work_leaves_no_folder(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, when: str
) -> None:
    """An unsharded run (an embedding) cancelled and deleted while its worker is at work: right
    after the worker read it (it then makes the folder of the task's output), or while the task
    writes (a writer that makes its folders, as a model's save does). Neither the folder nor
    what was written after the delete stays, and the worker stops quietly. Before, the worker
    stopped at the task's next progress report ("lost") and left runs/<id> behind."""
    spec = get_application("embedding")
    task, validate = spec.task, spec.validate
    assert task is not None and not spec.sharded
    armed: list[str] = []  # the run id, once submitted

    def read_then_deleted(params: dict[str, object] | None) -> object:
        out = validate(params)
        if armed and when == "before_its_folder_is_made":  # the worker's read of its params
            _cancel_and_delete(env, armed.pop())
        return out

    def at_work(ctx: TaskContext) -> TaskOutput:
        if when == "while_it_writes":
            _cancel_and_delete(env, ctx.run_id)
            ctx.out_dir.mkdir(parents=True, exist_ok=True)
            (ctx.out_dir / "layout.parquet").write_bytes(b"partial")
        return task(ctx)  # its next progress report finds the run gone

    monkeypatch.setattr(spec, "validate", read_then_deleted)
    monkeypatch.setattr(spec, "task", at_work)
    body = {**env.body, "application_id": "embedding", "params": {"layout": "pca"}}
    r = env.client.post("/submit", json=body, headers=env.auth)
    assert r.status_code == 201, r.text
    rid = r.json()["run_id"]
    armed.append(rid)
    with caplog.at_level(logging.ERROR, logger="cellfoundry"):
        assert env.worker(0).execute_run(rid) == "lost"
    assert not (env.settings.storage / "runs" / rid).exists()
    with env.db.session() as s:
        assert s.get(Run, rid) is None
        assert s.scalar(sa.select(sa.func.count()).select_from(Result)) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_a_run_deleted_while_it_merges_stops_quietly_and_leaves_nothing(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The last shard's worker merges; the run is cancelled and deleted once the merge has read
    the shards, before it writes the predictions (whose folder is gone): nothing stays, and the
    write's failure is not logged as a bug. Before, 'merge of <run> failed' and a traceback."""
    rid = env.sharded_run()
    for idx in (1, 2):
        assert env.worker(idx).execute_shard(rid, idx) == "succeeded"
    write = shards.write_predictions_parquet

    def deleted_first(frame: object, path: Path) -> None:
        _cancel_and_delete(env, rid)
        write(frame, path)  # type: ignore[arg-type]

    monkeypatch.setattr(shards, "write_predictions_parquet", deleted_first)
    with caplog.at_level(logging.ERROR, logger="cellfoundry"):
        env.worker(3).execute_shard(rid, 3)
    assert not (env.settings.storage / "runs" / rid).exists()
    with env.db.session() as s:
        assert s.get(Run, rid) is None
        assert s.scalar(sa.select(sa.func.count()).select_from(RunShard)) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_a_deleted_run_loses_its_files_once_the_delete_commits(env: Env) -> None:
    """The delete removes a run's folder once the deletion of its rows is committed, never when
    it rolls back. A worker that ends in between still sees its run (cancelled) and leaves its
    files to the delete, which removes them after. Before, the delete removed the folder first:
    what such a worker wrote meanwhile stayed (and a delete rolled back had lost the files)."""
    rid = env.sharded_run()
    assert env.client.post(f"/runs/{rid}/cancel", headers=env.auth).status_code == 200
    platform = env.client.app.state.platform  # type: ignore[attr-defined]
    folder = env.settings.storage / "runs" / rid
    folder.mkdir(exist_ok=True)
    (folder / "layout.parquet").write_bytes(b"x")
    with pytest.raises(RuntimeError), platform.db.session() as s:
        delete_runs(platform, s, [s.get(Run, rid)])
        raise RuntimeError("the delete fails before its commit")
    assert (folder / "layout.parquet").is_file() and env.state(rid) == "cancelled"

    with platform.db.session() as s:
        delete_runs(platform, s, [s.get(Run, rid)])
        # the worker writes on and ends now, before the commit: its run is still there
        (folder / "predictions.parquet").write_bytes(b"partial")
        shards.remove_if_ended(env.worker(1), rid)
        assert (folder / "predictions.parquet").is_file()  # left to the delete
    assert not folder.exists()
    with env.db.session() as s:
        assert s.get(Run, rid) is None


def test_a_model_is_registered_only_while_its_run_is_its_workers(
    env: Env, demo_model_dir: Path
) -> None:
    """A fine-tune registers the model it trained in one transaction with a check that its run
    is still its worker's: a cancel that came first wins, and the run's delete leaves no model
    row behind. Before, the model of a cancelled run was registered, and stayed once the run
    and its folder (the model's files) were deleted."""
    runs = []
    for _ in range(2):
        r = env.client.post("/submit", json=env.body, headers=env.auth)
        assert r.status_code == 201, r.text
        runs.append(r.json()["run_id"])
    worker = env.worker(0)
    for rid in runs:
        with env.db.session() as s:
            assert worker.claim_run(s, rid)
        shutil.copytree(demo_model_dir, env.settings.storage / "runs" / rid / "model")
    done, cancelled = runs
    run, _, _ = worker.inputs(done)
    new_id = worker.register_result_model(env.settings.storage / "runs" / done / "model", run)
    with env.db.session() as s:
        model = s.get(ModelRecord, new_id)
        assert model is not None and model.source_run_id == done

    assert env.client.post(f"/runs/{cancelled}/cancel", headers=env.auth).status_code == 200
    run, _, _ = worker.inputs(cancelled)
    with pytest.raises(LostRun):
        worker.register_result_model(env.settings.storage / "runs" / cancelled / "model", run)
    assert env.client.delete(f"/runs/{cancelled}", headers=env.auth).status_code == 204
    assert not (env.settings.storage / "runs" / cancelled).exists()
    with env.db.session() as s:
        assert (
            s.scalar(sa.select(ModelRecord).where(ModelRecord.source_run_id == cancelled)) is None
        )
