"""Sharded annotation: a run split into row ranges, annotated in parallel, merged by the last one.

The worker that finishes the last shard claims the merge (a guarded update of ``merge_claimed``),
concatenates the shard probabilities in order and writes the run's result files.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cellfoundry.jobs import states
from cellfoundry.jobs.applications import (
    LAYOUT_CHUNK,
    AnnotationParams,
    ConsensusParams,
    TaskOutput,
    _predictions_frame,
    get_application,
    label_column,
    layout_frame,
    read_dataset,
    stratified_sample,
    write_predictions_parquet,
)
from cellfoundry.jobs.heartbeat import Beat
from cellfoundry.jobs.queue import QueueUnavailable
from cellfoundry.jobs.retry import is_transient
from cellfoundry.store.storage import FileStorage, check_id
from cellfoundry.store.tables import (
    FINAL_STATES,
    Dataset,
    ModelRecord,
    Run,
    RunShard,
    RunState,
    utcnow,
)

if TYPE_CHECKING:
    from cellfoundry.jobs.engine import Engine

log = logging.getLogger("cellfoundry.jobs")


def shard_bounds(n_cells: int, size: int) -> list[tuple[int, int, int]]:
    """``(idx, start, stop)`` of each shard of ``n_cells`` rows, ``size`` rows each."""
    size = max(1, size)
    return [(i, a, min(a + size, n_cells)) for i, a in enumerate(range(0, max(n_cells, 1), size))]


def start_shards(engine: Engine, run: Run, ds: Dataset) -> None:
    """Create (or re-queue the unfinished) shards of a claimed run and dispatch them."""
    bounds = shard_bounds(ds.n_cells, engine.settings.shard_size)

    def write() -> list[int]:
        with engine.db.session() as s:
            now = utcnow()
            # only while the run is still ours: a cancel or a take-over wins
            if not states.transition(
                s,
                run.id,
                RunState.RUNNING,
                frm=(RunState.RUNNING,),
                where=[Run.worker == engine.name],
                n_shards=len(bounds),
                stage=f"annotating {len(bounds)} shard(s)",
                progress=5.0,
                heartbeat_at=now,
            ):
                raise LostRun(run.id)
            existing = {
                sh.idx: sh for sh in s.scalars(select(RunShard).where(RunShard.run_id == run.id))
            }
            if not existing:
                s.add_all(
                    RunShard(run_id=run.id, idx=i, start=a, stop=b, heartbeat_at=now)
                    for i, a, b in bounds
                )
            else:  # a re-queued run: the shards that did not finish start again
                s.execute(
                    update(RunShard)
                    .where(RunShard.run_id == run.id, RunShard.state != RunState.SUCCEEDED)
                    .values(state=RunState.QUEUED, worker=None, heartbeat_at=now)
                    .execution_options(synchronize_session=False)
                )
            s.flush()
            return list(
                s.scalars(
                    select(RunShard.idx).where(
                        RunShard.run_id == run.id, RunShard.state == RunState.QUEUED
                    )
                ).all()
            )

    from cellfoundry.jobs.engine import LostRun

    pending = engine.retry(write, f"starting the shards of {run.id}")
    if pending:
        try:
            engine.queue.dispatch_shards(run.id, list(pending))
        except QueueUnavailable as exc:  # they stay queued; the reaper re-sends them
            log.warning("shards of %s not dispatched: %s", run.id, exc.message)
    else:
        maybe_merge(engine, run.id)


def execute_shard_claimed(engine: Engine, run_id: str, idx: int) -> str:
    """Annotate a claimed shard, record it, and merge when it was the last one."""
    from cellfoundry.api import annotate
    from cellfoundry.jobs.engine import LostRun

    with Beat(engine, run_id, idx):
        try:
            run, ds, _ = engine.inputs(run_id)
            recs = engine.run_models(run)
            params = run_params(run)
            start, stop = engine.retry(lambda: _bounds(engine, run_id, idx), "reading a shard")
            t0 = time.perf_counter()
            adata = read_dataset(engine.storage.resolve(ds.path), backed=True)
            part = adata[start:stop]
            part = part.to_memory() if adata.isbacked else part.copy()
            t_read = time.perf_counter() - t0
            models = [engine.annotator(r) for r in recs]
            res = annotate(
                part,
                models if len(models) > 1 else models[0],
                threshold=params.threshold,
                min_coverage=params.min_coverage,
                species=params.species,
                explain=params.explain,
            )
            shard_dir = engine.storage.run_dir(run_id) / "shards"
            shard_dir.mkdir(exist_ok=True)
            if len(models) > 1:  # a consensus: each model's own result; the merge combines them
                from cellfoundry.consensus import ConsensusResult

                assert isinstance(res, ConsensusResult)
                for j, member in enumerate(res.members):
                    save_part(shard_dir, member_stem(idx, j), member)
                rule = {
                    "min_support": res.min_support,
                    "weights": list(res.weights),
                    "weighting": res.weighting,  # how the weights were chosen, for the summary
                }
                (shard_dir / f"{idx}.json").write_text(json.dumps({"consensus": rule}))
            else:
                save_part(shard_dir, str(idx), res)

            def record() -> tuple[int, int] | None:
                with engine.db.session() as s:
                    if not states.finish_shard(s, run_id, idx, engine.name):
                        return None
                    n_done = s.scalar(select(states.n_succeeded(run_id))) or 0
                    n_all = s.scalar(select(Run.n_shards).where(Run.id == run_id)) or 1
                    return n_done, n_all

            counts = engine.retry(record, f"recording shard {run_id}/{idx}")
            if counts is None:
                remove_if_ended(engine, run_id)
                return "lost"
            n_done, n_all = counts
            log.info(
                "shard %s/%s: %d cells, read %.2f s, total %.2f s (%s)",
                run_id,
                idx,
                stop - start,
                t_read,
                time.perf_counter() - t0,
                engine.name,
            )
            engine.report(
                run_id, f"annotated {n_done}/{n_all} shard(s)", 5 + 80 * n_done / n_all, owner=False
            )
            maybe_merge(engine, run_id)
            return "succeeded"
        except LostRun:
            remove_if_ended(engine, run_id)
            return "lost"
        except Exception as exc:
            if is_transient(exc):  # the database stayed away: the reaper re-queues the shard
                log.error("shard %s/%s interrupted: database unavailable: %s", run_id, idx, exc)
                return "interrupted"
            engine.fail_with(run_id, exc, f"shard {run_id}/{idx}")
            return "failed"


def run_params(run: Run) -> AnnotationParams:
    """The validated params of a sharded run (an annotation's, or a consensus's)."""
    params = get_application(run.application_id).validate(run.params)
    assert isinstance(params, AnnotationParams)
    return params


def member_stem(idx: int, j: int) -> str:
    """The file stem of model ``j``'s result in shard ``idx`` of a consensus."""
    return f"{idx}.m{j}"


