"""The FastAPI application factory: lifespan, routers, error handlers and the web UI."""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from cellfoundry.config import Settings, get_settings
from cellfoundry.errors import (
    CellfoundryError,
    NotFoundError,
    TooManyRequestsError,
    looks_internal,
)
from cellfoundry.service.body_limit import BodyLimitMiddleware
from cellfoundry.service.http_protocol import BoundedHeadProtocol
from cellfoundry.service.platform import Platform
from cellfoundry.service.public import client_text
from cellfoundry.service.request_id import HEADER, RequestIdMiddleware, request_id_of
from cellfoundry.service.routes import ROUTERS
from cellfoundry.service.routes.predict import PredictFastPath
from cellfoundry.service.security_headers import SecurityHeadersMiddleware
from cellfoundry.store.db import migrate

log = logging.getLogger("cellfoundry.service")

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_type",
}

HTTP_HINTS = {
    401: "send 'Authorization: Bearer KEY' (create one with: cellfoundry keys create NAME)",
    404: "see /docs for the available endpoints",
    405: "see /docs for the available endpoints",
    413: "send a smaller body (see /docs for the limits)",
}


class App(FastAPI):
    """FastAPI with ``POST /predict`` answered first (``PredictFastPath``, which applies the
    request id and the app's error handlers itself): before FastAPI's per-request check of
    OpenTelemetry providers (about 15 us; /predict is not traced), Starlette and the middleware.
    """

    def build_middleware_stack(self) -> ASGIApp:
        return PredictFastPath(super().build_middleware_stack())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stack = self.middleware_stack  # built by Starlette at the first request
        if isinstance(stack, PredictFastPath) and PredictFastPath.handles(scope):
            scope["app"] = self
            await stack.predict(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings | None = None, run_migrations: bool = True, serving: bool = False
) -> FastAPI:
    """The API for ``settings`` (default: from the environment). ``serving``: the app is the
    whole of a server process (``cellfoundry serve``), whose garbage collector it tunes at start
    (``settle_gc``); never in a process that makes several apps (tests)."""
    settings = settings or get_settings()
    if run_migrations:
        migrate(settings.database_url)
    platform = Platform(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        platform.start()
        if serving:
            settle_gc()
            BoundedHeadProtocol.limit = settings.max_header_kb * 1024  # this process's server
            BoundedHeadProtocol.timeout_s = settings.head_timeout_s
        yield
        platform.stop()

    app = App(
        title="cellfoundry",
        version="0.1.0",
        lifespan=lifespan,
        description="Annotate single-cell RNA-seq data: uploads, durable runs, real-time /predict.",
    )
    app.state.platform = platform
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_kb * 1024)
    app.add_middleware(RequestIdMiddleware)  # the 413 above carries the request id
    app.add_middleware(SecurityHeadersMiddleware)  # outermost: on every answer of the stack
    install_error_handlers(app, [settings.home, settings.storage])
    if settings.web_dir is not None and Path(settings.web_dir).is_dir():
        mount_spa(app, Path(settings.web_dir).resolve())
    return app


def app_from_environment() -> FastAPI:
    """The app of one of several API processes (``cellfoundry serve --api-workers N``): settings
    from the environment; the parent process has already migrated the database."""
    return create_app(get_settings(), run_migrations=False, serving=True)


GC_YOUNG_THRESHOLD = 10_000


def settle_gc() -> None:
    """Once the process is started (modules, models and app built): move every object to the
    collector's permanent generation (``gc.freeze``) and collect the youngest generation less
    often. Without it a full collection walks the ~240,000 objects of the loaded libraries:
    about 150 ms of CPU on the event loop every few thousand /predict requests (the p99), and
    the younger collections cost ~10 us per request; requests' own objects are freed by
    reference counting and the few cycles they leave are still collected."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    hint: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The one error body: ``{"error": {"code", "message", "hint", "request_id"}}``."""
    rid = request_id_of(request)
    return JSONResponse(
        {"error": {"code": code, "message": message, "hint": hint, "request_id": rid}},
        status_code=status,
        headers={**(headers or {}), HEADER: rid},
    )


def install_error_handlers(app: FastAPI, roots: list[Path]) -> None:
    """Map every error to the one error body; details (exception text, SQL, paths) go to the log
    only, under the request id that the client also gets."""

    @app.exception_handler(CellfoundryError)
    async def _cf_error(request: Request, exc: CellfoundryError) -> JSONResponse:
        message, hint = client_text(exc.message, roots), client_text(exc.hint or "", roots)
        if looks_internal(exc.message) or looks_internal(exc.hint or ""):
            # exception text or SQL inside a message: the client gets the code and the request id
            message = f"the server could not complete the request ({exc.code})"
            hint = f"the server log has the details under request id {request_id_of(request)}"
        if exc.__cause__ is not None or message != exc.message:
            log.info(
                "request %s: %s %s -> %s %s: %s (cause: %r)",
                request_id_of(request),
                request.method,
                request.url.path,
                exc.status,
                exc.code,
                exc.message,
                exc.__cause__,
            )
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        if isinstance(exc, TooManyRequestsError) and exc.retry_after_s is not None:
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        hint = hint or HTTP_HINTS.get(exc.status, "see /docs for what each endpoint takes")
        return error_response(request, exc.status, exc.code, message, hint, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors()[:10]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
            msg = str(e.get("msg"))
            parts.append(f"{loc}: {'invalid value' if looks_internal(msg) else client_text(msg)}")
        return error_response(
            request,
            422,
            "invalid_request",
            "; ".join(parts) or "invalid request",
            "fix the listed fields; the schema is at /docs",
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "http_error")
        detail = str(exc.detail)
        message = "the request was refused" if looks_internal(detail) else client_text(detail)
        hint = HTTP_HINTS.get(exc.status_code, "see /docs for what each endpoint takes")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, not only the first route's
            headers["Allow"] = ", ".join(allowed_methods(request))
        return error_response(request, exc.status_code, code, message, hint, headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id_of(request)
        log.error(
            "request %s: %s %s failed",
            rid,
            request.method,
            request.url.path,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        return error_response(
            request,
            500,
            "internal_error",
            "the server could not complete the request",
            f"this is a bug; report it with the request id {rid} (the server log has the details)",
        )


def allowed_methods(request: Request) -> list[str]:
    """The methods of every route whose path matches the request's (for ``Allow``)."""
    methods: set[str] = set()
    for r in (r for router in ROUTERS for r in router.routes):
        if isinstance(r, Route | APIRoute) and r.methods and r.path_regex.match(request.url.path):
            methods |= r.methods
    return sorted(methods)


def mount_spa(app: FastAPI, root: Path) -> None:
    """Serve the built web UI from ``root`` for every path that is not an API route."""
    routes = [*app.routes, *(r for router in ROUTERS for r in router.routes)]
    api_prefixes = {r.path.strip("/").split("/")[0] for r in routes if hasattr(r, "path")}

    @app.get("/{full_path:path}", include_in_schema=False)
    def spa(full_path: str, request: Request) -> Response:
        if full_path.split("/")[0] in api_prefixes:
            if allowed_methods(request):  # an API path without GET (e.g. GET /predict): 405
                raise StarletteHTTPException(405)
            raise NotFoundError(
                f"no endpoint '/{full_path}'", "see /docs for the endpoints", code="not_found"
            )
        target = (root / full_path).resolve()
        if full_path and target.is_relative_to(root) and target.is_file():
            return FileResponse(target)
        index = root / "index.html"
        if index.is_file():
            return FileResponse(index)
        raise NotFoundError(f"no page '{full_path}'", "see /docs", code="not_found")
