"""Typed FastAPI dependencies: the platform, a database session, the calling user, their run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi import Path as PathParam
from sqlalchemy.orm import Session

from cellfoundry.errors import NotFoundError, UnauthorizedError
from cellfoundry.service.platform import Platform
from cellfoundry.service.schemas import ID_PATTERN
from cellfoundry.store.tables import Run


def get_platform(request: Request) -> Platform:
    """The app's ``Platform`` (created by ``create_app``)."""
    return request.app.state.platform  # type: ignore[no-any-return]


PlatformDep = Annotated[Platform, Depends(get_platform)]


def get_session(platform: PlatformDep) -> Iterator[Session]:
    """A database session for one request (committed when the handler returns)."""
    with platform.db.session() as s:
        yield s


SessionDep = Annotated[Session, Depends(get_session)]


def user_of_request(request: Request, platform: Platform) -> str:
    """The id of the user owning the request's ``Authorization: Bearer KEY``; 401 otherwise."""
    return user_of_authorization(request.headers.get("authorization", ""), platform)


def user_of_authorization(auth: str, platform: Platform) -> str:
    """The id of the user owning ``auth`` (an ``Authorization`` header value); 401 otherwise."""
    scheme, _, key = auth.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise UnauthorizedError(
            "this endpoint needs an API key",
            "send 'Authorization: Bearer KEY' (create one with: cellfoundry keys create NAME)",
            code="unauthorized",
        )
    uid = platform.user_for_key(key.strip())
    if uid is None:
        raise UnauthorizedError(
            "the API key is unknown or revoked",
            "create a new key with: cellfoundry keys create NAME",
            code="invalid_key",
        )
    return uid


def current_user(request: Request, platform: PlatformDep) -> str:
    """The calling user's id (in the thread pool: a key-cache miss reads the database)."""
    return user_of_request(request, platform)


def optional_user(request: Request, platform: PlatformDep) -> str | None:
    """The calling user's id, or None without an ``Authorization`` header (a bad key is 401)."""
    if not request.headers.get("authorization"):
        return None
    return user_of_request(request, platform)


UserDep = Annotated[str, Depends(current_user)]
OptionalUserDep = Annotated[str | None, Depends(optional_user)]
Id = Annotated[str, PathParam(pattern=ID_PATTERN)]
RunId = Annotated[str, PathParam(pattern=ID_PATTERN, description="a run id from POST /submit")]


def own_run(run_id: RunId, s: SessionDep, uid: UserDep) -> Run:
    """The caller's run ``run_id``; 404 when it does not exist or is someone else's."""
    run = s.get(Run, run_id)
    if run is None or run.owner_id != uid:
        raise NotFoundError(
            f"no run '{run_id}'", "list your runs with GET /runs", code="run_not_found"
        )
    return run


OwnRunDep = Annotated[Run, Depends(own_run)]
