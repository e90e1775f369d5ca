"""The fault matrix on PostgreSQL + Celery/Redis, shared by its test and `benchmarks/fault_matrix.py`.

Every fault runs against this harness's OWN PostgreSQL cluster (``initdb`` + ``pg_ctl`` on a free
port, in a temp folder) and its OWN ``redis-server`` (no persistence, like CI's), so restarting
them harms nobody else on the machine. The platform is `cellfoundry serve` plus Celery worker
subprocesses (the real CLI), with short heartbeats so recovery takes seconds.

Faults:
- ``kill -9 worker``: a worker is killed while it annotates a shard (repeated ``kills`` times,
  each time on a freshly submitted run), and a replacement worker is started;
- ``restart Redis``: the broker is killed and started again mid-run; every message it held is lost;
- ``restart PostgreSQL``: the database is restarted (``pg_ctl restart -m fast``) mid-run;
- ``kill API after commit``: an API replica exits right after the submit commit, before the
  dispatch (the ``CELLFOUNDRY_FAULT_EXIT_AFTER_SUBMIT_COMMIT`` hook).

For every run: it must end ``succeeded`` (else it is counted stuck or failed), its predictions must
equal those of an uninterrupted run of the same input, and it must not be duplicated (one run row
per submit, one result row, one prediction row per cell, no leftover shard files).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import sqlalchemy as sa

from tests.service.conftest import Server, Workers, base_env, free_port, wait_for

MODEL = "demo-logreg-pbmc68k"
DATA = "pbmc3k_labeled_counts.h5ad"
FAULT_ENV = {
    "CELLFOUNDRY_SHARD_SIZE": "300",
    "CELLFOUNDRY_STALE_AFTER_S": "4",
    "CELLFOUNDRY_REDISPATCH_AFTER_S": "3",
    "CELLFOUNDRY_REAPER_LEASE_S": "3",
    "CELLFOUNDRY_MAX_ATTEMPTS": "20",  # the matrix kills on purpose; no run may give up
    "CELLFOUNDRY_DB_RETRY_S": "60",
    "CELLFOUNDRY_BROKER_TIMEOUT_S": "1",
}


def pg_tool(name: str) -> str:
    """``initdb`` / ``pg_ctl`` from PATH, else from Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).is_file():
            return str(d / name)
    raise FileNotFoundError(f"{name} not found (install postgresql)")


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user then."""
    cmd = [pg_tool(cmd[0]), *cmd[1:]]
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


class OwnPostgres:
    """A throwaway PostgreSQL cluster on a free port (trust auth, fsync off)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cf-faults-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")

    def _ctl(self, *args: str) -> None:
        # the server's output goes to its log file, never to a pipe we would wait on
        log = ["-l", str(self.dir / "pg.log")]
        subprocess.run(
            _as_postgres(["pg_ctl", "-D", str(self.data), "-w", "-t", "60", *log, *args]),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=90,
        )

    def start(self) -> OwnPostgres:
        if not self.data.exists():
            subprocess.run(
                _as_postgres(["initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust"]),
                check=True,
                capture_output=True,
                timeout=120,
            )
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._ctl("-o", opts, "start")
        return self

    def restart(self) -> None:
        self._ctl("-m", "fast", "restart")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._ctl("-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class OwnRedis:
    """A throwaway redis-server on a free port, without persistence (like CI's)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cf-faults-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OwnRedis:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        import redis

        def up() -> bool:
            try:
                return bool(redis.Redis.from_url(self.url, socket_connect_timeout=0.5).ping())
            except redis.RedisError:
                return False

        wait_for(up, 30, "the fault-matrix Redis")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart(self, down_s: float = 1.0) -> None:
        self.kill()
        time.sleep(down_s)
        self.start()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Row:
    """One line of the matrix."""

    fault: str
    runs: int = 0
    succeeded: int = 0
    identical: int = 0
    stuck: int = 0
    duplicated: int = 0
    recovery_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.runs > 0
            and self.succeeded == self.identical == self.runs
            and self.stuck == self.duplicated == 0
        )


class Matrix:
    """Own PostgreSQL + own Redis + `cellfoundry serve` + Celery workers, and the faults."""

    def __init__(self, root: Path, shared_dir: Path, model_dir: Path, n_workers: int = 3) -> None:
        self.root, self.shared_dir, self.model_dir = root, shared_dir, model_dir
        self.n_workers = n_workers
        self.pg = OwnPostgres()
        self.redis = OwnRedis()
        self.env: dict[str, str] = {}
        self.server: Server | None = None
        self.workers: Workers | None = None
        self.dataset_id = ""
        self.reference: pd.DataFrame | None = None
        self.db: sa.Engine | None = None
        self.submitted: set[str] = set()

    # --- set-up -------------------------------------------------------------------------------

    def start(self) -> Matrix:
        self.pg.start()
        self.redis.start()
        self.env = base_env(
            self.root,
            CELLFOUNDRY_DATABASE_URL=self.pg.url,
            CELLFOUNDRY_QUEUE_BACKEND="celery",
            CELLFOUNDRY_BROKER_URL=self.redis.url,
            CELLFOUNDRY_QUEUE_NAME="cf-faults",
            **FAULT_ENV,
        )
        self.server = Server(self.root, self.env, ["--model", str(self.model_dir)]).start()
        if not self.server.key:
            self.server.key = self.server.new_key("faults")
        self.workers = Workers(self.env, self.root)
        self.workers.start(self.n_workers)
        self.wait_workers(self.n_workers)
        self.db = sa.create_engine(self.pg.url, pool_pre_ping=True)
        c = self.client()
        with open(self.shared_dir / "data" / DATA, "rb") as fh:
            r = c.post("/upload", files={"file": (DATA, fh)})
        assert r.status_code == 200, r.text
        self.dataset_id = r.json()["id"]
        rid = self.submit()
        st = self.wait_final([rid], 300)[rid]
        assert st == "succeeded", (st, self.logs())
        self.reference = self.predictions(rid)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.workers is not None:
            self.workers.stop()
        if self.db is not None:
            self.db.dispose()
        self.redis.stop()
        self.pg.stop()

    def client(self) -> httpx.Client:
        assert self.server is not None
        return self.server.client()

    def alive_workers(self) -> list[subprocess.Popen[bytes]]:
        assert self.workers is not None
        return [p for p in self.workers.procs if p.poll() is None]

    def wait_workers(self, n: int) -> None:
        def count() -> bool:
            return sum(1 for w in self.client().get("/health").json()["workers"]) >= n

        wait_for(count, 120, f"{n} workers")

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.root.glob("*.log"))
        )

    # --- runs ---------------------------------------------------------------------------------

    def submit(self, server: Server | None = None) -> str:
        c = (server or self.server).client()  # type: ignore[union-attr]
        body = {"dataset_id": self.dataset_id, "model_id": MODEL, "params": {"layout": "none"}}
        r = c.post("/submit", json=body)
        assert r.status_code == 201, r.text
        rid = str(r.json()["run_id"])
        self.submitted.add(rid)
        return rid

    def states(self, ids: list[str]) -> dict[str, str]:
        assert self.db is not None
        with self.db.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT id, state FROM runs WHERE id = ANY(:ids)"), {"ids": ids}
            ).all()
        return {str(r[0]): str(r[1]) for r in rows}

    def wait_final(self, ids: list[str], timeout: float) -> dict[str, str]:
        """The state of each run once all are final, or as they are at ``timeout``."""
        deadline = time.monotonic() + timeout
        last: dict[str, str] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(sa.exc.OperationalError):
                last = self.states(ids)
                if len(last) == len(ids) and all(
                    s in ("succeeded", "failed", "cancelled") for s in last.values()
                ):
                    return last
            time.sleep(0.3)
        return last

    def running_shard(self, ids: list[str]) -> tuple[str, int, int] | None:
        """(run id, shard, worker pid) of a shard being annotated by a live worker, if any."""
        assert self.db is not None
        alive = {p.pid for p in self.alive_workers()}
        with self.db.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT run_id, idx, worker FROM run_shards WHERE run_id = ANY(:ids) "
                    "AND state = 'running' AND worker IS NOT NULL"
                ),
                {"ids": ids},
            ).all()
        for rid, idx, worker in rows:
            pid = int(str(worker).rsplit(":", 1)[1])
            if pid in alive:
                return str(rid), int(idx), pid
        return None

    def predictions(self, rid: str) -> pd.DataFrame:
        r = self.client().get(f"/download/{rid}", params={"format": "parquet"})
        assert r.status_code == 200, r.text
        return pd.read_parquet(io.BytesIO(r.content))

    def judge(self, fault: str, ids: list[str], t_fault: float, timeout: float = 240) -> Row:
        """Wait for ``ids`` and fill a row: succeeded, identical, stuck, duplicated, recovery."""
        row = Row(fault=fault, runs=len(ids))
        final = self.wait_final(ids, timeout)
        row.recovery_s = round(time.monotonic() - t_fault, 1)
        assert self.db is not None and self.reference is not None
        for rid in ids:
            state = final.get(rid, "missing")
            if state not in ("succeeded", "failed", "cancelled"):
                row.stuck += 1
                row.problems.append(f"{rid} stuck in {state}")
                continue
            if state != "succeeded":
                row.problems.append(f"{rid} ended {state}")
                continue
            row.succeeded += 1
            got = self.predictions(rid)
            if got.equals(self.reference):
                row.identical += 1
            else:
                row.problems.append(f"{rid} predictions differ from the uninterrupted run")
            with self.db.connect() as conn:
                n_results = conn.execute(
                    sa.text("SELECT count(*) FROM results WHERE run_id = :r"), {"r": rid}
                ).scalar()
            shard_dir = self.root / "storage" / "runs" / rid / "shards"
            dup = (
                n_results != 1
                or len(got) != len(self.reference)
                or got["cell"].duplicated().any()
                or shard_dir.exists()
            )
            if dup:
                row.duplicated += 1
                row.problems.append(
                    f"{rid}: {n_results} results, {len(got)} rows, shard files left: "
                    f"{shard_dir.exists()}"
                )
        with self.db.connect() as conn:
            n_runs = conn.execute(sa.text("SELECT count(*) FROM runs")).scalar() or 0
        if n_runs != len(self.submitted):
            row.duplicated += 1
            row.problems.append(f"{n_runs} run rows for {len(self.submitted)} submits")
        return row

    # --- faults -------------------------------------------------------------------------------

    def kill_workers(self, kills: int) -> Row:
        """Kill -9 a worker in the middle of a shard, ``kills`` times (a fresh run each time)."""
        assert self.workers is not None
        ids: list[str] = []
        t_last = time.monotonic()
        for _ in range(kills):
            ids.append(self.submit())
            _, _, pid = wait_for(
                lambda: self.running_shard(ids[-1:]), 120, "a shard in progress", interval=0.05
            )
            os.kill(pid, signal.SIGKILL)
            t_last = time.monotonic()
            self.workers.start(1)  # the replacement (a supervisor's job in production)
        return self.judge(f"kill -9 worker (x{kills})", ids, t_last)

    def restart_redis(self) -> Row:
        ids = [self.submit() for _ in range(2)]
        wait_for(lambda: self.running_shard(ids), 120, "a shard in progress", interval=0.05)
        t = time.monotonic()
        self.redis.restart()
        return self.judge("restart Redis", ids, t)

    def restart_postgres(self) -> Row:
        ids = [self.submit() for _ in range(2)]
        wait_for(lambda: self.running_shard(ids), 120, "a shard in progress", interval=0.05)
        t = time.monotonic()
        self.pg.restart()
        return self.judge("restart PostgreSQL", ids, t)

    def kill_api_after_commit(self) -> Row:
        """A second API replica exits right after committing a submit, before dispatching it."""
        env = {**self.env, "CELLFOUNDRY_FAULT_EXIT_AFTER_SUBMIT_COMMIT": "1"}
        replica = Server(self.root, env, ["--model", str(self.model_dir)]).start()
        replica.key = self.server.key  # type: ignore[union-attr]
        assert self.db is not None
        with self.db.connect() as conn:
            before = {str(r[0]) for r in conn.execute(sa.text("SELECT id FROM runs")).all()}
        body = {"dataset_id": self.dataset_id, "model_id": MODEL, "params": {"layout": "none"}}
        with contextlib.suppress(httpx.HTTPError):
            replica.client().post("/submit", json=body)
        t = time.monotonic()
        assert replica.proc is not None
        replica.proc.wait(30)  # it exited on its own, after the commit
        with self.db.connect() as conn:
            after = {str(r[0]) for r in conn.execute(sa.text("SELECT id FROM runs")).all()}
        new = sorted(after - before)
        self.submitted.update(new)
        row = self.judge("kill API after commit", new, t)
        if len(new) != 1:
            row.problems.append(f"{len(new)} runs committed by the killed replica (expected 1)")
            row.duplicated += max(0, len(new) - 1)
            row.runs = max(row.runs, 1)
        return row


@contextlib.contextmanager
def matrix(root: Path, shared_dir: Path, model_dir: Path) -> Iterator[Matrix]:
    m = Matrix(root, shared_dir, model_dir)
    try:
        m.start()
        yield m
    finally:
        m.stop()


def run_all(m: Matrix, kills: int = 10) -> list[Row]:
    """Every fault of the matrix, in order."""
    rows = [m.kill_workers(kills)]
    m.wait_workers(1)
    rows.append(m.restart_redis())
    rows.append(m.restart_postgres())
    rows.append(m.kill_api_after_commit())
    return rows


def table(rows: list[Row]) -> str:
    head = ["fault", "runs", "succeeded", "identical", "stuck", "duplicated", "recovery s"]
    lines = [
        [r.fault, r.runs, r.succeeded, r.identical, r.stuck, r.duplicated, f"{r.recovery_s:.1f}"]
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=False)]
    fmt = " | ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*head), "-+-".join("-" * w for w in widths)]
    out += [fmt.format(*(str(x) for x in line)) for line in lines]
    return "\n".join(out)


def describe(rows: list[Row]) -> dict[str, Any]:
    return {r.fault: r.problems for r in rows if r.problems}
