"""A local HTTP file server with Range support, for download tests (127.0.0.1 only)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class FileServer:
    files: dict[str, bytes]
    url: str = ""
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    cut_after: int | None = None  # first GET of a file stops after this many bytes
    honour_range: bool = True
    announce_sha: dict[str, str] = field(default_factory=dict)
    redirect: bool = False  # answer like HF: 302 to a CDN path, the sha256 only on the redirect
    _cut_done: set[str] = field(default_factory=set)


def _handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            name = self.path.rsplit("/", 1)[-1]
            rng = self.headers.get("Range")
            state.requests.append((self.path, rng))
            if state.redirect and not self.path.startswith("/cdn/"):
                self.send_response(302)
                self.send_header("Location", f"/cdn/{name}")
                if name in state.announce_sha:
                    self.send_header("X-Linked-Etag", f'"{state.announce_sha[name]}"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if name not in state.files:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = state.files[name]
            start = 0
            if rng and state.honour_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            if name in state.announce_sha and not state.redirect:
                self.send_header("X-Linked-Etag", f'"{state.announce_sha[name]}"')
            payload = body[start:]
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if state.cut_after is not None and name not in state._cut_done:
                state._cut_done.add(name)
                self.wfile.write(payload[: state.cut_after])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(payload)

    return Handler


@contextmanager
def serve() -> Iterator[FileServer]:
    """Serve ``state.files`` (by file name) on a free loopback port until the block ends."""
    state = FileServer(files={})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
