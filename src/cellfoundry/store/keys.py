"""API keys: ``cf_<id>_<secret>``; only the sha256 of the whole key is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from cellfoundry.store.tables import ApiKey, User, utcnow

PREFIX = "cf_"


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_user(session: Session, name: str) -> User:
    """The user called ``name`` (created when new)."""
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        user = User(name=name)
        session.add(user)
        session.flush()
    return user


def create_key(session: Session, name: str, user_name: str | None = None) -> tuple[ApiKey, str]:
    """Create a key for user ``user_name`` (default: ``name``); returns the record and the key."""
    user = get_or_create_user(session, user_name or name)
    key_id = secrets.token_hex(6)
    key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    rec = ApiKey(id=key_id, user_id=user.id, name=name, key_hash=hash_key(key))
    session.add(rec)
    session.flush()
    return rec, key


def verify_key(session: Session, key: str) -> User | None:
    """The user owning ``key``, or None when the key is unknown, malformed or revoked."""
    if not key.startswith(PREFIX) or key.count("_") < 2:
        return None
    key_id = key[len(PREFIX) :].split("_", 1)[0]
    rec = session.get(ApiKey, key_id)
    if (
        rec is None
        or rec.revoked_at is not None
        or not hmac.compare_digest(rec.key_hash, hash_key(key))
    ):
        return None
    return session.get(User, rec.user_id)


def revoke_key(session: Session, key_id: str) -> bool:
    """Revoke a key by its id; False when there is no such key."""
    rec = session.get(ApiKey, key_id)
    if rec is None:
        return False
    rec.revoked_at = utcnow()
    return True