def save_part(shard_dir: Path, stem: str, res: Any) -> None:
    """One model's result over one shard: probabilities, per-cell extras, additive counts of the
    findings (``marker_overlap``) and what the merge needs to rebuild the result."""
    tmp = shard_dir / f"{stem}.tmp.npy"
    np.save(tmp, res.probabilities.astype(np.float32))
    os.replace(tmp, shard_dir / f"{stem}.npy")
    if res.obs_columns:  # per-cell extras (reference_distance, ...): merged in cell order
        tmp = shard_dir / f"{stem}.obs.tmp.parquet"
        pd.DataFrame({k: np.asarray(v) for k, v in res.obs_columns.items()}).to_parquet(tmp)
        os.replace(tmp, shard_dir / f"{stem}.obs.parquet")
    counts = res.parts.get("marker_overlap")
    if counts is not None:  # per-type sums of the shard's cells: they add up over the shards
        tmp = shard_dir / f"{stem}.markers.tmp.npz"
        np.savez(tmp, **counts.to_arrays())
        os.replace(tmp, shard_dir / f"{stem}.markers.npz")
    no_evidence = res.parts.get("no_evidence")
    meta = {
        "coverage": None if res.coverage is None else res.coverage.fraction_present,
        "warnings": res.warnings,
        # the shard's cells without evidence: the merge warns of those of every shard
        "no_evidence": None if no_evidence is None else no_evidence.to_dict(),
        "threshold": res.threshold,
        "classes": res.classes,
        "model": res.model_name,
        "family": res.model_family,
        "gene_panel": None if res.gene_panel is None else res.gene_panel.to_dict(),
        "species": res.species,
        "species_mapping": res.orthology.describe() if res.orthology else None,
        "ontology": res.class_terms.to_dict(),
        # the model's distance description (threshold, ...): the same for every shard
        **mergeable_findings(res.findings),
    }
    tmp = shard_dir / f"{stem}.tmp.json"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, shard_dir / f"{stem}.json")


def _bounds(engine: Engine, run_id: str, idx: int) -> tuple[int, int]:
    with engine.db.session() as s:
        shard = s.get(RunShard, (run_id, idx))
        assert shard is not None
        return shard.start, shard.stop


