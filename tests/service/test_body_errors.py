"""A JSON body the API cannot read is refused with what to fix: where the JSON breaks, which
byte is not UTF-8, which Content-Type to send; /submit and /predict say it the same way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import params
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from httpx import Response

from cellfoundry.config import Settings
from cellfoundry.service.app import create_app
from cellfoundry.service.json_body import JsonBodyRoute, body_error
from cellfoundry.service.routes import ROUTERS
from cellfoundry.store.keys import create_key

JSON = {"Content-Type": "application/json"}
#: a /submit body with its closing brace missing, and one with a trailing comma
NO_BRACE = b'{\n  "dataset_id": "d1",\n  "model_id": "m1"\n'
TRAILING = b'{\n  "dataset_id": "d1",\n  "model_id": "m1",\n}'


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    settings = Settings(home=tmp_path / "home", demo_model=False, web_dir=tmp_path / "no-web")
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as c:
        with app.state.platform.db.session() as s:
            _, key = create_key(s, "alice")
        yield c, {"Authorization": f"Bearer {key}"}


def _error(r: Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert err["code"] == code, err
    assert err["request_id"] and err["request_id"] == r.headers["x-request-id"]
    assert err["message"] and err["hint"]
    return err


@pytest.mark.parametrize("path", ["/submit", "/predict"])
def test_malformed_json_says_where_it_breaks_and_what_was_expected(
    client: tuple[TestClient, dict[str, str]], path: str
) -> None:
    c, auth = client
    err = _error(c.post(path, content=NO_BRACE, headers={**auth, **JSON}), 422, "invalid_json")
    assert err["message"] == (
        "the body is not valid JSON: Expecting ',' delimiter at line 4, column 1 (char 43)"
    )
    assert "send a JSON object such as {" in err["hint"]
    err = _error(c.post(path, content=TRAILING, headers={**auth, **JSON}), 422, "invalid_json")
    assert err["message"] == (
        "the body is not valid JSON: Expecting property name enclosed in double quotes "
        "at line 4, column 1 (char 44)"
    )
    assert "comma" in err["hint"]


def test_both_routes_word_a_json_error_the_same_way(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    c, auth = client
    for raw in (
        NO_BRACE,
        TRAILING,
        b"not json",
        b'{"a": "caf\xe9"}',
        b"",
        b"[" * 50_000,
        b"\xef\xbb\xbf" + NO_BRACE,  # a byte order mark, then a JSON error
        NO_BRACE.decode().encode("utf-16"),
        NO_BRACE.decode().encode("utf-32-le"),
    ):
        submit = c.post("/submit", content=raw, headers={**auth, **JSON}).json()["error"]
        predict = c.post("/predict", content=raw, headers={**auth, **JSON}).json()["error"]
        assert submit["code"] == predict["code"] and submit["message"] == predict["message"]


@pytest.mark.parametrize("path", ["/submit", "/predict"])
def test_a_body_that_is_not_utf8_is_a_422_with_the_offset_of_the_bad_byte(
    client: tuple[TestClient, dict[str, str]], path: str
) -> None:
    c, auth = client
    r = c.post(path, content=b'{"dataset_id": "caf\xe9"}', headers={**auth, **JSON})
    err = _error(r, 422, "body_not_utf8")
    assert err["message"] == (
        "the body is not UTF-8: byte 0xe9 at offset 19 (invalid continuation byte)"
    )
    assert "encode the body as UTF-8" in err["hint"]


@pytest.mark.parametrize("path", ["/submit", "/predict"])
def test_an_empty_or_too_deep_body_says_so_and_is_never_a_500(
    client: tuple[TestClient, dict[str, str]], path: str
) -> None:
    c, auth = client
    for raw in (b"", b"  \n"):
        err = _error(c.post(path, content=raw, headers={**auth, **JSON}), 422, "empty_body")
        assert err["message"] == "the request body is empty"
        assert "Content-Type: application/json" in err["hint"]
    deep = b'{"params": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    err = _error(c.post(path, content=deep, headers={**auth, **JSON}), 422, "invalid_json")
    assert "too deeply" in err["message"]


@pytest.mark.parametrize(
    ("headers", "files", "sent"),
    [
        ({"Content-Type": "text/plain"}, None, "as 'text/plain'"),
        (
            {"Content-Type": "application/x-www-form-urlencoded"},
            None,
            "as 'application/x-www-form-urlencoded' (a form)",
        ),
        ({}, None, "without a Content-Type"),
        ({}, {"f": ("b.json", b"{}", "application/json")}, "as 'multipart/form-data' (a form)"),
    ],
)
def test_submit_with_another_content_type_is_a_415_naming_application_json(
    client: tuple[TestClient, dict[str, str]],
    headers: dict[str, str],
    files: dict[str, Any] | None,
    sent: str,
) -> None:
    c, auth = client
    body = b'{"dataset_id": "d1", "model_id": "m1"}'
    if files:
        r = c.post("/submit", files=files, headers=auth)
    else:
        r = c.post("/submit", content=body, headers={**auth, **headers})
    err = _error(r, 415, "not_json")
    assert err["message"] == f"the body was sent {sent}; /submit takes a JSON object"
    assert "'Content-Type: application/json'" in err["hint"]


def test_without_a_key_submit_is_still_a_401_unless_its_json_does_not_parse(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    c, _ = client
    for headers, raw in [
        ({}, b""),
        (JSON, b""),
        ({"Content-Type": "text/plain"}, b'{"dataset_id": "d1"}'),
        (JSON, b'{"dataset_id": "d1"}'),
    ]:
        _error(c.post("/submit", content=raw, headers=headers), 401, "unauthorized")
    _error(c.post("/submit", content=NO_BRACE, headers=JSON), 422, "invalid_json")  # as before


def test_submit_takes_json_as_before(client: tuple[TestClient, dict[str, str]]) -> None:
    c, auth = client
    body = '{"dataset_id": "d1", "model_id": "m1"}'
    for ctype, raw in [
        ("application/json", body.encode()),
        ("application/json; charset=utf-8", body.encode()),
        ("application/vnd.api+json", body.encode()),
        ("application/json", b"\xef\xbb\xbf" + body.encode()),  # a BOM: ignored (RFC 8259)
    ]:
        r = c.post("/submit", content=raw, headers={**auth, "Content-Type": ctype})
        _error(r, 404, "dataset_not_found")  # read, then: no such dataset


def test_predict_reads_the_body_whatever_its_content_type(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    c, auth = client
    body = b'{"expression": {"CD19": 8.5}}'
    for ctype in ("application/json", "text/plain", "application/x-www-form-urlencoded", None):
        headers = {**auth, **({"Content-Type": ctype} if ctype else {})}
        _error(c.post("/predict", content=body, headers=headers), 503, "no_model_loaded")
    described = c.get("/openapi.json").json()["paths"]["/predict"]["post"]["description"]
    assert "whatever its ``Content-Type``" in described


def test_submit_documents_its_415(client: tuple[TestClient, dict[str, str]]) -> None:
    c, _ = client
    op = c.get("/openapi.json").json()["paths"]["/submit"]["post"]
    assert "415" in op["responses"] and "Content-Type: application/json" in op["description"]


def test_every_route_with_a_json_body_explains_an_unreadable_body() -> None:
    json_bodies = [
        r
        for r in (r for router in ROUTERS for r in router.routes)
        if isinstance(r, APIRoute)
        and r.body_field is not None
        and not isinstance(r.body_field.field_info, params.Form)
    ]
    assert "/submit" in [r.path for r in json_bodies]
    assert all(isinstance(r, JsonBodyRoute) for r in json_bodies), json_bodies


UTF16_32 = [
    ("utf-16", "UTF-16", "ff fe 7b 00 (a byte order mark)"),
    ("utf-16-le", "UTF-16LE", "7b 00 22 00"),
    ("utf-16-be", "UTF-16BE", "00 7b 00 22"),
    ("utf-32", "UTF-32", "ff fe 00 00 (a byte order mark)"),
    ("utf-32-le", "UTF-32LE", "7b 00 00 00"),
    ("utf-32-be", "UTF-32BE", "00 00 00 7b"),
]


@pytest.mark.parametrize("path", ["/submit", "/predict"])
@pytest.mark.parametrize(("encoding", "name", "first"), UTF16_32, ids=[e[0] for e in UTF16_32])
def test_utf16_and_utf32_bodies_are_422_body_not_utf8_on_both_routes(
    client: tuple[TestClient, dict[str, str]], path: str, encoding: str, name: str, first: str
) -> None:
    """RFC 8259 §8.1: JSON exchanged between systems MUST be UTF-8. /submit's parser (json.loads)
    read UTF-16 and UTF-32 (a 404 for this body) while /predict refused them: both refuse now."""
    c, auth = client
    raw = '{"dataset_id": "d1", "model_id": "m1"}'.encode(encoding)
    err = _error(c.post(path, content=raw, headers={**auth, **JSON}), 422, "body_not_utf8")
    assert err["message"] == f"the body is {name}, not UTF-8: it begins with the bytes {first}"
    assert err["hint"].startswith("encode the body as UTF-8")
    if path == "/submit":  # refused as a body that does not parse: before the key is checked
        _error(c.post(path, content=raw, headers=JSON), 422, "body_not_utf8")
        # sent as another type it is not read as JSON: 415 as before
        r = c.post(path, content=raw, headers={**auth, "Content-Type": "text/plain"})
        _error(r, 415, "not_json")


def test_a_byte_order_mark_is_ignored_by_both_routes(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    """RFC 8259 §8.1 lets a parser ignore a leading UTF-8 byte order mark: /submit (json.loads)
    did, /predict (orjson, pydantic) refused it with 422; both read such a body now."""
    c, auth = client
    submit = b'\xef\xbb\xbf{"dataset_id": "d1", "model_id": "m1"}'
    _error(c.post("/submit", content=submit, headers={**auth, **JSON}), 404, "dataset_not_found")
    predict = b'\xef\xbb\xbf{"expression": {"CD19": 8.5}}'  # read, then: no model to answer
    _error(c.post("/predict", content=predict, headers={**auth, **JSON}), 503, "no_model_loaded")
    bad = b'\xef\xbb\xbf{"expression": "x"}'  # read, then refused for its content as without
    r = c.post("/predict", content=bad, headers={**auth, **JSON})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", r.text
    assert (
        r.json()["error"]["message"]
        == (
            c.post("/predict", content=bad[3:], headers={**auth, **JSON}).json()["error"]["message"]
        )
    )


def test_a_byte_order_mark_or_utf16_is_named_and_positions_count_from_the_first_byte() -> None:
    assert body_error(b'\xef\xbb\xbf{"expression": 1}', "/predict") is None  # read, as json.loads
    late = body_error(b'\xef\xbb\xbf{"a": 1,}', "/predict")
    assert late is not None
    assert late.message.endswith("at line 1, column 10 (char 9)")  # as in the plain body + 1
    utf16 = body_error('{"a": 1}'.encode("utf-16-le"), "/predict")
    assert utf16 is not None and utf16.code == "body_not_utf8" and "UTF-16LE" in utf16.message
    assert body_error(b'{"a": 1}', "/submit") is None
