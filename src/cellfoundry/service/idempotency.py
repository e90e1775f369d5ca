"""Idempotent submits: the ``Idempotency-Key`` request header of ``POST /submit``.

After the IETF draft "The Idempotency-Key HTTP Header Field" (and Stripe's API): a client sends
a key of its choosing (a UUID, say) with a submit and the same key with every retry of it. The
first request that creates a run stores the key and the sha256 of its body on the run; a later
request of the same owner with the same key and the same body answers that run again (its id
and state now, 201, ``Idempotent-Replayed: true``) and creates, queues and counts nothing. The
same key with another body is refused (422 ``idempotency_key_reused``). Keys are per owner
(a unique index on ``runs (owner_id, idempotency_key)``) and last as long as the run: a deleted
run frees its key. A refused submit stores nothing, so it can be retried with the same key.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Response
from pydantic import WithJsonSchema
from sqlalchemy import select
from sqlalchemy.orm import Session

from cellfoundry.errors import CellfoundryError
from cellfoundry.service.schemas import SubmitCreate, SubmitPublic
from cellfoundry.store.tables import Run

KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY = 255
KEY_PATTERN = rf"^[\x21-\x7e]{{1,{MAX_KEY}}}$"  # visible US-ASCII, no spaces
_KEY = re.compile(KEY_PATTERN)
#: ``responses=`` entry of POST /submit's 201: the header a replayed answer carries
SUBMIT_CREATED: dict[str, Any] = {
    "description": "the run was queued, or (with Idempotent-Replayed: true) had been by an "
    "earlier request with the same Idempotency-Key",
    "headers": {
        REPLAYED_HEADER: {
            "description": "'true' when the answer is the run an earlier request with the "
            "same Idempotency-Key created (nothing new was queued); absent otherwise",
            "schema": {"type": "string", "enum": ["true"]},
        }
    },
}


def idempotency_key(
    request: Request,
    key: Annotated[
        str | None,
        Header(
            alias=KEY_HEADER,
            description=(
                "optional: 1-255 visible ASCII characters (a new UUID per run, say), sent again "
                "unchanged with every retry of the same submit; a retry answers the run the "
                "first request created instead of creating another"
            ),
        ),
        # documented as constrained; checked below, so a bad key gets its own code and hint
        WithJsonSchema(
            {"type": "string", "minLength": 1, "maxLength": MAX_KEY, "pattern": KEY_PATTERN}
        ),
    ] = None,
) -> str | None:
    """The request's ``Idempotency-Key`` (None without one); 422 ``invalid_idempotency_key``
    when it is empty, longer than 255 characters, not visible ASCII, or sent twice."""
    values = request.headers.getlist(KEY_HEADER)
    if not values:
        return None
    if len(values) > 1:
        raise CellfoundryError(
            f"the request has {len(values)} {KEY_HEADER} headers",
            f"send one {KEY_HEADER} header",
            code="invalid_idempotency_key",
        )
    value = values[0]
    if not _KEY.fullmatch(value):
        if not value:
            why = "it is empty"
        elif len(value) > MAX_KEY:
            why = f"it has {len(value)} characters"
        else:  # header values arrive decoded as Latin-1: one character per byte
            at, bad = next((i, c) for i, c in enumerate(value) if not "!" <= c <= "~")
            why = f"byte {at + 1} is 0x{ord(bad):02X}"
        raise CellfoundryError(
            f"the {KEY_HEADER} header is not 1-{MAX_KEY} visible ASCII characters ({why})",
            f"send a key of 1-{MAX_KEY} characters without spaces, e.g. a new UUID per run "
            "(the same key again only to retry the same submit)",
            code="invalid_idempotency_key",
        )
    return value


IdempotencyKeyDep = Annotated[str | None, Depends(idempotency_key)]


def request_sha256(body: SubmitCreate) -> str:
    """A hash of the validated body that ignores key order and whitespace (defaults filled in:
    a body without ``application_id`` equals one that names the default)."""
    canonical = json.dumps(
        body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def keyed_run(s: Session, uid: str, key: str) -> Run | None:
    """``uid``'s run submitted with ``key``, if it still exists."""
    return s.scalar(select(Run).where(Run.owner_id == uid, Run.idempotency_key == key))


def replay(run: Run, digest: str, response: Response) -> SubmitPublic:
    """The answer to a retry of the submit that created ``run``; 422 ``idempotency_key_reused``
    when the retry's body (``digest``) differs from the first request's."""
    if run.request_sha256 != digest:
        raise CellfoundryError(
            f"{KEY_HEADER} {run.idempotency_key!r} was used for another request (run "
            f"'{run.id}', with a different body)",
            f"use a new key for a different request; send this key only to retry that submit "
            f"(see GET /status/{run.id})",
            code="idempotency_key_reused",
        )
    response.headers[REPLAYED_HEADER] = "true"
    return SubmitPublic(run_id=run.id, state=run.state)
