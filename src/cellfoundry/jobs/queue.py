"""The queue interface: the database row is the job; a backend only says "work is waiting".

``local``: worker processes started by ``cellfoundry serve`` poll the database for queued runs.
``celery``: a message per run (and per shard) on a Redis broker, consumed by ``cellfoundry worker``.
Messages are sent by task name (``send_task``), so sending never imports the worker's task code.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from cellfoundry.config import Settings
from cellfoundry.errors import UnavailableError

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger("cellfoundry.jobs")
RUN_TASK = "cellfoundry.run"
SHARD_TASK = "cellfoundry.shard"
MERGE_TASK = "cellfoundry.merge"


class QueueUnavailable(UnavailableError):
    """The broker cannot be reached; nothing was queued."""

    code = "queue_unavailable"


class Queue(Protocol):
    backend: str

    def dispatch_run(self, run_id: str) -> None: ...

    def dispatch_shards(self, run_id: str, idxs: list[int]) -> None: ...

    def dispatch_merge(self, run_id: str) -> None: ...

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

    def dispatch_merge(self, run_id: str) -> None:
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
            log.warning("broker %s unreachable: %s: %s", self._safe_url(), type(exc).__name__, exc)
            return False, f"broker {self._safe_url()} unreachable"
        return True, f"broker {self._safe_url()} reachable"

    def _safe_url(self) -> str:
        url = self.settings.broker_url
        if "@" in url:
            scheme, rest = url.split("://", 1)
            url = f"{scheme}://***@{rest.split('@', 1)[1]}"
        return url

    def _send(self, name: str, args: list[object]) -> None:
        ok, detail = self.check()
        if not ok:
            raise QueueUnavailable(
                f"the job queue is unavailable: {detail}",
                "start Redis (or fix CELLFOUNDRY_BROKER_URL) and submit again",
            )
        try:
            producer(self.settings).send_task(
                name, args=args, queue=self.settings.queue_name, retry=False
            )
        except Exception as exc:
            log.warning("broker %s refused %s%s: %s", self._safe_url(), name, args, exc)
            raise QueueUnavailable(
                "the job queue refused the message", "check the broker and submit again"
            ) from exc

    def dispatch_run(self, run_id: str) -> None:
        self._send(RUN_TASK, [run_id])

    def dispatch_shards(self, run_id: str, idxs: list[int]) -> None:
        app = producer(self.settings)
        try:
            for i in idxs:
                app.send_task(
                    SHARD_TASK, args=[run_id, i], queue=self.settings.queue_name, retry=False
                )
        except Exception as exc:
            raise QueueUnavailable(
                f"the job queue refused the message: {type(exc).__name__}: {exc}",
                "check the broker; queued shards are re-sent by the reaper",
            ) from exc

    def dispatch_merge(self, run_id: str) -> None:
        self._send(MERGE_TASK, [run_id])


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration shared by the senders and the workers (``jobs.celery_app``)."""
    return {
        "broker_url": settings.broker_url,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,
        "task_default_queue": settings.queue_name,
        "broker_connection_timeout": settings.broker_timeout_s,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": settings.celery_visibility_timeout_s,
            "socket_timeout": settings.broker_timeout_s,
            "socket_connect_timeout": settings.broker_timeout_s,
        },
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }


_PRODUCERS: dict[tuple[str, str], Celery] = {}


def producer(settings: Settings) -> Celery:
    """A Celery app without tasks that sends messages by task name (one per broker and queue)."""
    from celery import Celery

    key = (settings.broker_url, settings.queue_name)
    if key not in _PRODUCERS:
        app = Celery("cellfoundry-producer", set_as_current=False)
        app.conf.update(celery_config(settings))
        _PRODUCERS[key] = app
    return _PRODUCERS[key]


def get_queue(settings: Settings) -> Queue:
    """The queue of the configured backend."""
    return CeleryQueue(settings) if settings.queue_backend == "celery" else LocalQueue(settings)
