"""A thread that refreshes the heartbeat of a run (and of one shard) while work is in progress."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from sqlalchemy import update

from cellfoundry.store.tables import Run, RunShard, RunState, utcnow

if TYPE_CHECKING:
    from cellfoundry.jobs.engine import Engine

log = logging.getLogger("cellfoundry.jobs")


class Beat:
    """Beats every ``settings.heartbeat_s`` until ``stop()``; use as a context manager."""

    def __init__(self, engine: Engine, run_id: str, shard: int | None) -> None:
        self.engine, self.run_id, self.shard = engine, run_id, shard
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"cf-beat-{run_id}")

    def __enter__(self) -> Beat:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.engine.settings.heartbeat_s):
            try:
                self.beat()
            except Exception:
                log.exception("heartbeat failed")

    def beat(self) -> None:
        with self.engine.db.session() as s:
            now = utcnow()
            if self.shard is None:
                s.execute(
                    update(Run)
                    .where(
                        Run.id == self.run_id,
                        Run.state == RunState.RUNNING,
                        Run.worker == self.engine.name,
                    )
                    .values(heartbeat_at=now)
                    .execution_options(synchronize_session=False)
                )
                return
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
                .where(Run.id == self.run_id, Run.state == RunState.RUNNING)
                .values(heartbeat_at=now)
                .execution_options(synchronize_session=False)
            )
