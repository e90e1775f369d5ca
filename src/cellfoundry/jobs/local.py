"""The local backend: worker processes on this machine that claim queued runs from the database."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

from cellfoundry.config import Settings
from cellfoundry.jobs.engine import Engine
from cellfoundry.jobs.shards import maybe_merge

log = logging.getLogger("cellfoundry.jobs")


def worker_loop(
    settings: Settings, parent_pid: int | None = None, max_idle_s: float | None = None
) -> None:
    """Claim and run work until stopped (or until the parent process is gone and we are idle)."""
    engine = Engine(settings, "local")
    try:
        engine.warm_up()
    except Exception:
        log.exception("warm-up failed")
    engine.start_presence()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    idle_since = time.monotonic()
    while not stop.is_set():
        if parent_pid is not None and os.getppid() != parent_pid:
            log.warning("serve process is gone; local worker exits")
            break
        try:
            work = engine.next_local_work()
        except Exception:
            log.exception("claiming work failed")
            work = None
        if work is None:
            if max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
                break
            stop.wait(settings.poll_s)
            continue
        kind, run_id, idx = work
        if kind == "shard":
            engine.execute_shard_claimed(run_id, idx)
        elif kind == "merge":
            maybe_merge(engine, run_id)
        else:
            engine.execute_claimed(run_id)
        idle_since = time.monotonic()
    engine.stop()


class LocalWorkers:
    """Starts ``n`` worker processes and restarts any that exit, until ``stop()``."""

    def __init__(self, n: int, env: dict[str, str] | None = None) -> None:
        self.n = n
        self.env = {**os.environ, **(env or {})}
        self.procs: list[subprocess.Popen[bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="cf-local-workers")

    def _spawn(self) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "cellfoundry.jobs.local", "--parent", str(os.getpid())]
        return subprocess.Popen(cmd, env=self.env)

    def start(self) -> None:
        self.procs = [self._spawn() for _ in range(self.n)]
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            for i, p in enumerate(self.procs):
                if p.poll() is not None and not self._stop.is_set():
                    log.warning(
                        "local worker %s exited with %s; starting another", p.pid, p.returncode
                    )
                    self.procs[i] = self._spawn()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> None:
    """``python -m cellfoundry.jobs.local --parent PID``: one local worker process."""
    import argparse

    from cellfoundry.config import get_settings

    ap = argparse.ArgumentParser()
    ap.add_argument("--parent", type=int, default=None)
    args = ap.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s local-worker %(message)s"
    )
    worker_loop(get_settings(), parent_pid=args.parent)


if __name__ == "__main__":
    main()
