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

#: state -> the states it may move to (running -> running: a stale run taken over by a worker)
TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    Q: frozenset({R, F, C}),
    R: frozenset({R, Q, S, F, C}),
    S: frozenset(),
    F: frozenset(),
    C: frozenset(),
}
ACTIVE_STATES = frozenset({Q, R})
__all__ = ["ACTIVE_STATES", "FINAL_STATES", "TRANSITIONS", "RunState", "sources", "transition"]


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
    res = s.execute(
        update(RunShard)
        .where(
            RunShard.run_id == run_id,
            RunShard.idx == idx,
            or_(
                RunShard.state == Q,
                and_(RunShard.state == R, RunShard.heartbeat_at < stale_before),
            ),
        )
        .values(state=R, worker=worker, heartbeat_at=utcnow(), attempts=RunShard.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    return res.rowcount == 1  # type: ignore[attr-defined,no-any-return]


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