def maybe_merge(engine: Engine, run_id: str) -> None:
    """Merge the shards when all have succeeded and nobody else claimed the merge."""
    from cellfoundry.jobs.engine import LostRun

    def claim() -> bool:
        with engine.db.session() as s:
            return states.claim_merge(s, run_id, engine.name)

    if not engine.retry(claim, f"claiming the merge of {run_id}"):
        return
    with Beat(engine, run_id, None):
        try:
            t0 = time.perf_counter()
            engine.finish(run_id, merge(engine, run_id), engine.name)
            log.info("run %s merged in %.2f s (%s)", run_id, time.perf_counter() - t0, engine.name)
        except LostRun:
            remove_if_ended(engine, run_id)
            return
        except Exception as exc:
            if is_transient(exc):
                log.error("merge of %s interrupted: database unavailable: %s", run_id, exc)
                return
            engine.fail_with(run_id, exc, f"merge of {run_id}")
            return
    remove_shard_files(engine.storage, run_id)


def remove_shard_files(storage: FileStorage, run_id: str) -> None:
    """Delete the per-shard files of a run: merged (the result holds them now), cancelled or
    failed (nothing will read them)."""
    shutil.rmtree(shard_dir_of(storage, run_id), ignore_errors=True)


def shard_dir_of(storage: FileStorage, run_id: str) -> Path:
    """Where the shards of ``run_id`` write their files (created by the first shard)."""
    return storage.resolve(Path("runs") / check_id(run_id, "run id") / "shards")


def remove_if_ended(engine: Engine, run_id: str) -> None:
    """Delete the shard files of ``run_id`` when it was cancelled or failed, and every file of it
    (but a model it produced) when it was deleted: a worker that wrote after the end or the
    delete, or stopped because of it, leaves nothing behind."""

    def clean() -> None:
        with engine.db.session() as s:
            found = s.scalar(select(Run.state).where(Run.id == run_id))
            if found is None:
                remove_run_files(engine.storage, s, run_id)
            elif found in ENDED:
                remove_shard_files(engine.storage, run_id)

    engine.retry(clean, f"removing the files of ended run {run_id}")


def remove_run_files(storage: FileStorage, s: Session, run_id: str) -> None:
    """Remove the folder of run ``run_id`` (deleted), but for the folder of any model the run
    produced that still exists: a model outlives its run."""
    remove_run_folder(storage, run_id, produced_model_dirs(storage, s, run_id))


def produced_model_dirs(storage: FileStorage, s: Session, run_id: str) -> set[Path]:
    """The folders (in storage) of the models that run ``run_id`` produced and that exist."""
    return {
        storage.resolve(p)
        for p in s.scalars(select(ModelRecord.path).where(ModelRecord.source_run_id == run_id))
        if not Path(p).is_absolute()
    }


def remove_run_folder(storage: FileStorage, run_id: str, kept: set[Path]) -> None:
    """Remove ``runs/<run_id>`` but for the folders ``kept`` (and the folders above them)."""
    folder = storage.resolve(Path("runs") / check_id(run_id, "run id"))
    if not kept:
        storage.remove_run(run_id)
    elif folder.is_dir():
        for child in folder.iterdir():
            if child not in kept and not any(k.is_relative_to(child) for k in kept):
                storage.remove_tree(storage.relative(child))


def sweep_leftovers(engine: Engine, grace_s: float) -> list[str]:
    """Delete shard folders left by runs that ended more than ``grace_s`` ago, and the folder of
    a deleted run that has one (but a model it produced): a worker that crashed before its
    cleanup, or wrote after it. Returns the run ids."""
    found = {p.parent.name: p for p in (engine.storage.root / "runs").glob("*/shards")}
    if not found:
        return []
    cutoff = utcnow() - dt.timedelta(seconds=grace_s)
    with engine.db.session() as s:
        ended = {
            rid: (state, finished)
            for rid, state, finished in s.execute(
                select(Run.id, Run.state, Run.finished_at).where(Run.id.in_(list(found)))
            ).all()
        }
        removed = []
        for rid, folder in sorted(found.items()):
            if rid in ended:  # a run still active, or ended within the grace period, keeps them
                state, finished = ended[rid]
                if state not in FINAL_STATES or finished is None or _utc(finished) > cutoff:
                    continue
                shutil.rmtree(folder, ignore_errors=True)
            else:  # the run was deleted: its folder goes (but a model it produced)
                remove_run_files(engine.storage, s, rid)
            removed.append(rid)
    return removed


def _utc(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)  # SQLite drops the zone


ENDED = (RunState.CANCELLED, RunState.FAILED)


