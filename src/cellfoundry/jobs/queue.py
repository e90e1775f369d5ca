"""The queue interface: the database row is the job; a backend only says "work is waiting".

``local``: worker processes started by ``cellfoundry serve`` poll the database for queued runs.
``celery``: a message per run (and per shard) on a Redis broker, consumed by ``cellfoundry worker``.
"""

from __future__ import annotations

from typing import Protocol

from cellfoundry.errors import CellfoundryError
from cellfoundry.service.settings import Settings


class QueueUnavailable(CellfoundryError):
    """The broker cannot be reached; nothing was queued."""

    code = "queue_unavailable"


class Queue(Protocol):
    backend: str

    def dispatch_run(self, run_id: str) -> None: ...

    def dispatch_shards(self, run_id: str, idxs: list[int]) -> None: ...

    def check(self) -> tuple[bool, str]: ...


class LocalQueue:
    """Local workers claim queued rows from the database; dispatching is a no-op."""

    backend = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def dispatch_run(self, run_id: str) -> None:
        return None

    def dispatch_shards(self, run_id: str, idxs: list[int]) -> None:
        return None

    def check(self) -> tuple[bool, str]:
        return True, "local workers poll the database"


class CeleryQueue:
    """Messages on the Redis broker; tasks are idempotent by run id."""

    backend = "celery"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def check(self) -> tuple[bool, str]:
        import redis

        try:
            client = redis.Redis.from_url(
                self.settings.broker_url,
                socket_timeout=self.settings.broker_timeout_s,
                socket_connect_timeout=self.settings.broker_timeout_s,
            )
            client.ping()
            client.close()
        except Exception as exc:
            return False, f"broker {self._safe_url()} unreachable: {type(exc).__name__}: {exc}"
        return True, f"broker {self._safe_url()} reachable"

    def _safe_url(self) -> str:
        url = self.settings.broker_url
        if "@" in url:
            scheme, rest = url.split("://", 1)
            url = f"{scheme}://***@{rest.split('@', 1)[1]}"
        return url

    def _send(self, name: str, args: list[object]) -> None:
        from cellfoundry.jobs.celery_app import get_app

        ok, detail = self.check()
        if not ok:
            raise QueueUnavailable(
                f"the job queue is unavailable: {detail}",
                "start Redis (or fix CELLFOUNDRY_BROKER_URL) and submit again",
            )
        try:
            get_app(self.settings).send_task(
                name, args=args, queue=self.settings.queue_name, retry=False
            )
        except Exception as exc:
            raise QueueUnavailable(
                f"the job queue refused the message: {type(exc).__name__}: {exc}",
                "check the broker and submit again",
            ) from exc

    def dispatch_run(self, run_id: str) -> None:
        self._send("cellfoundry.run", [run_id])

    def dispatch_shards(self, run_id: str, idxs: list[int]) -> None:
        from celery import group

        from cellfoundry.jobs.celery_app import get_app

        app = get_app(self.settings)
        sig = app.signature("cellfoundry.shard")
        group(sig.clone(args=(run_id, i)) for i in idxs).apply_async(
            queue=self.settings.queue_name, retry=False
        )


def get_queue(settings: Settings) -> Queue:
    """The queue of the configured backend."""
    return CeleryQueue(settings) if settings.queue_backend == "celery" else LocalQueue(settings)
