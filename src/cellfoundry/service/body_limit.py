"""A bound on request bodies: JSON endpoints read their whole body into memory, so a body past
``max_body_kb`` is refused with 413 before it is kept (by its ``Content-Length``, or once the
bytes received pass the limit). ``POST /upload`` streams to disk under its own limit and
``POST /predict`` (answered before this middleware) has its own; neither passes here.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cellfoundry.errors import CellfoundryError, TooLargeError

#: paths whose bodies are bounded by their own (larger) limits
OWN_LIMITS = frozenset({"/upload", "/predict"})


class BodyLimitMiddleware:
    """Pure ASGI: the body of every other request is read here, up to ``limit`` bytes, and
    handed on whole; one byte more and the request is answered 413 (the app's error body)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OWN_LIMITS:
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send, f"the request body ({int(declared):,} bytes)")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: nothing to answer
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await self._refuse(scope, receive, send, "the request body")
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, what: str) -> None:
        exc = TooLargeError(
            f"{what} exceeds the limit of {self.limit:,} bytes for this endpoint",
            "send a smaller JSON body (files go to POST /upload, expression to POST /predict), "
            "or raise CELLFOUNDRY_MAX_BODY_KB",
            code="body_too_large",
        )
        handler = scope["app"].exception_handlers[CellfoundryError]
        response = await handler(Request(scope, receive), exc)
        response.headers["Connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)
