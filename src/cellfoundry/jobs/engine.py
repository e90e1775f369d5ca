"""Running runs for one worker process: claiming, tasks, endings, presence and stale-run recovery.

The same code serves the local workers and the Celery tasks. State changes go through the state
machine (``jobs.states``), so two workers can never both own a run, a re-delivered task is a
no-op, and a cancelled or re-queued run stops writing. Sharded annotation is in ``jobs.shards``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cellfoundry.config import Settings
from cellfoundry.errors import CellfoundryError, redact_paths
from cellfoundry.jobs import lease, shards, states
from cellfoundry.jobs.applications import (
    TaskContext,
    TaskOutput,
    get_application,
    run_model_ids,
)
from cellfoundry.jobs.heartbeat import Beat
from cellfoundry.jobs.queue import get_queue
from cellfoundry.jobs.retry import is_transient, retry_db
from cellfoundry.store.db import Database
from cellfoundry.store.jsonable import jsonable
from cellfoundry.store.storage import FileStorage
from cellfoundry.store.tables import (
    Dataset,
    Evaluation,
    ModelRecord,
    Result,
    Run,
    RunShard,
    RunState,
    Worker,
    utcnow,
)

log = logging.getLogger("cellfoundry.jobs")
T = TypeVar("T")
REAPER_LEASE = "reaper"


class LostRun(Exception):
    """The run was cancelled, re-queued or taken over: stop working on it."""


class Engine:
    """Executes runs and shards for one worker process (models are loaded once per process)."""

    def __init__(self, settings: Settings, kind: str = "local", db: Database | None = None) -> None:
        self.settings = settings
        self.kind = kind
        self.db = db or Database(settings.database_url)
        self.storage = FileStorage(settings.storage)
        self.queue = get_queue(settings)
        self.name = f"{kind}:{socket.gethostname()}:{os.getpid()}"
        self._models: dict[str, Any] = {}
        self._presence: threading.Thread | None = None
        self._reaper: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_sweep = -math.inf  # the first reap sweeps shard leftovers

    # --- presence ---------------------------------------------------------------------------

    def start_presence(self) -> None:
        """Record this worker in the workers table every heartbeat (for /health)."""
        if self._presence is not None and self._presence.is_alive():
            return
        self.name = f"{self.kind}:{socket.gethostname()}:{os.getpid()}"
        self.touch()
        self._presence = threading.Thread(
            target=self._presence_loop, daemon=True, name="cf-presence"
        )
        self._presence.start()
        self.start_reaper()

    def start_reaper(self) -> None:
        """Run ``reap()`` every ``settings.reaper_s`` in a thread; API replicas and workers all
        start one, and the database lease lets one of them work at a time."""
        if self._reaper is not None and self._reaper.is_alive():
            return
        self._reaper = threading.Thread(target=self._reap_loop, daemon=True, name="cf-reaper")
        self._reaper.start()

    def _reap_loop(self) -> None:
        while not self._stop.wait(self.settings.reaper_s):
            try:
                for item in self.reap():
                    log.warning("recovered %s (lost worker or lost message)", item)
            except Exception:  # a database hiccup must not kill the reaper
                log.exception("stale-run recovery failed")

    def _presence_loop(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_s):
            try:
                self.touch()
            except Exception:  # a database hiccup must not kill the worker
                log.exception("worker presence update failed")

    def warm_up(self) -> None:
        """Load the registered models and the preprocessing code paths before the first job."""
        import anndata as ad
        import pandas as pd
        import scipy.sparse as sp

        from cellfoundry.api import annotate
        from cellfoundry.data.genes import gene_table

        gene_table()
        with self.db.session() as s:
            recs = s.scalars(select(ModelRecord).order_by(ModelRecord.created_at)).all()
            s.expunge_all()
        for rec in recs:
            try:
                ann = self.annotator(rec)
                genes = list(getattr(ann, "genes", []))[:200]
                if genes:
                    tiny = ad.AnnData(
                        X=sp.csr_matrix(np.ones((2, len(genes)), dtype=np.float32)),
                        obs=pd.DataFrame(index=["a", "b"]),
                        var=pd.DataFrame(index=genes),
                    )
                    annotate(tiny, ann, min_coverage=0.0)
            except Exception as exc:  # a broken model must not stop the worker
                log.warning("warm-up of model %s failed: %s", rec.id, exc)

    def touch(self) -> None:
        with self.db.session() as s:
            w = s.get(Worker, self.name)
            if w is None:
                s.add(
                    Worker(
                        name=self.name, kind=self.kind, host=socket.gethostname(), pid=os.getpid()
                    )
                )
            else:
                w.last_seen = utcnow()

    def stop(self, release: bool = True) -> None:
        """Stop the presence and reaper threads; hand the reaper lease over at once (``release``)."""
        self._stop.set()
        if release and self._reaper is not None:
            try:
                with self.db.session() as s:
                    lease.release(s, REAPER_LEASE, self.name)
            except Exception:  # the database may already be gone; the lease then expires
                log.debug("reaper lease not released", exc_info=True)

    # --- claiming ---------------------------------------------------------------------------

    def _stale_before(self) -> dt.datetime:
        return utcnow() - dt.timedelta(seconds=self.settings.stale_after_s)

    def claim_run(self, s: Session, run_id: str) -> bool:
        """Take ``run_id`` if it is queued (or running with a dead worker); True when taken."""
        return states.claim_run(s, run_id, self.name, self._stale_before())

    def claim_shard(self, s: Session, run_id: str, idx: int) -> bool:
        return states.claim_shard(s, run_id, idx, self.name, self._stale_before())

    def next_local_work(self) -> tuple[str, str, int] | None:
        """Claim the oldest queued shard, else the oldest queued local run."""
        with self.db.session() as s:
            rows = s.execute(
                select(RunShard.run_id, RunShard.idx)
                .join(Run, Run.id == RunShard.run_id)
                .where(
                    RunShard.state == RunState.QUEUED,
                    Run.state == RunState.RUNNING,
                    Run.backend == "local",
                )
                .order_by(Run.created_at, RunShard.idx)
                .limit(5)
            ).all()
            for run_id, idx in rows:
                if self.claim_shard(s, run_id, idx):
                    return ("shard", run_id, idx)
            ids = s.scalars(
                select(Run.id)
                .where(Run.state == RunState.QUEUED, Run.backend == "local")
                .order_by(Run.created_at)
                .limit(5)
            ).all()
            for run_id in ids:
                if self.claim_run(s, run_id):
                    return ("run", run_id, -1)
            cutoff = utcnow() - dt.timedelta(seconds=self.settings.redispatch_after_s)
            orphan = s.scalar(  # shards all done but nobody merged (its worker died in between)
                select(Run.id)
                .where(
                    Run.state == RunState.RUNNING,
                    Run.backend == "local",
                    Run.n_shards > 0,
                    Run.merge_claimed.is_(False),
                    Run.heartbeat_at < cutoff,
                    Run.n_shards == states.n_succeeded(Run.id),
                )
                .limit(1)
            )
            if orphan is not None:
                return ("merge", orphan, -1)
        return None

    # --- progress and endings ---------------------------------------------------------------

    def report(self, run_id: str, stage: str, progress: float, owner: bool = True) -> None:
        """Record stage/progress and the heartbeat; raises LostRun when the run is no longer ours."""

        def write() -> bool:
            with self.db.session() as s:
                return states.report_progress(
                    s, run_id, stage, progress, self.name if owner else None
                )

        if not self.retry(write, f"progress of {run_id}"):
            raise LostRun(run_id)

    def fail(
        self, run_id: str, code: str, message: str, hint: str | None, owner: str | None = None
    ) -> None:
        """Mark the run failed with a reason (only while it is active, and ours when ``owner``);
        server paths in the reason are cut to their last part (clients read it)."""
        roots = [self.settings.home, self.settings.storage]
        message, hint = redact_paths(message, roots), hint and redact_paths(hint, roots)

        def write() -> bool:
            with self.db.session() as s:
                return states.fail_run(s, run_id, code, message, hint, owner)

        if self.retry(write, f"failing {run_id}"):
            shards.remove_shard_files(self.storage, run_id)  # nothing will merge them now
        else:  # it ended first (a cancel), or was deleted: what this worker wrote goes too
            shards.remove_if_ended(self, run_id)

    def fail_with(self, run_id: str, exc: Exception, what: str, owner: str | None = None) -> None:
        """Fail the run with the reason of ``exc`` (a bug's traceback goes to the log only; an
        error of a run cancelled or deleted meanwhile, whose files went from under it, is no
        bug)."""
        if isinstance(exc, CellfoundryError):
            self.fail(run_id, exc.code, exc.message, exc.hint, owner=owner)
            return
        if not self.is_active(run_id):
            log.info("%s stopped: the run was cancelled or deleted meanwhile (%r)", what, exc)
            shards.remove_if_ended(self, run_id)
            return
        log.error("%s failed:\n%s", what, traceback.format_exc())
        self.fail(
            run_id,
            "internal_error",
            "the run stopped on an unexpected error",
            f"this is a bug or an unexpected input; the worker log has the traceback ({what})",
            owner=owner,
        )

    def finish(self, run_id: str, out: TaskOutput, owner: str | None) -> None:
        """Store the result (and evaluation) and mark the run succeeded; LostRun when not ours.

        The state change is a compare-and-set in the same transaction as the result rows, so a
        cancel or the reaper that got there first wins and nothing is stored."""

        def write() -> None:
            with self.db.session() as s:
                run = s.get(Run, run_id)
                if run is None or not states.finish_run(s, run_id, owner):
                    raise LostRun(run_id)
                files = {k: self.storage.relative(v) for k, v in out.files.items()}
                existing = s.get(Result, run_id)
                if existing is None:
                    s.add(Result(run_id=run_id, summary=jsonable(out.summary), files=files))
                else:
                    existing.summary, existing.files = jsonable(out.summary), files
                if out.evaluation is not None:
                    s.add(
                        Evaluation(
                            run_id=run_id,
                            model_id=run.model_id,
                            dataset_id=run.dataset_id,
                            label_key=out.evaluation["label_key"],
                            metrics=jsonable(out.evaluation["metrics"]),
                        )
                    )

        self.retry(write, f"finishing {run_id}")

    def is_active(self, run_id: str) -> bool:
        """Whether ``run_id`` exists and is queued or running."""

        def read() -> bool:
            with self.db.session() as s:
                return s.scalar(select(Run.state).where(Run.id == run_id)) in states.ACTIVE_STATES

        return self.retry(read, f"reading the state of {run_id}")

    def retry(self, fn: Callable[[], T], what: str) -> T:
        """``fn()`` retried through a dropped database connection (``settings.db_retry_s``)."""
        return retry_db(fn, what, self.settings.db_retry_s)

    # --- models -----------------------------------------------------------------------------

    def model_dir(self, rec: ModelRecord) -> Path:
        p = Path(rec.path)
        return p if p.is_absolute() else self.storage.resolve(p)

    def annotator(self, rec: ModelRecord) -> Any:
        """The model of ``rec``, loaded once per process."""
        from cellfoundry.models.registry import load_model

        key = f"{rec.id}:{rec.path}"
        if key not in self._models:
            self._models[key] = load_model(self.model_dir(rec))
        return self._models[key]

    def forget_model(self, rec: ModelRecord) -> None:
        """Drop a (deleted) model from this process's cache."""
        self._models.pop(f"{rec.id}:{rec.path}", None)

    def register_result_model(self, folder: Path, run: Run) -> str:
        """Register the model ``run`` produced, only while the run is still this worker's: a
        compare-and-set on the run in the same transaction, so a cancel that came first wins
        (LostRun: no model of a cancelled run, whose folder its delete removes) and one that
        comes after finds the model, which outlives its run."""
        from cellfoundry.store.model_records import register_model

        with self.db.session() as s:
            if not states.transition(
                s,
                run.id,
                RunState.RUNNING,
                frm=(RunState.RUNNING,),
                where=[Run.worker == self.name],
                heartbeat_at=utcnow(),
            ):
                raise LostRun(run.id)
            rec = register_model(
                s, self.storage, folder, owner_id=run.owner_id, source_run_id=run.id, copy=False
            )
            return rec.id

    # --- runs -------------------------------------------------------------------------------

    def inputs(self, run_id: str) -> tuple[Run, Dataset, ModelRecord]:
        """The run with its dataset and model (detached from the session)."""
        return self.retry(lambda: self._inputs(run_id), f"reading {run_id}")

    def _inputs(self, run_id: str) -> tuple[Run, Dataset, ModelRecord]:
        with self.db.session() as s:
            run = s.get(Run, run_id)
            if run is None:  # deleted (after a cancel) before this worker got to it
                raise LostRun(run_id)
            ds = s.get(Dataset, run.dataset_id)
            rec = s.get(ModelRecord, run.model_id)
            if ds is None or rec is None:
                raise CellfoundryError(
                    "the run's dataset or model was deleted",
                    "submit a new run",
                    code="missing_input",
                )
            s.expunge_all()
            return run, ds, rec

    def run_models(self, run: Run) -> list[ModelRecord]:
        """The models of ``run`` (detached): its model, then a consensus's other models."""
        ids = run_model_ids(get_application(run.application_id).validate(run.params), run.model_id)

        def read() -> list[ModelRecord]:
            with self.db.session() as s:
                recs = [s.get(ModelRecord, i) for i in ids]
                missing = [i for i, r in zip(ids, recs, strict=True) if r is None]
                if missing:
                    raise CellfoundryError(
                        f"the run's model(s) {', '.join(missing)} were deleted",
                        "submit a new run with models that exist (GET /models)",
                        code="missing_input",
                    )
                s.expunge_all()
                return [r for r in recs if r is not None]

        return self.retry(read, f"reading the models of {run.id}")

    def execute_run(self, run_id: str) -> str:
        """Run ``run_id`` if this worker can claim it; the outcome is written to the database."""
        with self.db.session() as s:
            if not self.claim_run(s, run_id):
                return "skipped"
        return self.execute_claimed(run_id)

    def execute_claimed(self, run_id: str) -> str:
        """Run a run this worker has claimed (sharded applications only start their shards)."""
        me = self.name
        with Beat(self, run_id, None):
            try:
                run, ds, rec = self.inputs(run_id)
                if run.attempts > self.settings.max_attempts:
                    raise CellfoundryError(
                        f"the run was started {run.attempts - 1} times and its worker stopped each time",
                        "check the worker logs (out of memory?), then submit the run again",
                        code="worker_lost",
                    )
                app = get_application(run.application_id)
                params = app.validate(run.params)
                if app.sharded:
                    shards.start_shards(self, run, ds)
                    return "sharded"
                ctx = TaskContext(
                    run_id=run_id,
                    dataset_path=self.storage.resolve(ds.path),
                    model_dir=self.model_dir(rec),
                    model_family=rec.family,
                    params=params,
                    out_dir=self.storage.run_dir(run_id),
                    report=lambda stage, pct: self.report(run_id, stage, pct),
                    settings=self.settings,
                    register_model=lambda folder: self.register_result_model(folder, run),
                )
                assert app.task is not None
                out = app.task(ctx)
                self.finish(run_id, out, me)
                return "succeeded"
            except LostRun:  # cancelled, or deleted: then its folder (made above) goes
                shards.remove_if_ended(self, run_id)
                return "lost"
            except Exception as exc:
                if is_transient(exc):  # the database stayed away: the reaper re-queues the run
                    log.error("run %s interrupted: database unavailable: %s", run_id, exc)
                    return "interrupted"
                self.fail_with(run_id, exc, f"run {run_id}", owner=me)
                return "failed"

    def execute_shard(self, run_id: str, idx: int) -> str:
        """Annotate one shard of a run; the worker finishing the last shard merges."""
        with self.db.session() as s:
            if not self.claim_shard(s, run_id, idx):
                return "skipped"
        return self.execute_shard_claimed(run_id, idx)

    def execute_shard_claimed(self, run_id: str, idx: int) -> str:
        return shards.execute_shard_claimed(self, run_id, idx)

    # --- recovery ---------------------------------------------------------------------------

    def reap(self) -> list[str]:
        """Recover from lost workers and lost messages, when this process holds the reaper lease.

        Re-queues (or fails, after ``max_attempts``) runs and shards whose worker stopped beating,
        re-sends the message of runs and shards queued for longer than ``redispatch_after_s``,
        and asks for the merge of runs whose shards all succeeded but nobody merged. Every change
        is a compare-and-set, so a worker, a cancel and the reaper never overwrite one another.
        """
        with self.db.session() as s:
            if not lease.acquire(s, REAPER_LEASE, self.name, self.settings.reaper_lease_s):
                return []
        stale = self._stale_before()
        silent = int(self.settings.stale_after_s)
        hint = "check the worker logs (out of memory? killed?), then submit the run again"
        requeued_runs: list[str] = []
        requeued_shards: list[tuple[str, int]] = []
        failed: list[str] = []
        with self.db.session() as s:
            for rid, n_shards, merging, stage, attempts, worker in s.execute(
                select(
                    Run.id, Run.n_shards, Run.merge_claimed, Run.stage, Run.attempts, Run.worker
                ).where(Run.state == RunState.RUNNING, Run.heartbeat_at < stale)
            ).all():
                if n_shards > 0 and not merging and stage != "starting":
                    continue  # its shards are watched one by one below
                if attempts >= self.settings.max_attempts:
                    if states.fail_lost_run(
                        s,
                        rid,
                        stale,
                        f"the worker ({worker}) stopped responding (no heartbeat for {silent} s) "
                        f"during '{stage}', after {attempts} attempt(s)",
                        hint,
                    ):
                        failed.append(rid)
                elif states.requeue_run(s, rid, stale):
                    requeued_runs.append(rid)
            for rid, idx, start, stop, attempts, worker in s.execute(
                select(
                    RunShard.run_id,
                    RunShard.idx,
                    RunShard.start,
                    RunShard.stop,
                    RunShard.attempts,
                    RunShard.worker,
                )
                .join(Run, Run.id == RunShard.run_id)
                .where(
                    RunShard.state == RunState.RUNNING,
                    RunShard.heartbeat_at < stale,
                    Run.state == RunState.RUNNING,
                )
            ).all():
                if attempts >= self.settings.max_attempts:
                    if states.fail_lost_run(
                        s,
                        rid,
                        None,
                        f"the worker ({worker}) of shard {idx} (cells {start}-{stop}) "
                        f"stopped responding, after {attempts} attempt(s)",
                        hint,
                    ):
                        failed.append(rid)
                elif states.requeue_shard(s, rid, idx, stale):
                    requeued_shards.append((rid, idx))
        for run_id in failed:
            shards.remove_shard_files(self.storage, run_id)
        for run_id in requeued_runs:
            self._dispatch(self.queue.dispatch_run, run_id)
        for run_id, idx in requeued_shards:
            self._dispatch(self.queue.dispatch_shards, run_id, [idx])
        resent = self.redispatch_lost()
        now = time.monotonic()
        if now - self._last_sweep >= self.settings.shard_sweep_s:
            self._last_sweep = now
            for rid in shards.sweep_leftovers(self, self.settings.stale_after_s):
                log.info("removed the shard files left by run %s", rid)
            for name in self.storage.sweep_tmp(self.settings.tmp_sweep_after_s):
                log.info("removed the upload leftover storage/tmp/%s", name)
        return requeued_runs + [f"{r}/{i}" for r, i in requeued_shards] + resent

    def redispatch_lost(self) -> list[str]:
        """Re-send messages that may be lost: runs and shards queued, and merges waiting, for
        longer than ``redispatch_after_s`` (each one stamped, so it is re-sent once per period)."""
        now = utcnow()
        cutoff = now - dt.timedelta(seconds=self.settings.redispatch_after_s)
        backend = self.queue.backend
        runs: list[str] = []
        shard_list: list[tuple[str, int]] = []
        merges: list[str] = []
        with self.db.session() as s:
            for rid in s.scalars(
                select(Run.id).where(
                    Run.state == RunState.QUEUED, Run.backend == backend, Run.updated_at < cutoff
                )
            ).all():
                if states.transition(
                    s,
                    rid,
                    RunState.QUEUED,
                    frm=(RunState.QUEUED,),
                    where=[Run.updated_at < cutoff],
                    updated_at=now,
                ):
                    runs.append(rid)
            old = or_(RunShard.heartbeat_at.is_(None), RunShard.heartbeat_at < cutoff)
            for rid, idx in s.execute(
                select(RunShard.run_id, RunShard.idx)
                .join(Run, Run.id == RunShard.run_id)
                .where(
                    RunShard.state == RunState.QUEUED,
                    Run.state == RunState.RUNNING,
                    Run.backend == backend,
                    old,
                )
            ).all():
                if states.transition_shard(
                    s,
                    rid,
                    idx,
                    RunState.QUEUED,
                    frm=(RunState.QUEUED,),
                    where=[old],
                    heartbeat_at=now,
                ):
                    shard_list.append((rid, idx))
            for rid in s.scalars(
                select(Run.id).where(
                    Run.state == RunState.RUNNING,
                    Run.backend == backend,
                    Run.n_shards > 0,
                    Run.merge_claimed.is_(False),
                    Run.heartbeat_at < cutoff,
                    Run.n_shards == states.n_succeeded(Run.id),
                )
            ).all():
                if states.transition(
                    s,
                    rid,
                    RunState.RUNNING,
                    frm=(RunState.RUNNING,),
                    where=[Run.merge_claimed.is_(False), Run.heartbeat_at < cutoff],
                    heartbeat_at=now,
                ):
                    merges.append(rid)
        for rid in runs:
            self._dispatch(self.queue.dispatch_run, rid)
        for rid, idx in shard_list:
            self._dispatch(self.queue.dispatch_shards, rid, [idx])
        for rid in merges:
            self._dispatch(self.queue.dispatch_merge, rid)
        return (
            [f"{r} (re-sent)" for r in runs]
            + [f"{r}/{i} (re-sent)" for r, i in shard_list]
            + [f"{r} (merge re-sent)" for r in merges]
        )

    def _dispatch(self, send: Callable[..., None], *args: Any) -> None:
        try:
            send(*args)
        except CellfoundryError:
            log.warning("could not dispatch %s; it stays queued and is re-sent later", args)


_ENGINES: dict[tuple[str, str], Engine] = {}


def get_engine(settings: Settings, kind: str = "local") -> Engine:
    """The engine of this process (one per database URL)."""
    key = (settings.database_url, kind)
    if key not in _ENGINES:
        _ENGINES[key] = Engine(settings, kind)
    return _ENGINES[key]
