"""Bounds on the request head (request line and headers) of ``cellfoundry serve``: its size
and the time it may take to arrive.

uvicorn's httptools protocol has neither. The parser keeps a header that has not ended yet in
memory, growing it a piece at a time, so one endless header was read whole (a 600 MB header
took 812 s and raised the API's RSS to 1.65 GB) before any ASGI code could refuse it; and a
connection that sends nothing, or a head a byte at a time, was kept open for ever (the
keep-alive timeout only starts after a response). This protocol counts the bytes of each
request's head as they arrive and, past ``limit``, answers 431; and a head not complete within
``timeout_s`` of the connection (or of the request's first byte, on a kept-alive connection)
is answered 408. Both with the app's error body, and the connection closed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class BoundedHeadProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the request head bounded: ``limit`` bytes, and
    ``timeout_s`` seconds.

    Both are the process's: set from ``max_header_kb`` and ``head_timeout_s`` when the app of a
    serving process starts (``create_app(serving=True)``), so every API process of
    ``--api-workers N`` has them. The bytes counted are the reads received while a head is
    incomplete (see ``data_received``). The body is not timed here (uploads may be slow).
    """

    limit: ClassVar[int] = 64 * 1024
    timeout_s: ClassVar[float] = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False  # a request has begun and its head has not ended
        self._began_now = False  # ... and it began in the read being parsed
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # the first request's head is due within timeout_s

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = self._began_now = True
        self._head_bytes = 0
        if self._head_timer is None:  # a later request on a kept-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        self._began_now = False
        super().data_received(data)
        if not self._in_head or self.transport.is_closing():
            return
        # the read in which a request began may also hold the end of the one before (pipelining):
        # the head is counted from the next read on, so it is refused once it passes ``limit``
        # plus at most one read (256 KiB), and a head within ``limit`` is never refused
        if not self._began_now:
            self._head_bytes += len(data)
            if self._head_bytes > self.limit:
                self._refuse(
                    b"431 Request Header Fields Too Large",
                    "headers_too_large",
                    f"the request line and headers exceed {self.limit:,} bytes",
                    "send shorter headers and URL (data goes in the body or in POST /upload), "
                    "or raise CELLFOUNDRY_MAX_HEADER_KB",
                )

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if not self._in_head:  # connected, nothing sent: nothing to answer
            self.transport.close()
            return
        self._refuse(
            b"408 Request Timeout",
            "head_timeout",
            f"the request line and headers did not arrive within {self.timeout_s:g} s",
            "send the whole request head at once, or raise CELLFOUNDRY_HEAD_TIMEOUT_S",
        )

    def _refuse(self, status: bytes, code: str, message: str, hint: str) -> None:
        body = json.dumps(
            {"error": {"code": code, "message": message, "hint": hint, "request_id": None}}
        ).encode()
        head = (
            b"HTTP/1.1 " + status + b"\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n"
        )
        self.logger.warning("request refused before its head ended: %s", message)
        self._disarm()
        self.transport.write(head + body)
        self.transport.close()
