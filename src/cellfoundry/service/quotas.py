"""Per-user quotas: active runs at once and stored upload bytes (settings; 0 switches one off).

Both checks are atomic: :func:`lock_user` first takes a lock on the user's row that lasts until
the transaction ends (``SELECT ... FOR UPDATE`` on PostgreSQL, the database's write lock on
SQLite), then the check counts and the caller inserts the run or dataset in the same
transaction. Two submits (or uploads) of one user racing at the limit are serialised, so the
quota is never exceeded; other users are not held up on PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from cellfoundry.config import Settings
from cellfoundry.errors import TooLargeError, TooManyRequestsError
from cellfoundry.store.tables import Dataset, Run, RunState, User

ACTIVE = (RunState.QUEUED, RunState.RUNNING)


def lock_user(s: Session, uid: str) -> None:
    """Hold ``uid``'s quota lock until ``s`` commits or rolls back.

    PostgreSQL: a row lock on the user (other users' submits go on). SQLite: a write that
    changes nothing, which takes the database's write lock (SQLite has no row locks); the
    reads that follow in the transaction then see every committed run of that user.
    """
    if s.get_bind().dialect.name == "sqlite":
        s.execute(update(User).where(User.id == uid).values(name=User.name))
    else:
        s.execute(select(User.id).where(User.id == uid).with_for_update())


def check_run_quota(s: Session, settings: Settings, uid: str) -> None:
    """429 when ``uid`` already has ``max_active_runs_per_user`` queued or running runs.

    Locks the user (:func:`lock_user`), with or without a limit: insert the run in the same
    transaction. A delete of the user's dataset or model takes the same lock, so it either
    waits for the run (and refuses, 409) or comes first (and the submit sees it)."""
    lock_user(s, uid)
    limit = settings.max_active_runs_per_user
    if limit <= 0:
        return
    active = (
        s.scalar(
            select(func.count()).select_from(Run).where(Run.owner_id == uid, Run.state.in_(ACTIVE))
        )
        or 0
    )
    if active >= limit:
        raise TooManyRequestsError(
            f"you have {active} runs queued or running (limit {limit} per user)",
            "wait until some finish (GET /runs?state=running), cancel one "
            "(POST /runs/{run_id}/cancel), or ask for a higher CELLFOUNDRY_MAX_ACTIVE_RUNS_PER_USER",
            code="run_quota_exceeded",
        )


def stored_bytes(s: Session, uid: str) -> int:
    """The bytes of the datasets ``uid`` has stored."""
    return int(
        s.scalar(
            select(func.coalesce(func.sum(Dataset.size_bytes), 0)).where(Dataset.owner_id == uid)
        )
        or 0
    )


def check_upload_quota(s: Session, settings: Settings, uid: str, incoming: int) -> None:
    """413 when ``incoming`` more bytes would take ``uid`` past ``upload_quota_mb`` (atomic
    when the transaction holds :func:`lock_user` and records the dataset)."""
    quota = settings.upload_quota_bytes
    if quota <= 0:
        return
    used = stored_bytes(s, uid)
    if used + incoming > quota:
        raise TooLargeError(
            f"this upload ({incoming:,} bytes) would take your stored data to "
            f"{used + incoming:,} bytes, over your quota of {quota:,} bytes",
            "delete datasets you no longer need (DELETE /datasets/{dataset_id}) or ask for a "
            "larger CELLFOUNDRY_UPLOAD_QUOTA_MB",
            code="upload_quota_exceeded",
        )
