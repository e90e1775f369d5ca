"""Real services for the service tests: PostgreSQL, Redis, `cellfoundry serve` and Celery workers.

Each test session gets its own PostgreSQL database and its own Redis queue name (dropped after);
servers run as subprocesses on free loopback ports with CELLFOUNDRY_HOME in a temp folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = os.environ.get(
    "CELLFOUNDRY_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS = os.environ.get("CELLFOUNDRY_TEST_REDIS", "redis://127.0.0.1:6379/13")
CLI = [sys.executable, "-m", "cellfoundry.cli"]
FAST = {  # short timeouts so fault recovery happens within seconds
    "CELLFOUNDRY_HEARTBEAT_S": "0.5",
    "CELLFOUNDRY_STALE_AFTER_S": "4",
    "CELLFOUNDRY_REAPER_S": "1",
    "CELLFOUNDRY_POLL_S": "0.2",
    "CELLFOUNDRY_MAX_ATTEMPTS": "3",
    "CELLFOUNDRY_UPLOAD_LIMIT_MB": "20",
    "CELLFOUNDRY_CELERY_VISIBILITY_TIMEOUT_S": "30",
    "CELLFOUNDRY_KEY_CACHE_S": "0",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_reachable() -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 5432), timeout=1):
        return True
    return False


@pytest.fixture(scope="session")
def pg_database() -> Iterator[Any]:
    """A factory of fresh PostgreSQL databases (all dropped at the end of the session)."""
    if not _pg_reachable():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432 (.ci/run starts it)")
    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def make() -> str:
        name = f"cf_test_{uuid.uuid4().hex[:10]}"
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        made.append(name)
        return PG_ADMIN.rsplit("/", 1)[0] + "/" + name

    yield make
    with admin.connect() as c:
        for name in made:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_queue() -> Iterator[Any]:
    """A factory of (broker URL, unique queue name); the queues' keys are deleted at the end."""
    import redis

    try:
        client = redis.Redis.from_url(REDIS, socket_connect_timeout=1)
        client.ping()
    except Exception:
        pytest.skip("Redis is not running on 127.0.0.1:6379 (.ci/run starts it)")
    made: list[str] = []

    def make() -> tuple[str, str]:
        made.append(f"cf-test-{uuid.uuid4().hex[:8]}")
        return REDIS, made[-1]

    yield make
    for queue in made:
        for key in client.scan_iter(f"{queue}*"):
            client.delete(key)
    client.close()


