"""Running runs: claiming, heartbeats, shards, merging, failure reasons and stale-run recovery.

The same code serves the local workers and the Celery tasks. Every state change is a guarded
``UPDATE ... WHERE`` on the run row, so two workers can never both own a run, a re-delivered task
is a no-op, and a cancelled or re-queued run stops writing.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from cellfoundry.errors import CellfoundryError
from cellfoundry.jobs.applications import (
    AnnotationParams,
    TaskContext,
    TaskOutput,
    _predictions_frame,
    get_application,
    label_column,
    layout_2d,
    read_dataset,
    with_layout_obs,
)
from cellfoundry.jobs.queue import get_queue
from cellfoundry.service.settings import Settings
from cellfoundry.store.db import Database
from cellfoundry.store.storage import FileStorage
from cellfoundry.store.tables import (
    Dataset,
    Evaluation,
    ModelRecord,
    Result,
    Run,
    RunShard,
    Worker,
    utcnow,
)

log = logging.getLogger("cellfoundry.jobs")


class LostRun(Exception):
    """The run was cancelled, re-queued or taken over: stop working on it."""


def _aware(t: dt.datetime | None) -> dt.datetime | None:
    return t if t is None or t.tzinfo else t.replace(tzinfo=dt.UTC)


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
        self._stop = threading.Event()

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
            except (
                Exception
            ) as exc:  # a broken model must not stop the worker; its runs fail with the reason
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

    def stop(self) -> None:
        self._stop.set()

    # --- claiming ---------------------------------------------------------------------------

    def _stale_before(self) -> dt.datetime:
        return utcnow() - dt.timedelta(seconds=self.settings.stale_after_s)

    def claim_run(self, s: Session, run_id: str) -> bool:
        """Take ``run_id`` if it is queued (or running with a dead worker); True when taken."""
        now = utcnow()
        res = s.execute(
            update(Run)
            .where(
                Run.id == run_id,
                or_(
                    Run.state == "queued",
                    and_(Run.state == "running", Run.heartbeat_at < self._stale_before()),
                ),
            )
            .values(
                state="running",
                worker=self.name,
                heartbeat_at=now,
                attempts=Run.attempts + 1,
                started_at=func.coalesce(Run.started_at, now),
                stage="starting",
                merge_claimed=False,
            )
            .execution_options(synchronize_session=False)
        )
        return res.rowcount == 1  # type: ignore[attr-defined]

    def claim_shard(self, s: Session, run_id: str, idx: int) -> bool:
        run_state = s.scalar(select(Run.state).where(Run.id == run_id))
        if run_state != "running":
            return False
        res = s.execute(
            update(RunShard)
            .where(
                RunShard.run_id == run_id,
                RunShard.idx == idx,
                or_(
                    RunShard.state == "queued",
                    and_(RunShard.state == "running", RunShard.heartbeat_at < self._stale_before()),
                ),
            )
            .values(
                state="running",
                worker=self.name,
                heartbeat_at=utcnow(),
                attempts=RunShard.attempts + 1,
            )
            .execution_options(synchronize_session=False)
        )
        return res.rowcount == 1  # type: ignore[attr-defined]

    def next_local_work(self) -> tuple[str, str, int] | None:
        """Claim the oldest queued shard, else the oldest queued local run."""
        with self.db.session() as s:
            rows = s.execute(
                select(RunShard.run_id, RunShard.idx)
                .join(Run, Run.id == RunShard.run_id)
                .where(RunShard.state == "queued", Run.state == "running", Run.backend == "local")
                .order_by(Run.created_at, RunShard.idx)
                .limit(5)
            ).all()
            for run_id, idx in rows:
                if self.claim_shard(s, run_id, idx):
                    return ("shard", run_id, idx)
            ids = s.scalars(
                select(Run.id)
                .where(Run.state == "queued", Run.backend == "local")
                .order_by(Run.created_at)
                .limit(5)
            ).all()
            for run_id in ids:
                if self.claim_run(s, run_id):
                    return ("run", run_id, -1)
        return None

    # --- progress and endings ---------------------------------------------------------------

    def report(self, run_id: str, stage: str, progress: float, owner: bool = True) -> None:
        """Record stage/progress and the heartbeat; raises LostRun when the run is no longer ours."""
        with self.db.session() as s:
            cond = [Run.id == run_id, Run.state == "running"]
            if owner:
                cond.append(Run.worker == self.name)
            res = s.execute(
                update(Run)
                .where(*cond)
                .values(
                    stage=stage[:100],
                    progress=float(min(max(progress, 0), 100)),
                    heartbeat_at=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                raise LostRun(run_id)

    def fail(
        self, run_id: str, code: str, message: str, hint: str | None, owner: str | None = None
    ) -> None:
        """Mark the run failed with a reason (only while it is running, and ours when ``owner`` is set)."""
        with self.db.session() as s:
            cond = [Run.id == run_id, Run.state.in_(("running", "queued"))]
            if owner:
                cond.append(Run.worker == owner)
            s.execute(
                update(Run)
                .where(*cond)
                .values(
                    state="failed",
                    error_code=code[:100],
                    error_message=message,
                    error_hint=hint,
                    finished_at=utcnow(),
                    stage="failed",
                )
                .execution_options(synchronize_session=False)
            )

    def _finish(self, run_id: str, out: TaskOutput, owner: str | None) -> None:
        with self.db.session() as s:
            run = s.get(Run, run_id)
            if run is None or run.state != "running" or (owner and run.worker != owner):
                raise LostRun(run_id)
            files = {k: self.storage.relative(v) for k, v in out.files.items()}
            existing = s.get(Result, run_id)
            if existing is None:
                s.add(Result(run_id=run_id, summary=_jsonable(out.summary), files=files))
            else:
                existing.summary, existing.files = _jsonable(out.summary), files
            if out.evaluation is not None:
                s.add(
                    Evaluation(
                        run_id=run_id,
                        model_id=run.model_id,
                        dataset_id=run.dataset_id,
                        label_key=out.evaluation["label_key"],
                        metrics=_jsonable(out.evaluation["metrics"]),
                    )
                )
            run.state, run.stage, run.progress, run.finished_at = (
                "succeeded",
                "done",
                100.0,
                utcnow(),
            )

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

    # --- runs -------------------------------------------------------------------------------

    def _inputs(self, run_id: str) -> tuple[Run, Dataset, ModelRecord]:
        with self.db.session() as s:
            run = s.get(Run, run_id)
            assert run is not None
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

    def execute_run(self, run_id: str) -> str:
        """Run ``run_id`` if this worker can claim it; the outcome is written to the database."""
        with self.db.session() as s:
            if not self.claim_run(s, run_id):
                return "skipped"
        return self._execute_claimed(run_id)

    def _execute_claimed(self, run_id: str) -> str:
        me = self.name
        beat = _Beat(self, run_id, None)
        beat.start()
        try:
            run, ds, rec = self._inputs(run_id)
            if run.attempts > self.settings.max_attempts:
                raise CellfoundryError(
                    f"the run was started {run.attempts - 1} times and its worker stopped each time",
                    "check the worker logs (out of memory?), then submit the run again",
                    code="worker_lost",
                )
            app = get_application(run.application_id)
            params = app.validate(run.params)
            if app.sharded:
                self._start_shards(run, ds)
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
            self._finish(run_id, out, me)
            return "succeeded"
        except LostRun:
            return "lost"
        except CellfoundryError as exc:
            self.fail(run_id, exc.code, exc.message, exc.hint, owner=me)
            return "failed"
        except Exception as exc:
            log.error("run %s failed:\n%s", run_id, traceback.format_exc())
            self.fail(
                run_id,
                "internal_error",
                f"{type(exc).__name__}: {exc}",
                "this is a bug or an unexpected input; the worker log has the traceback",
                owner=me,
            )
            return "failed"
        finally:
            beat.stop()

    def register_result_model(self, folder: Path, run: Run) -> str:
        from cellfoundry.service.models import register_model

        with self.db.session() as s:
            rec = register_model(
                s, self.storage, folder, owner_id=run.owner_id, source_run_id=run.id, copy=False
            )
            return rec.id

    # --- shards (annotation) ----------------------------------------------------------------

    def _start_shards(self, run: Run, ds: Dataset) -> None:
        size = max(1, self.settings.shard_size)
        n = ds.n_cells
        bounds = [(i, a, min(a + size, n)) for i, a in enumerate(range(0, max(n, 1), size))]
        with self.db.session() as s:
            existing = {
                sh.idx: sh for sh in s.scalars(select(RunShard).where(RunShard.run_id == run.id))
            }
            if not existing:
                s.add_all(RunShard(run_id=run.id, idx=i, start=a, stop=b) for i, a, b in bounds)
            else:
                for sh in existing.values():
                    if sh.state != "succeeded":
                        sh.state, sh.worker = "queued", None
            s.execute(
                update(Run)
                .where(Run.id == run.id, Run.worker == self.name)
                .values(
                    n_shards=len(bounds),
                    stage=f"annotating {len(bounds)} shard(s)",
                    progress=5.0,
                    heartbeat_at=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
        with self.db.session() as s:
            pending = s.scalars(
                select(RunShard.idx).where(RunShard.run_id == run.id, RunShard.state == "queued")
            ).all()
        if pending:
            self.queue.dispatch_shards(run.id, list(pending))
        else:
            self._maybe_merge(run.id)

    def execute_shard(self, run_id: str, idx: int) -> str:
        """Annotate one shard of a run; the worker finishing the last shard merges."""
        with self.db.session() as s:
            if not self.claim_shard(s, run_id, idx):
                return "skipped"
        return self._execute_shard_claimed(run_id, idx)

    def _execute_shard_claimed(self, run_id: str, idx: int) -> str:
        from cellfoundry.api import annotate

        beat = _Beat(self, run_id, idx)
        beat.start()
        try:
            run, ds, rec = self._inputs(run_id)
            params = AnnotationParams.model_validate(run.params)
            with self.db.session() as s:
                shard = s.get(RunShard, (run_id, idx))
                assert shard is not None
                start, stop = shard.start, shard.stop
            t0 = time.perf_counter()
            adata = read_dataset(self.storage.resolve(ds.path), backed=True)
            part = adata[start:stop]
            part = part.to_memory() if adata.isbacked else part.copy()
            t_read = time.perf_counter() - t0
            res = annotate(
                part,
                self.annotator(rec),
                threshold=params.threshold,
                min_coverage=params.min_coverage,
            )
            shard_dir = self.storage.run_dir(run_id) / "shards"
            shard_dir.mkdir(exist_ok=True)
            tmp = shard_dir / f"{idx}.tmp.npy"
            np.save(tmp, res.probabilities.astype(np.float32))
            os.replace(tmp, shard_dir / f"{idx}.npy")
            meta = {
                "coverage": None if res.coverage is None else res.coverage.fraction_present,
                "warnings": res.warnings,
                "threshold": res.threshold,
                "classes": res.classes,
                "model": res.model_name,
                "family": res.model_family,
            }
            (shard_dir / f"{idx}.json").write_text(json.dumps(meta))
            with self.db.session() as s:
                done = s.execute(
                    update(RunShard)
                    .where(
                        RunShard.run_id == run_id,
                        RunShard.idx == idx,
                        RunShard.worker == self.name,
                        RunShard.state == "running",
                    )
                    .values(state="succeeded", heartbeat_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
                if done.rowcount != 1:  # type: ignore[attr-defined]
                    return "lost"
                n_done = (
                    s.scalar(
                        select(func.count())
                        .select_from(RunShard)
                        .where(RunShard.run_id == run_id, RunShard.state == "succeeded")
                    )
                    or 0
                )
                n_all = s.scalar(select(Run.n_shards).where(Run.id == run_id)) or 1
            log.info(
                "shard %s/%s: %d cells, read %.2f s, total %.2f s (%s)",
                run_id,
                idx,
                stop - start,
                t_read,
                time.perf_counter() - t0,
                self.name,
            )
            self.report(
                run_id, f"annotated {n_done}/{n_all} shard(s)", 5 + 80 * n_done / n_all, owner=False
            )
            self._maybe_merge(run_id)
            return "succeeded"
        except LostRun:
            return "lost"
        except CellfoundryError as exc:
            self.fail(run_id, exc.code, exc.message, exc.hint)
            return "failed"
        except Exception as exc:
            log.error("shard %s/%s failed:\n%s", run_id, idx, traceback.format_exc())
            self.fail(
                run_id,
                "internal_error",
                f"{type(exc).__name__}: {exc}",
                "this is a bug or an unexpected input; the worker log has the traceback",
            )
            return "failed"
        finally:
            beat.stop()

    def _maybe_merge(self, run_id: str) -> None:
        with self.db.session() as s:
            n_done = (
                select(func.count())
                .select_from(RunShard)
                .where(RunShard.run_id == run_id, RunShard.state == "succeeded")
                .scalar_subquery()
            )
            res = s.execute(
                update(Run)
                .where(
                    Run.id == run_id,
                    Run.state == "running",
                    Run.merge_claimed.is_(False),
                    Run.n_shards == n_done,
                )
                .values(
                    merge_claimed=True, worker=self.name, stage="merging", heartbeat_at=utcnow()
                )
                .execution_options(synchronize_session=False)
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                return
        beat = _Beat(self, run_id, None)
        beat.start()
        try:
            t0 = time.perf_counter()
            self._finish(run_id, self._merge(run_id), self.name)
            log.info("run %s merged in %.2f s (%s)", run_id, time.perf_counter() - t0, self.name)
        except LostRun:
            pass
        except CellfoundryError as exc:
            self.fail(run_id, exc.code, exc.message, exc.hint)
        except Exception as exc:
            log.error("merge of %s failed:\n%s", run_id, traceback.format_exc())
            self.fail(
                run_id,
                "internal_error",
                f"{type(exc).__name__}: {exc}",
                "this is a bug or an unexpected input; the worker log has the traceback",
            )
        finally:
            beat.stop()

    def _merge(self, run_id: str) -> TaskOutput:
        from cellfoundry.result import AnnotationResult

        run, ds, rec = self._inputs(run_id)
        params = AnnotationParams.model_validate(run.params)
        out_dir = self.storage.run_dir(run_id)
        shard_dir = out_dir / "shards"
        probs = np.concatenate([np.load(shard_dir / f"{i}.npy") for i in range(run.n_shards)])
        meta = json.loads((shard_dir / "0.json").read_text())
        self.report(run_id, "merging shards", 88)
        adata = read_dataset(self.storage.resolve(ds.path), backed=True)
        truth = label_column(adata, params.label_key) if params.label_key else None
        res = AnnotationResult(
            obs_names=adata.obs_names.copy(),
            classes=meta["classes"],
            probabilities=probs,
            threshold=meta["threshold"],
            model_name=meta["model"],
            model_family=meta["family"],
            warnings=meta["warnings"],
        )
        summary = res.summary()
        summary["gene_coverage"] = meta["coverage"]
        files: dict[str, Path] = {
            "predictions": out_dir / "predictions.parquet",
            "probabilities": out_dir / "probabilities.npy",
        }
        _predictions_frame(res, truth).to_parquet(files["predictions"])
        np.save(files["probabilities"], probs)
        summary["classes"] = list(res.classes)
        if truth is not None:
            from cellfoundry.stats.metrics import classification_metrics

            summary["metrics"] = classification_metrics(
                truth, res.labels, res.probabilities, res.classes
            )
            summary["label_key"] = params.label_key
        if params.layout != "none" and res.n_cells >= 3:
            self.report(run_id, f"computing the {params.layout} layout", 92)
            files["layout"] = self._layout(adata, rec, res, params, out_dir)
            summary["layout"] = params.layout
            summary["layout_sampled"] = res.n_cells > self.settings.umap_max_cells
        return TaskOutput(summary=summary, files=files)

    def _layout(
        self, adata: Any, rec: ModelRecord, res: Any, params: AnnotationParams, out_dir: Path
    ) -> Path:
        from cellfoundry.data.prepare import features

        labels = np.asarray(res.display_labels, dtype=str)
        idx = stratified_sample(labels, self.settings.umap_max_cells)
        sub = adata[idx]
        sub = sub.to_memory() if adata.isbacked else sub.copy()
        ann = self.annotator(rec)
        plan_fn = getattr(ann, "plan", None)
        if plan_fn is not None:
            x = features(sub, plan_fn(sub, None, params.min_coverage))
        else:
            x = res.probabilities[idx]
        coords, _ = layout_2d(x, labels[idx], params.layout, max_cells=len(idx) + 1)
        coords["i"] = idx[coords["i"].to_numpy()]
        coords.insert(0, "cell", np.asarray(adata.obs_names)[coords["i"].to_numpy()])
        coords["label"] = labels[coords["i"].to_numpy()]
        coords = with_layout_obs(coords, adata.obs)
        path = out_dir / "layout.parquet"
        coords.to_parquet(path)
        return path

    # --- recovery ---------------------------------------------------------------------------

    def reap(self) -> list[str]:
        """Re-queue (or fail, after ``max_attempts``) runs and shards whose worker stopped beating."""
        stale = self._stale_before()
        requeued_runs: list[str] = []
        requeued_shards: list[tuple[str, int]] = []
        with self.db.session() as s:
            for run in s.scalars(
                select(Run).where(Run.state == "running", Run.heartbeat_at < stale)
            ):
                if run.n_shards > 0 and not run.merge_claimed and run.stage != "starting":
                    continue  # its shards are watched one by one below
                silent = int(self.settings.stale_after_s)
                if run.attempts >= self.settings.max_attempts:
                    run.state, run.finished_at, run.error_code = "failed", utcnow(), "worker_lost"
                    run.error_message = (
                        f"the worker ({run.worker}) stopped responding (no heartbeat for {silent} s) "
                        f"during '{run.stage}', after {run.attempts} attempt(s)"
                    )
                    run.error_hint = (
                        "check the worker logs (out of memory? killed?), then submit the run again"
                    )
                    run.stage = "failed"
                else:
                    run.state, run.worker, run.stage, run.merge_claimed = (
                        "queued",
                        None,
                        "re-queued: worker lost",
                        False,
                    )
                    requeued_runs.append(run.id)
            for sh in s.scalars(
                select(RunShard)
                .join(Run, Run.id == RunShard.run_id)
                .where(
                    RunShard.state == "running",
                    RunShard.heartbeat_at < stale,
                    Run.state == "running",
                )
            ):
                if sh.attempts >= self.settings.max_attempts:
                    s.execute(
                        update(Run)
                        .where(Run.id == sh.run_id, Run.state == "running")
                        .values(
                            state="failed",
                            finished_at=utcnow(),
                            stage="failed",
                            error_code="worker_lost",
                            error_message=f"the worker ({sh.worker}) of shard {sh.idx} (cells {sh.start}-{sh.stop}) "
                            f"stopped responding, after {sh.attempts} attempt(s)",
                            error_hint="check the worker logs (out of memory? killed?), then submit the run again",
                        )
                        .execution_options(synchronize_session=False)
                    )
                    continue
                sh.state, sh.worker = "queued", None
                requeued_shards.append((sh.run_id, sh.idx))
        for run_id in requeued_runs:
            try:
                self.queue.dispatch_run(run_id)
            except CellfoundryError:
                log.warning("could not re-dispatch run %s; it stays queued", run_id)
        for run_id, idx in requeued_shards:
            try:
                self.queue.dispatch_shards(run_id, [idx])
            except CellfoundryError:
                log.warning("could not re-dispatch shard %s/%s", run_id, idx)
        return requeued_runs + [f"{r}/{i}" for r, i in requeued_shards]


def stratified_sample(labels: np.ndarray, max_cells: int, seed: int = 0) -> np.ndarray:
    """All indices, or about ``max_cells`` of them drawn per label in proportion (sorted)."""
    n = len(labels)
    idx = np.arange(n)
    if n <= max_cells:
        return idx
    rng = np.random.default_rng(seed)
    parts = []
    for lab in np.unique(labels):
        members = idx[labels == lab]
        k = max(1, round(len(members) * max_cells / n))
        parts.append(rng.choice(members, size=min(k, len(members)), replace=False))
    return np.sort(np.concatenate(parts))


class _Beat:
    """A thread that refreshes the heartbeat of a run (and shard) while work is in progress."""

    def __init__(self, engine: Engine, run_id: str, shard: int | None) -> None:
        self.engine, self.run_id, self.shard = engine, run_id, shard
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"cf-beat-{run_id}")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.engine.settings.heartbeat_s):
            try:
                with self.engine.db.session() as s:
                    now = utcnow()
                    if self.shard is None:
                        s.execute(
                            update(Run)
                            .where(
                                Run.id == self.run_id,
                                Run.state == "running",
                                Run.worker == self.engine.name,
                            )
                            .values(heartbeat_at=now)
                            .execution_options(synchronize_session=False)
                        )
                    else:
                        s.execute(
                            update(RunShard)
                            .where(
                                RunShard.run_id == self.run_id,
                                RunShard.idx == self.shard,
                                RunShard.worker == self.engine.name,
                            )
                            .values(heartbeat_at=now)
                            .execution_options(synchronize_session=False)
                        )
                        s.execute(
                            update(Run)
                            .where(Run.id == self.run_id, Run.state == "running")
                            .values(heartbeat_at=now)
                            .execution_options(synchronize_session=False)
                        )
            except Exception:
                log.exception("heartbeat failed")


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=_default))


def _default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, dt.datetime | Path):
        return str(o)
    return repr(o)


_ENGINES: dict[tuple[str, str], Engine] = {}


def get_engine(settings: Settings, kind: str = "local") -> Engine:
    """The engine of this process (one per database URL)."""
    key = (settings.database_url, kind)
    if key not in _ENGINES:
        _ENGINES[key] = Engine(settings, kind)
    return _ENGINES[key]