#: dataset findings that are the same in every shard (a description of the model), so the
#: merge keeps shard 0's. ``marker_overlap`` is recomputed from the shards' summed counts
#: (``MarkerCounts``); the out-of-reference shares from the merged per-cell columns.
SHARD_INVARIANT_FINDINGS = ("reference_distance",)


def mergeable_findings(findings: dict[str, Any]) -> dict[str, Any]:
    """The findings a shard records for the merge (``SHARD_INVARIANT_FINDINGS``)."""
    return {"findings": {k: findings[k] for k in SHARD_INVARIANT_FINDINGS if k in findings}}


def merged_obs_columns(shard_dir: Path, stems: list[str]) -> dict[str, np.ndarray]:
    """The shards' per-cell extra columns concatenated in cell order (empty when none wrote)."""
    paths = [shard_dir / f"{stem}.obs.parquet" for stem in stems]
    if not all(p.exists() for p in paths):
        return {}
    frame = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    return {str(c): frame[c].to_numpy() for c in frame.columns}


def merged_marker_overlap(shard_dir: Path, stems: list[str]) -> dict[str, Any] | None:
    """``marker_overlap`` of all the cells, from the shards' summed per-type counts."""
    from cellfoundry.models.baselines.explain import MarkerCounts

    paths = [shard_dir / f"{stem}.markers.npz" for stem in stems]
    if not all(p.exists() for p in paths):
        return None
    total: MarkerCounts | None = None
    for p in paths:  # one shard's counts in memory at a time
        with np.load(p, allow_pickle=False) as arrays:
            part = MarkerCounts.from_arrays(arrays)
        total = part if total is None else MarkerCounts.combine([total, part])
    return None if total is None else total.overlap()


def merged_warnings(shard_dir: Path, stems: list[str], first: dict[str, Any]) -> list[str]:
    """Shard 0's warnings (``first``: its meta), the count of cells without evidence taken over
    every shard (``NoEvidence``) instead of shard 0's."""
    from cellfoundry.models.base import NoEvidence

    warnings = list(first["warnings"])
    found = [first.get("no_evidence")] + [
        json.loads((shard_dir / f"{stem}.json").read_text()).get("no_evidence")
        for stem in stems[1:]
    ]
    parts: list[dict[str, int]] = [p for p in found if p is not None]
    if len(parts) < len(found):  # a model that does not count them
        return warnings
    own = NoEvidence(**parts[0]).warning
    total = NoEvidence.combine(parts).warning
    return [w for w in warnings if w != own] + ([total] if total else [])


def merged_result(shard_dir: Path, stems: list[str], obs_names: pd.Index) -> Any:
    """One model's result over every cell, rebuilt from its shard files ``stems`` (in order)."""
    from cellfoundry.ontology import LabelMapping
    from cellfoundry.result import AnnotationResult

    meta = json.loads((shard_dir / f"{stems[0]}.json").read_text())
    findings = dict(meta.get("findings") or {})
    overlap = merged_marker_overlap(shard_dir, stems)
    if overlap is not None:
        findings["marker_overlap"] = overlap
    res = AnnotationResult(
        obs_names=obs_names.copy(),
        classes=meta["classes"],
        probabilities=np.concatenate([np.load(shard_dir / f"{stem}.npy") for stem in stems]),
        threshold=meta["threshold"],
        model_name=meta["model"],
        model_family=meta["family"],
        warnings=merged_warnings(shard_dir, stems, meta),
        species=meta.get("species"),
        ontology=LabelMapping.from_dict(meta["ontology"]) if meta.get("ontology") else None,
        obs_columns=merged_obs_columns(shard_dir, stems),
        findings=findings,
    )
    return res, meta


