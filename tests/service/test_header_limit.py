"""Request heads are bounded: ``cellfoundry serve`` refuses a request line and headers past
``max_header_kb`` with 431 and the error body, and closes the connection. Before, uvicorn's
httptools protocol kept an unended header in memory whatever its size (a 600 MB header was read
for 812 s and took the API to 1.65 GB of RSS). A head within the limit is answered as before,
by every API process. And a head must arrive within ``head_timeout_s`` (408): a connection
that sent a partial head, or nothing, was kept open for ever."""

from __future__ import annotations

import json
import re
import select
import socket
import time
from collections.abc import Iterator

import pytest

from tests.service.conftest import Server, base_env

LIMIT_KB = 16
TIMEOUT_S = 3


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "two-processes"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("headers")
    env = base_env(
        home,
        CELLFOUNDRY_QUEUE_BACKEND="local",
        CELLFOUNDRY_MAX_HEADER_KB=str(LIMIT_KB),
        CELLFOUNDRY_HEAD_TIMEOUT_S=str(TIMEOUT_S),
    )
    env["CELLFOUNDRY_DEMO_MODEL"] = "false"
    srv = Server(home, env, ["--api-workers", str(request.param)]).start()
    yield srv
    srv.stop()


def _send_head(url_port: int, head: bytes, chunk: int = 8192) -> bytes:
    """Send ``head`` in pieces, stopping as soon as the server answers; the server's answer."""
    with socket.create_connection(("127.0.0.1", url_port), timeout=30) as sock:
        sent = 0
        while sent < len(head):
            try:
                sock.sendall(head[sent : sent + chunk])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += chunk
            if select.select([sock], [], [], 0.02)[0]:  # answered: stop sending
                break
        got = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                part = sock.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            got += part
            if b"\r\n\r\n" in got:
                head_end = got.index(b"\r\n\r\n") + 4
                length = next(
                    int(line.split(b":")[1])
                    for line in got[:head_end].lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                )
                if len(got) >= head_end + length:
                    break
        return got


def _request(extra_header_bytes: int) -> bytes:
    return (
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Filler: "
        + b"a" * extra_header_bytes
        + b"\r\nConnection: close\r\n\r\n"
    )


def test_a_head_past_the_limit_is_431_with_the_error_body(server: Server) -> None:
    for size in (LIMIT_KB * 1024 * 4, 8 * 1024 * 1024):  # a long header, and an 8 MB one
        t0 = time.monotonic()
        answer = _send_head(server.port, _request(size))
        took = time.monotonic() - t0
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large", answer[:300]
        body = json.loads(rest.split(b"\r\n\r\n", 1)[1])
        err = body["error"]
        assert err["code"] == "headers_too_large"
        assert f"{LIMIT_KB * 1024:,} bytes" in err["message"]
        assert "CELLFOUNDRY_MAX_HEADER_KB" in err["hint"]
        assert took < 10, f"the refusal took {took:.1f} s"
    # the server still answers, and a head within the limit is served
    answer = _send_head(server.port, _request(LIMIT_KB * 1024 // 2))
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]


def test_heads_within_the_limit_are_served_by_every_process(server: Server) -> None:
    with server.client() as c:
        for _ in range(20):  # several connections: with two processes both get some
            r = c.get("/health", headers={"X-Filler": "b" * (LIMIT_KB * 1024 - 1024)})
            assert r.status_code == 200, r.text
    answer = _send_head(server.port, _request(LIMIT_KB * 1024 * 8))
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:300]


def test_a_pipelined_large_body_is_not_taken_for_a_head(server: Server) -> None:
    """Keep-alive: a request whose body arrives in the same reads as the next request's head is
    not counted as head bytes (the limit counts a request's head only)."""
    body = json.dumps({"filler": "c" * (LIMIT_KB * 1024 * 3)}).encode()
    first = (
        b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    second = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(first + second)
        got = b""
        while True:
            part = sock.recv(65536)
            if not part:
                break
            got += part
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", got)
    # /health takes GET only: the app's 405 (with or without the built UI mounted), then health
    assert statuses == [b"405", b"200"], got[:600]


def _read_all(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and the seconds that took."""
    t0 = time.monotonic()
    got = b""
    while True:
        part = sock.recv(65536)
        if not part:
            return got, time.monotonic() - t0
        got += part


def test_a_head_that_does_not_arrive_in_time_is_408_and_closed(server: Server) -> None:
    """Slowloris: a head sent a piece at a time, or nothing at all, no longer holds a connection
    for ever; a kept-alive connection gets the full time again for each request's head."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_S * 5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        got, took = _read_all(sock)
    assert got.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), got[:300]
    err = json.loads(got.split(b"\r\n\r\n", 1)[1])["error"]
    assert err["code"] == "head_timeout" and f"{TIMEOUT_S} s" in err["message"]
    assert "CELLFOUNDRY_HEAD_TIMEOUT_S" in err["hint"]
    assert TIMEOUT_S * 0.8 < took < TIMEOUT_S * 4, took

    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_S * 5) as sock:
        got, took = _read_all(sock)  # a connection that never sends: closed, nothing answered
    assert got == b"" and took < TIMEOUT_S * 4, (got[:200], took)

    # kept alive: two requests, the second's head sent within the time of its own (the keep-alive
    # timeout is 5 s, more than TIMEOUT_S): both answered
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_S * 5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(TIMEOUT_S * 0.6)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        time.sleep(TIMEOUT_S * 0.6)  # the connection is older than TIMEOUT_S by now
        sock.sendall(b"Connection: close\r\n\r\n")
        got, _ = _read_all(sock)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", got) == [b"200", b"200"], got[:600]
