"""The run state machine: which state may follow which, and the guarded writes that move a run.

Every write here is a compare-and-set: ``UPDATE runs ... WHERE id = :id AND state IN (:from)``;
it returns whether this caller made the change, so two workers (or a worker, the reaper and a
cancel) can never both win. ``RunState`` lives with the table (``store.tables``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from cellfoundry.store.tables import FINAL_STATES, Run, RunShard, RunState, utcnow

Q, R, S, F, C = (
    RunState.QUEUED,
    RunState.RUNNING,
    RunState.SUCCEEDED,
    RunState.FAILED,
    RunState.CANCELLED,
)

#: state -> the states it may move to (running -> running: a stale run taken over by a worker,
#: or its merge claimed; queued -> queued: its message re-sent)
TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    Q: frozenset({Q, R, F, C}),
    R: frozenset({R, Q, S, F, C}),
    S: frozenset(),
    F: frozenset(),
    C: frozenset(),
}
ACTIVE_STATES = frozenset({Q, R})
#: shard state -> the states it may move to (a shard is never failed or cancelled on its own)
SHARD_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    Q: frozenset({Q, R}),
    R: frozenset({R, Q, S}),
    S: frozenset(),
}
__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "SHARD_TRANSITIONS",
    "TRANSITIONS",
    "RunState",
    "sources",
    "transition",
    "transition_shard",
]


def sources(to: RunState) -> tuple[RunState, ...]:
    """The states a run may move to ``to`` from."""
    return tuple(s for s, nxt in TRANSITIONS.items() if to in nxt)


def transition(
    s: Session,
    run_id: str,
    to: RunState,
    *,
    frm: Iterable[RunState] | None = None,
    where: Iterable[ColumnElement[bool]] = (),
    **values: Any,
) -> bool:
    """Move ``run_id`` to ``to`` when it is in one of ``frm`` (default: every allowed source)
    and ``where`` holds, setting ``values``; True when this call made the change."""
    allowed = tuple(frm) if frm is not None else sources(to)
    bad = [f for f in allowed if to not in TRANSITIONS[f]]
    if bad:
        raise ValueError(f"no transition {bad} -> {to}")
    res = s.execute(
        update(Run)
        .where(Run.id == run_id, Run.state.in_(allowed), *where)
        .values(state=to, **values)
        .execution_options(synchronize_session=False)
    )
    return res.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def transition_shard(
    s: Session,
    run_id: str,
    idx: int,
    to: RunState,
    *,
    frm: Iterable[RunState],
    where: Iterable[ColumnElement[bool]] = (),
    **values: Any,
) -> bool:
    """Move shard ``idx`` of ``run_id`` to ``to`` when it is in one of ``frm`` and ``where`` holds;
    True when this call made the change."""
    allowed = tuple(frm)
    bad = [f for f in allowed if to not in SHARD_TRANSITIONS[f]]
    if bad:
        raise ValueError(f"no shard transition {bad} -> {to}")
    res = s.execute(
        update(RunShard)
        .where(RunShard.run_id == run_id, RunShard.idx == idx, RunShard.state.in_(allowed), *where)
        .values(state=to, **values)
        .execution_options(synchronize_session=False)
    )
    return res.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def claim_run(s: Session, run_id: str, worker: str, stale_before: dt.datetime) -> bool:
    """Take ``run_id`` for ``worker`` if it is queued (or running with a dead worker)."""
    now = utcnow()
    return transition(
        s,
        run_id,
        R,
        frm=(Q, R),
        where=[or_(Run.state == Q, and_(Run.state == R, Run.heartbeat_at < stale_before))],
        worker=worker,
        heartbeat_at=now,
        attempts=Run.attempts + 1,
        started_at=func.coalesce(Run.started_at, now),
        stage="starting",
        merge_claimed=False,
    )


def claim_shard(s: Session, run_id: str, idx: int, worker: str, stale_before: dt.datetime) -> bool:
    """Take shard ``idx`` of a running run if it is queued (or running with a dead worker)."""
    if s.scalar(select(Run.state).where(Run.id == run_id)) != R:
        return False
    return transition_shard(
        s,
        run_id,
        idx,
        R,
        frm=(Q, R),
        where=[
            or_(
                RunShard.state == Q,
                and_(RunShard.state == R, RunShard.heartbeat_at < stale_before),
            )
        ],
        worker=worker,
        heartbeat_at=utcnow(),
        attempts=RunShard.attempts + 1,
    )


def finish_shard(s: Session, run_id: str, idx: int, worker: str) -> bool:
    """Mark shard ``idx`` succeeded when it is still running under ``worker``."""
    return transition_shard(
        s, run_id, idx, S, frm=(R,), where=[RunShard.worker == worker], heartbeat_at=utcnow()
    )


def requeue_shard(s: Session, run_id: str, idx: int, stale_before: dt.datetime) -> bool:
    """Put a running shard whose worker stopped beating back in the queue."""
    return transition_shard(
        s,
        run_id,
        idx,
        Q,
        frm=(R,),
        where=[RunShard.heartbeat_at < stale_before],
        worker=None,
        heartbeat_at=utcnow(),  # queued shards: when they were (re-)dispatched
    )


def finish_run(s: Session, run_id: str, worker: str | None) -> bool:
    """Mark a running run succeeded (only ours when ``worker`` is set)."""
    return transition(
        s,
        run_id,
        S,
        frm=(R,),
        where=[Run.worker == worker] if worker else [],
        stage="done",
        progress=100.0,
        finished_at=utcnow(),
    )


def cancel_run(s: Session, run_id: str) -> bool:
    """Cancel a queued or running run; False when it had already ended."""
    return transition(s, run_id, C, frm=(Q, R), stage="cancelled", finished_at=utcnow())


def requeue_run(s: Session, run_id: str, stale_before: dt.datetime) -> bool:
    """Put a running run whose worker stopped beating back in the queue."""
    return transition(
        s,
        run_id,
        Q,
        frm=(R,),
        where=[Run.heartbeat_at < stale_before],
        worker=None,
        stage="re-queued: worker lost",
        merge_claimed=False,
    )


def fail_lost_run(
    s: Session, run_id: str, stale_before: dt.datetime | None, message: str, hint: str
) -> bool:
    """Fail a running run whose worker (or a shard's worker) stopped beating too many times."""
    where = [Run.heartbeat_at < stale_before] if stale_before is not None else []
    return transition(
        s,
        run_id,
        F,
        frm=(R,),
        where=where,
        error_code="worker_lost",
        error_message=message,
        error_hint=hint,
        finished_at=utcnow(),
        stage="failed",
    )


def n_succeeded(run_id: Any) -> Any:
    """A scalar subquery: how many shards of ``run_id`` (a value or a column) have succeeded."""
    return (
        select(func.count())
        .select_from(RunShard)
        .where(RunShard.run_id == run_id, RunShard.state == S)
        .scalar_subquery()
    )


def claim_merge(s: Session, run_id: str, worker: str) -> bool:
    """Take the merge of a running run whose shards have all succeeded (one taker)."""
    return transition(
        s,
        run_id,
        R,
        frm=(R,),
        where=[Run.merge_claimed.is_(False), Run.n_shards == n_succeeded(run_id)],
        merge_claimed=True,
        worker=worker,
        stage="merging",
        heartbeat_at=utcnow(),
    )


def report_progress(
    s: Session, run_id: str, stage: str, progress: float, worker: str | None
) -> bool:
    """Record stage, progress and the heartbeat of a running run (ours when ``worker`` is set)."""
    cond = [Run.id == run_id, Run.state == R]
    if worker:
        cond.append(Run.worker == worker)
    res = s.execute(
        update(Run)
        .where(*cond)
        .values(
            stage=stage[:100], progress=float(min(max(progress, 0), 100)), heartbeat_at=utcnow()
        )
        .execution_options(synchronize_session=False)
    )
    return res.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def fail_run(
    s: Session, run_id: str, code: str, message: str, hint: str | None, worker: str | None = None
) -> bool:
    """Mark a queued or running run failed with a reason (only ours when ``worker`` is set)."""
    return transition(
        s,
        run_id,
        F,
        frm=(Q, R),
        where=[Run.worker == worker] if worker else [],
        error_code=code[:100],
        error_message=message,
        error_hint=hint,
        finished_at=utcnow(),
        stage="failed",
    )