def merge(engine: Engine, run_id: str) -> TaskOutput:
    """The run's result from its shard files: predictions, probabilities, metrics and layout."""
    run, ds, rec = engine.inputs(run_id)
    params = run_params(run)
    out_dir = engine.storage.run_dir(run_id)
    shard_dir = out_dir / "shards"
    engine.report(run_id, "merging shards", 88)
    adata = read_dataset(engine.storage.resolve(ds.path), backed=True)
    truth = label_column(adata, params.label_key) if params.label_key else None
    consensus_of: list[str] = []
    if isinstance(params, ConsensusParams):
        from cellfoundry.consensus import Weighting, agreement_figures, consensus

        consensus_of = params.model_ids(run.model_id)
        members = [
            merged_result(
                shard_dir, [member_stem(i, j) for i in range(run.n_shards)], adata.obs_names
            )
            for j in range(len(consensus_of))
        ]
        rule = json.loads((shard_dir / "0.json").read_text())["consensus"]
        # the library's consensus over every cell, with the rule each shard used: the same
        # calls as one unsharded run (each cell's call depends on that cell alone)
        res = consensus(
            [m for m, _ in members],
            consensus_of,  # per-model columns and figures named by model id
            min_support=rule["min_support"],
            weights=rule["weights"],
            weighting=Weighting(
                rule["weights"],
                rule.get("weighting", {}).get("method", "given"),
                {k: v for k, v in rule.get("weighting", {}).items() if k != "method"},
            ),
        )
        meta = members[0][1]
    else:
        res, meta = merged_result(shard_dir, [str(i) for i in range(run.n_shards)], adata.obs_names)
    probs = res.probabilities
    summary = res.summary()
    summary["gene_coverage"] = meta["coverage"]
    panel = meta.get("gene_panel") or {}
    summary["gene_panel_mode"] = panel.get(
        "mode"
    )  # all_genes / unobserved / refit / family_default
    summary["gene_panel"] = panel or None
    summary["species"] = meta.get("species")
    summary["species_mapping"] = meta.get("species_mapping")
    if consensus_of:
        summary["consensus"].update(agreement_figures(res, consensus_of))
    files: dict[str, Path] = {
        "predictions": out_dir / "predictions.parquet",
        "probabilities": out_dir / "probabilities.npy",
    }
    write_predictions_parquet(_predictions_frame(res, truth), files["predictions"])
    np.save(files["probabilities"], probs)
    summary["classes"] = list(res.classes)
    if truth is not None:
        from cellfoundry.stats.metrics import classification_metrics

        summary["metrics"] = classification_metrics(
            truth, res.labels, res.probabilities, res.classes
        )
        summary["label_key"] = params.label_key
    if params.layout != "none" and res.n_cells >= 3:
        engine.report(run_id, f"computing the {params.layout} layout", 92)
        files["layout"], fit_cells = _layout(engine, run_id, adata, rec, res, params, out_dir)
        summary["layout"] = params.layout
        summary["layout_sampled"] = res.n_cells > engine.settings.umap_max_cells
        summary["layout_fit_cells"] = fit_cells
    return TaskOutput(summary=summary, files=files)


def _layout(
    engine: Engine,
    run_id: str,
    adata: Any,
    rec: ModelRecord,
    res: Any,
    params: AnnotationParams,
    out_dir: Path,
) -> tuple[Path, int]:
    """The layout of every cell (fitted on a label-stratified sample of ``layout_fit_cells``,
    applied to the rest ``LAYOUT_CHUNK`` rows at a time) and the number of fitted cells."""
    from cellfoundry.data.prepare import features
    from cellfoundry.data.species import to_human_space
    from cellfoundry.stats.layout import LayoutMethod, layout_cells, row_chunks

    labels = np.asarray(res.display_labels, dtype=str)
    n = len(labels)
    method: LayoutMethod = "umap" if params.layout == "umap" else "pca"
    fit_rows = stratified_sample(labels, engine.settings.layout_fit_cells)
    plan_fn = getattr(engine.annotator(rec), "plan", None)

    def rows_of(sel: Any) -> Any:  # rows in memory, with the genes the model saw
        sub = adata[sel]
        sub = sub.to_memory() if adata.isbacked else sub.copy()
        return to_human_space(sub, params.species)[0]

    def progress(done: int) -> None:
        engine.report(run_id, f"layout: placed {done:,}/{n:,} cells", 92 + 7 * done / n)

    if plan_fn is None:  # no feature space: lay out the predicted probabilities
        probs = res.probabilities
        xy = layout_cells(
            n,
            fit_rows,
            lambda rows: probs[rows],
            ((a, probs[a:b]) for a, b in row_chunks(n, LAYOUT_CHUNK)),
            method,
            progress=progress,
        )
    else:
        fit = rows_of(fit_rows)
        plan = plan_fn(fit, None, params.min_coverage)  # one plan: every chunk has the same genes
        xy = layout_cells(
            n,
            fit_rows,
            lambda _rows: features(fit, plan),
            ((a, features(rows_of(slice(a, b)), plan)) for a, b in row_chunks(n, LAYOUT_CHUNK)),
            method,
            progress=progress,
        )
    coords = layout_frame(
        xy, np.asarray(adata.obs_names), labels, engine.settings.umap_max_cells, adata.obs
    )
    path = out_dir / "layout.parquet"
    coords.to_parquet(path, row_group_size=LAYOUT_CHUNK)
    return path, len(fit_rows)
