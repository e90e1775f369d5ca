"""Run and shard state changes are compare-and-set; one reaper at a time holds a database lease.

The races run on PostgreSQL (row locks, read committed), where the old read-then-write code let
the reaper, a cancel and a finishing worker overwrite one another; SQLite serialises writers.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from cellfoundry.config import Settings
from cellfoundry.jobs import lease, states
from cellfoundry.jobs.engine import Engine
from cellfoundry.store.db import Database, migrate
from cellfoundry.store.tables import Run, RunShard, RunState
from tests.service.test_store_db import _seed

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(pg_database: Callable[[], str]) -> Database:
    url = pg_database()
    migrate(url)
    return Database(url)


def _race(db: Database, *moves: Callable[[sa.orm.Session], bool]) -> list[bool]:
    """Start every move at once, each in its own transaction; their results in order."""
    barrier = threading.Barrier(len(moves))
    out: list[bool | None] = [None] * len(moves)

    def go(i: int) -> None:
        with db.session() as s:
            barrier.wait()
            out[i] = moves[i](s)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(moves))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(o is not None for o in out)
    return [bool(o) for o in out]


def _running(db: Database, rid: str, worker: str, heartbeat_age_s: float = 0) -> None:
    with db.session() as s:
        s.execute(
            sa.update(Run)
            .where(Run.id == rid)
            .values(
                state=RunState.RUNNING,
                worker=worker,
                attempts=1,
                heartbeat_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=heartbeat_age_s),
            )
        )


@pytest.mark.parametrize("rival", ["cancel", "reaper"])
def test_finish_races_cancel_or_reaper_one_wins(pg: Database, rival: str) -> None:
    """Twenty rounds of a finishing worker against a cancel (or the reaper's re-queue) of the
    same stale running run, each in its own transaction: exactly one of the two wins."""
    ids = _seed(pg, 20)
    stale = dt.datetime.now(dt.UTC)
    rival_move = {
        "cancel": lambda s, r: states.cancel_run(s, r),
        "reaper": lambda s, r: states.requeue_run(s, r, stale),
    }[rival]
    wins = [0, 0]
    for rid in ids:
        _running(pg, rid, "w1", heartbeat_age_s=120)
        won = _race(
            pg,
            lambda s, r=rid: states.finish_run(s, r, "w1"),
            lambda s, r=rid: rival_move(s, r),
        )
        assert sum(won) == 1, won
        wins[won.index(True)] += 1
        with pg.session() as s:
            run = s.get(Run, rid)
            assert run is not None
            if won[0]:
                assert run.state == "succeeded" and run.stage == "done"
            else:
                assert run.state == ("cancelled" if rival == "cancel" else "queued")
                assert run.finished_at is None or rival == "cancel"
    assert sum(wins) == 20


def test_a_transition_waiting_on_the_row_lock_loses_to_the_one_holding_it(pg: Database) -> None:
    """Deterministic order: a cancel commits while a finish waits for the row; the finish loses."""
    (rid,) = _seed(pg, 1)
    _running(pg, rid, "w1")
    first = pg.sessions()
    assert states.cancel_run(first, rid)  # holds the row lock until commit
    result: list[bool] = []
    t = threading.Thread(
        target=lambda: result.append(_in_session(pg, lambda s: states.finish_run(s, rid, "w1")))
    )
    t.start()
    t.join(1.0)
    assert t.is_alive()  # the finish is blocked on the cancel's row lock
    first.commit()
    first.close()
    t.join(30)
    assert result == [False]
    with pg.session() as s:
        run = s.get(Run, rid)
        assert run is not None and run.state == "cancelled" and run.stage == "cancelled"


def _in_session(db: Database, fn: Callable[[sa.orm.Session], bool]) -> bool:
    with db.session() as s:
        return fn(s)


def test_shard_finish_and_reaper_requeue_race_one_wins(pg: Database) -> None:
    ids = _seed(pg, 10)
    stale = dt.datetime.now(dt.UTC)
    old = stale - dt.timedelta(seconds=120)
    for rid in ids:
        _running(pg, rid, "w1")
        with pg.session() as s:
            s.add(
                RunShard(
                    run_id=rid,
                    idx=0,
                    start=0,
                    stop=1,
                    state="running",
                    worker="w2",
                    heartbeat_at=old,
                )
            )
        won = _race(
            pg,
            lambda s, r=rid: states.finish_shard(s, r, 0, "w2"),
            lambda s, r=rid: states.requeue_shard(s, r, 0, stale),
        )
        assert sum(won) == 1, won
        with pg.session() as s:
            sh = s.get(RunShard, (rid, 0))
            assert sh is not None and sh.state == ("succeeded" if won[0] else "queued")


def test_impossible_transitions_are_refused(pg: Database) -> None:
    (rid,) = _seed(pg, 1)
    with pg.session() as s:
        with pytest.raises(ValueError):
            states.transition(s, rid, RunState.RUNNING, frm=(RunState.SUCCEEDED,))
        assert states.cancel_run(s, rid)
        assert not states.cancel_run(s, rid)  # already ended
        assert not states.claim_run(s, rid, "w", dt.datetime.now(dt.UTC))


def test_reaper_lease_has_one_holder(pg: Database) -> None:
    """Two contenders race for a lease that does not exist yet, then for an expired one."""
    for _ in range(10):
        name = f"l{_}"
        won = _race(
            pg,
            lambda s, n=name: lease.acquire(s, n, "a", 30),
            lambda s, n=name: lease.acquire(s, n, "b", 30),
        )
        assert sum(won) == 1, won
        holder = "a" if won[0] else "b"
        other = "b" if holder == "a" else "a"
        with pg.session() as s:
            assert lease.acquire(s, name, holder, 30)  # the holder renews
            assert not lease.acquire(s, name, other, 30)
            assert lease.release(s, name, holder)
        won = _race(  # expired (released): again exactly one of the two takes it
            pg,
            lambda s, n=name: lease.acquire(s, n, "a", 30),
            lambda s, n=name: lease.acquire(s, n, "b", 30),
        )
        assert sum(won) == 1, won


def test_only_the_lease_holder_reaps(pg: Database, tmp_path: Path) -> None:
    """Two engines (two replicas) reap the same stale run: one re-queues it, the other does nothing."""
    settings = Settings(home=tmp_path, database_url=pg.url, stale_after_s=5, max_attempts=3)
    (rid,) = _seed(pg, 1)
    _running(pg, rid, "dead-worker", heartbeat_age_s=60)
    a, b = Engine(settings, "api", pg), Engine(settings, "celery", pg)
    a.name, b.name = "api:a", "celery:b"
    out = _race(pg, lambda s: bool(a.reap()), lambda s: bool(b.reap()))
    assert sorted(out) == [False, True]
    holder = a if out[0] else b
    other = b if out[0] else a
    with pg.session() as s:
        run = s.get(Run, rid)
        assert run is not None and run.state == "queued" and run.worker is None
    _running(pg, rid, "dead-again", heartbeat_age_s=60)
    assert other.reap() == []  # the lease is still held by the first
    assert holder.reap() == [rid]


def test_queued_work_is_resent_once_per_period(pg: Database, tmp_path: Path) -> None:
    """A run whose message was lost is re-sent after ``redispatch_after_s``, once per period."""
    settings = Settings(home=tmp_path, database_url=pg.url, redispatch_after_s=2)
    (rid,) = _seed(pg, 1)
    e = Engine(settings, "local", pg)
    assert e.reap() == []  # just queued: its message is presumably on its way
    with pg.session() as s:
        s.execute(
            sa.update(Run)
            .where(Run.id == rid)
            .values(updated_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=10))
        )
    assert e.reap() == [f"{rid} (re-sent)"]
    assert e.reap() == []  # stamped: not again until the period has passed
    with pg.session() as s:
        run = s.get(Run, rid)
        assert run is not None and run.state == "queued"


def test_a_stopping_reaper_hands_the_lease_over(pg: Database, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url=pg.url, reaper_s=3600)
    a, b = Engine(settings, "api", pg), Engine(settings, "api", pg)
    a.name, b.name = "api:a", "api:b"
    a.start_reaper()
    with pg.session() as s:
        assert lease.acquire(s, "reaper", a.name, 30)
        assert not lease.acquire(s, "reaper", b.name, 30)
    a.stop()
    with pg.session() as s:
        assert lease.acquire(s, "reaper", b.name, 30)


def test_an_orphaned_merge_is_asked_for_again(pg: Database, tmp_path: Path) -> None:
    """Every shard succeeded but the worker that should merge died first: the reaper re-sends
    the merge (once per period) and a local worker picks it up."""
    settings = Settings(home=tmp_path, database_url=pg.url, redispatch_after_s=2)
    (rid,) = _seed(pg, 1)
    _running(pg, rid, "dead", heartbeat_age_s=30)
    with pg.session() as s:
        s.execute(sa.update(Run).where(Run.id == rid).values(n_shards=2, backend="local"))
        s.add_all(
            RunShard(run_id=rid, idx=i, start=i, stop=i + 1, state="succeeded") for i in (0, 1)
        )
    e = Engine(settings, "local", pg)
    assert e.next_local_work() == ("merge", rid, -1)
    assert e.reap() == [f"{rid} (merge re-sent)"]
    assert e.reap() == []  # stamped
    with pg.session() as s:
        assert states.claim_merge(s, rid, "w2")
    with pg.session() as s:
        assert not states.claim_merge(s, rid, "w3")  # one merger
        run = s.get(Run, rid)
        assert run is not None and run.merge_claimed and run.worker == "w2"
