"""Per-user quotas: active runs at once and stored upload bytes (settings; 0 switches one off).

The run quota counts queued + running runs at submit time; two submits racing at the limit may
both pass (a soft limit, off by at most the number of concurrent submits of one user).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cellfoundry.config import Settings
from cellfoundry.errors import TooLargeError, TooManyRequestsError
from cellfoundry.store.tables import Dataset, Run, RunState

ACTIVE = (RunState.QUEUED, RunState.RUNNING)


def check_run_quota(s: Session, settings: Settings, uid: str) -> None:
    """429 when ``uid`` already has ``max_active_runs_per_user`` queued or running runs."""
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
    """413 when ``incoming`` more bytes would take ``uid`` past ``upload_quota_mb``."""
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