def state_with_model(settings: Any, model_dir: Path, user: str = "alice") -> str:
    """Migrate the settings' database, register the model at ``model_dir`` and return a new
    API key of ``user`` (the state a test app starts from)."""
    from cellfoundry.store.db import Database, migrate
    from cellfoundry.store.keys import create_key
    from cellfoundry.store.model_records import register_model
    from cellfoundry.store.storage import FileStorage

    migrate(settings.database_url)
    db = Database(settings.database_url)
    try:
        with db.session() as s:
            register_model(s, FileStorage(settings.storage), model_dir)
            return str(create_key(s, user)[1])
    finally:
        db.dispose()


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model trained once per session (so most servers skip the first-start training)."""
    from cellfoundry.demo import train_demo_model

    return train_demo_model(tmp_path_factory.mktemp("demo") / "model")


class Server:
    """`cellfoundry serve` as a subprocess, with its key, its URL and an HTTP client."""

    def __init__(
        self, home: Path, env: dict[str, str], extra_args: list[str] | None = None
    ) -> None:
        self.home = home
        self.env = env
        self.extra_args = extra_args or []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.key = ""
        self.log = home / f"serve-{self.port}.log"

    def start(self, timeout: float = 90) -> Server:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.home / f"serve-{self.port}.log"
        fh = open(self.log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.extra_args],
            env=self.env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"serve exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.3)
        else:
            raise RuntimeError(
                f"serve did not answer in {timeout} s:\n{self.log.read_text()[-3000:]}"
            )
        key_file = self.home / "local-api-key"
        if key_file.is_file():
            self.key = key_file.read_text().strip()
        return self

    def kill(self, sig: int = signal.SIGKILL, group: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            if group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def new_key(self, name: str) -> str:
        out = subprocess.run(
            [*CLI, "keys", "create", name],
            env=self.env,
            capture_output=True,
            check=True,
            timeout=120,
        )
        return out.stdout.decode().strip()

    def client(self, key: str | None = None) -> httpx.Client:
        k = self.key if key is None else key
        headers = {"Authorization": f"Bearer {k}"} if k else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


class Workers:
    """Celery worker subprocesses (`cellfoundry worker`)."""

    def __init__(self, env: dict[str, str], home: Path) -> None:
        self.env, self.home = env, home
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, n: int = 1) -> list[subprocess.Popen[bytes]]:
        new = []
        for _ in range(n):
            log = open(self.home / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
            p = subprocess.Popen(
                [*CLI, "worker", "--pool", "solo", "--loglevel", "WARNING"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.procs.append(p)
            new.append(p)
        return new

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


class Stack:
    """One platform configuration: a server (and Celery workers) sharing one database."""

    def __init__(self, kind: str, home: Path, env: dict[str, str], extra_args: list[str]) -> None:
        self.kind, self.home, self.env = kind, home, env
        self.server = Server(home, env, extra_args)
        self.workers = Workers(env, home) if kind == "postgres-celery" else None

    def start(self) -> Stack:
        self.server.start()
        if not self.server.key:
            self.server.key = self.server.new_key("tester")
        if self.workers is not None:
            self.workers.start(1)
        wait_for(
            lambda: len(self.server.client().get("/health").json()["workers"]) >= 1, 90, "a worker"
        )
        return self

    def stop(self) -> None:
        self.server.stop()
        if self.workers is not None:
            self.workers.stop()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(self.home.glob("*.log"))
        )


def base_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLFOUNDRY_")}
    env.update(FAST)
    env["CELLFOUNDRY_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def make_stack(
    kind: str, home: Path, request: pytest.FixtureRequest, demo_model_dir: Path | None, **extra: str
) -> Stack:
    """A stack of ``kind`` ("sqlite-local" or "postgres-celery") with its own state folder."""
    args: list[str] = []
    if kind == "postgres-celery":
        pg = request.getfixturevalue("pg_database")()
        broker, queue = request.getfixturevalue("redis_queue")()
        env = base_env(
            home,
            CELLFOUNDRY_DATABASE_URL=pg,
            CELLFOUNDRY_QUEUE_BACKEND="celery",
            CELLFOUNDRY_BROKER_URL=broker,
            CELLFOUNDRY_QUEUE_NAME=queue,
            **extra,
        )
    else:
        env = base_env(home, CELLFOUNDRY_QUEUE_BACKEND="local", **extra)
    if demo_model_dir is not None:
        args += ["--model", str(demo_model_dir)]
    return Stack(kind, home, env, args)


def wait_for(cond: Any, timeout: float, what: str, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, KeyError):
            last = cond()
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def wait_run(client: httpx.Client, run_id: str, timeout: float = 120) -> dict[str, Any]:
    """Poll /status until the run is final; fails (never hangs) after ``timeout``."""

    def final() -> dict[str, Any] | None:
        st = client.get(f"/status/{run_id}").json()
        return st if st["state"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(final, timeout, f"run {run_id} to finish")  # type: ignore[no-any-return]


@pytest.fixture(scope="session", params=["sqlite-local", "postgres-celery"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[Stack]:
    """The suite runs once per stack: SQLite + local workers, PostgreSQL + Celery/Redis workers.

    Two workers and small shards (300 cells), so a real-data run is spread over both workers.
    The SQLite stack trains the demo model at first start itself (the embedded default's contract).
    """
    home = tmp_path_factory.mktemp(request.param)
    st = make_stack(
        request.param,
        home,
        request,
        None if request.param == "sqlite-local" else demo_model_dir,
        CELLFOUNDRY_SHARD_SIZE="300",
        CELLFOUNDRY_LOCAL_WORKERS="2",
    )
    try:
        st.start()
        if st.workers is not None:
            st.workers.start(1)
        wait_for(
            lambda: len(st.server.client().get("/health").json()["workers"]) >= 2, 90, "two workers"
        )
    except Exception:
        st.stop()
        shutil.rmtree(home, ignore_errors=True)
        raise
    yield st
    st.stop()
