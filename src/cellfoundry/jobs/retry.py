"""Database hiccups in workers: which errors are transient, and retrying a write through them.

A PostgreSQL restart (or a dropped connection) must not fail a run whose work is fine: the
worker retries its database writes for ``settings.db_retry_s``; the pool's pre-ping replaces
the dead connections. Every write retried here is a compare-and-set, so a retry that follows
a commit whose answer was lost cannot apply twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

log = logging.getLogger("cellfoundry.jobs")
T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """True for a lost or refused database connection (worth retrying), not for a bad statement."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def retry_db(fn: Callable[[], T], what: str, timeout_s: float) -> T:
    """``fn()``, retried with backoff while it fails on a transient database error."""
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("%s: database unavailable (%s); retrying", what, type(exc).__name__)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
