"""JSON bodies are bounded: a body past ``max_body_kb`` is refused with 413 and the error body
before it is kept in memory (a 200 MB ``POST /submit`` body took the API process from 425 MB to
1 GB of RSS before it was answered 404), whether its length is declared or it comes chunked.
Uploads and /predict keep their own limits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cellfoundry.config import Settings
from cellfoundry.service.app import create_app


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(home=tmp_path / "home", demo_model=False, max_body_kb=64)
    with TestClient(create_app(settings)) as c:
        yield c


def _submit(label_key_len: int) -> bytes:
    params = {"label_key": "x" * label_key_len}
    body = {"application_id": "annotation", "dataset_id": "d_1", "model_id": "m", "params": params}
    return json.dumps(body).encode()


def _refused(r: object) -> None:
    assert r.status_code == 413, r.text  # type: ignore[attr-defined]
    err = r.json()["error"]  # type: ignore[attr-defined]
    assert err["code"] == "body_too_large"
    assert "65,536 bytes" in err["message"] and "POST /upload" in err["hint"]
    assert err["request_id"] == r.headers["x-request-id"]  # type: ignore[attr-defined]


def test_a_json_body_past_the_limit_is_413_declared_or_chunked(client: TestClient) -> None:
    big = _submit(100_000)
    headers = {"content-type": "application/json", "authorization": "Bearer nokey"}
    _refused(client.post("/submit", content=big, headers=headers))

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    _refused(client.post("/submit", content=chunked(), headers=headers))
    _refused(client.post("/runs/r_1/cancel", content=big, headers=headers))
    # the API description says so for the route that takes a JSON body
    spec = client.get("/openapi.json").json()
    assert "413" in spec["paths"]["/submit"]["post"]["responses"]


def test_bodies_within_the_limit_and_other_endpoints_are_answered_as_before(
    client: TestClient,
) -> None:
    headers = {"content-type": "application/json", "authorization": "Bearer nokey"}
    r = client.post("/submit", content=_submit(60_000), headers=headers)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_key", r.text
    assert client.get("/health").json() == {"status": "ok"}
    # /upload streams to disk under its own (larger) limit: not refused here
    r = client.post("/upload", files={"file": ("big.csv", b"g,c\n" + b"A,1\n" * 50_000)})
    assert r.status_code == 401, r.text
