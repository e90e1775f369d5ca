"""A bound on the request head (request line and headers) of ``cellfoundry serve``.

uvicorn's httptools protocol has none: the parser keeps a header that has not ended yet in
memory, growing it a piece at a time, so one endless header was read whole (a 600 MB header
took 812 s and raised the API's RSS to 1.65 GB) before any ASGI code could refuse it. This
protocol counts the bytes of each request's head as they arrive and, past ``limit``, answers
431 with the app's error body and closes the connection.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class BoundedHeadProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the request head bounded by ``limit`` bytes.

    ``limit`` is the process's: set from ``max_header_kb`` when the app of a serving process is
    built (``create_app(serving=True)``), so every API process of ``--api-workers N`` has it.
    The bytes counted are the reads received while a head is incomplete (see ``data_received``).
    """

    limit: ClassVar[int] = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False  # a request has begun and its head has not ended
        self._began_now = False  # ... and it began in the read being parsed
        self._head_bytes = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = self._began_now = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_head = False
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
                self._refuse()

    def _refuse(self) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": "headers_too_large",
                    "message": f"the request line and headers exceed {self.limit:,} bytes",
                    "hint": "send shorter headers and URL (data goes in the body or in "
                    "POST /upload), or raise CELLFOUNDRY_MAX_HEADER_KB",
                    "request_id": None,
                }
            }
        ).encode()
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n"
        )
        self.logger.warning("request head over %d bytes: refused with 431", self.limit)
        self.transport.write(head + body)
        self.transport.close()
