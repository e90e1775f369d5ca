"""Deleting a user's datasets, runs and models: the rows and the files they own.

Active (queued or running) runs are never deleted from under their worker: the caller cancels
them first (409 with a hint). A delete and a submit on the same dataset or model are serialised
by the owner's lock (:func:`~cellfoundry.service.quotas.lock_user`): the delete sees the new run
(409), or the submit sees the delete (404). Files shared with another row are kept.

Files are removed once the rows' deletion is committed (:func:`remove_after_commit`), never when
it rolls back. A worker still at work on a run just cancelled (it sees the cancel at its next
progress report) may write on until then: if it ends before the delete commits it sees its run
(cancelled) and leaves its files to the delete, which removes them after; if it ends after, it
sees its run gone and removes what it wrote itself (``jobs.shards.remove_if_ended``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path

from sqlalchemy import delete, event, func, select
from sqlalchemy.orm import Session

from cellfoundry.errors import ConflictError, NotFoundError
from cellfoundry.jobs.shards import produced_model_dirs, remove_run_folder
from cellfoundry.jobs.states import ACTIVE_STATES
from cellfoundry.service.platform import Platform
from cellfoundry.service.quotas import lock_user
from cellfoundry.store.tables import (
    Dataset,
    Evaluation,
    ModelRecord,
    Result,
    Run,
    RunShard,
)

log = logging.getLogger("cellfoundry.service")


def _refuse_active(runs: list[Run], what: str) -> None:
    active = [r.id for r in runs if r.state in ACTIVE_STATES]
    if active:
        raise ConflictError(
            f"{what} has {len(active)} queued or running run(s): {', '.join(active[:5])}",
            "cancel them first (POST /runs/{run_id}/cancel), then delete again",
            code="active_runs",
        )


_REMOVALS = "cf_remove_after_commit"


def remove_after_commit(s: Session, remove: Callable[[], None]) -> None:
    """Run ``remove`` (a file removal) once ``s`` commits, and never if it rolls back: a row's
    files go only once the row is gone for every reader."""
    if _REMOVALS not in s.info:
        s.info[_REMOVALS] = []
        event.listen(s, "after_commit", _removals_due)
        event.listen(s, "after_rollback", _removals_dropped)
    s.info[_REMOVALS].append(remove)


def _removals_due(s: Session) -> None:
    due, s.info[_REMOVALS] = s.info[_REMOVALS], []
    for remove in due:
        remove()


def _removals_dropped(s: Session) -> None:
    s.info[_REMOVALS] = []


def delete_runs(platform: Platform, s: Session, runs: list[Run]) -> None:
    """Remove finished runs: rows (result, shards, evaluations) and, once that is committed,
    their folders, keeping the folder of any model a run produced that still exists."""
    _refuse_active(runs, "this")
    for run in runs:
        kept = produced_model_dirs(platform.storage, s, run.id)
        remove_after_commit(s, partial(remove_run_folder, platform.storage, run.id, kept))
        for table in (Evaluation, Result, RunShard):
            s.execute(delete(table).where(table.run_id == run.id))
        s.delete(run)
    s.flush()


def lock_owner(
    s: Session, table: type[Dataset] | type[ModelRecord], row_id: str, owner: str | None, kind: str
) -> None:
    """Take ``owner``'s lock (:func:`lock_user`, which a submit holds until its run is
    committed: the runs read next include that run), then 404 when the row is gone already
    (a concurrent delete of it came first)."""
    if owner is not None:
        lock_user(s, owner)
    if s.scalar(select(table.id).where(table.id == row_id)) is None:
        raise NotFoundError(
            f"no {kind} '{row_id}' (it was just deleted)",
            f"list yours with GET /{kind}s",
            code=f"{kind}_not_found",
        )


def delete_dataset(platform: Platform, s: Session, d: Dataset) -> None:
    """Remove a dataset with its (finished) runs, and its file unless another row shares it."""
    lock_owner(s, Dataset, d.id, d.owner_id, "dataset")
    runs = list(s.scalars(select(Run).where(Run.dataset_id == d.id)))
    _refuse_active(runs, f"dataset '{d.id}'")
    delete_runs(platform, s, runs)
    s.execute(delete(Evaluation).where(Evaluation.dataset_id == d.id))
    shared = s.scalar(
        select(func.count()).select_from(Dataset).where(Dataset.path == d.path, Dataset.id != d.id)
    )
    if not shared:
        remove_after_commit(s, partial(platform.storage.remove_file, d.path))
    s.delete(d)
    s.flush()


def delete_model(platform: Platform, s: Session, rec: ModelRecord) -> None:
    """Remove a model with the (finished) runs that used it, and its artifact folder."""
    lock_owner(s, ModelRecord, rec.id, rec.owner_id, "model")
    runs = list(s.scalars(select(Run).where(Run.model_id == rec.id)))
    runs += [  # consensus runs that combined it with their model_id
        r
        for r in s.scalars(
            select(Run).where(Run.application_id == "consensus", Run.model_id != rec.id)
        )
        if rec.id in (r.params or {}).get("other_model_ids", [])
    ]
    _refuse_active(runs, f"model '{rec.id}'")
    delete_runs(platform, s, runs)
    s.execute(delete(Evaluation).where(Evaluation.model_id == rec.id))
    platform.predictor.remove(rec.id)
    platform.engine.forget_model(rec)
    if not Path(rec.path).is_absolute():  # a folder registered in place is the admin's, not ours
        remove_after_commit(s, partial(platform.storage.remove_tree, rec.path))
    s.delete(rec)
    s.flush()
