"""Database leases: one holder of a named duty (the reaper) across API replicas and workers.

A lease is a row ``(name, holder, expires_at)``. Taking it is a compare-and-set:
``UPDATE leases SET holder = me, expires_at = now + ttl WHERE name = :n AND (holder = me OR
expires_at < now)``, or the first ``INSERT`` when no row exists (a unique-key race has one
winner). The holder renews it each time it works; when the holder dies, the lease expires and
another process takes it over.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cellfoundry.store.tables import Lease, utcnow


def acquire(s: Session, name: str, holder: str, ttl_s: float) -> bool:
    """Take (or renew) lease ``name`` for ``holder`` for ``ttl_s`` seconds; True when held."""
    now = utcnow()
    until = now + dt.timedelta(seconds=ttl_s)
    res = s.execute(
        update(Lease)
        .where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at < now))
        .values(holder=holder, expires_at=until)
        .execution_options(synchronize_session=False)
    )
    if res.rowcount == 1:  # type: ignore[attr-defined]
        return True
    if s.get(Lease, name) is not None:
        return False  # held by someone else, not expired
    try:
        with s.begin_nested():
            s.add(Lease(name=name, holder=holder, expires_at=until))
    except IntegrityError:
        return False  # another process inserted it first
    return True


def release(s: Session, name: str, holder: str) -> bool:
    """Give lease ``name`` up now (only when ``holder`` holds it)."""
    res = s.execute(
        update(Lease)
        .where(Lease.name == name, Lease.holder == holder)
        .values(expires_at=utcnow() - dt.timedelta(seconds=1))
        .execution_options(synchronize_session=False)
    )
    return res.rowcount == 1  # type: ignore[attr-defined,no-any-return]
