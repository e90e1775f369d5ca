"""The /predict body fast path (orjson + strict options) answers exactly as ``PredictRequest``.

Every body either takes the fast path and gives pydantic's values (genes in order, float64 values
bit for bit, options), or is left to pydantic, whose refusal (status, code, message) is unchanged.
"""

from __future__ import annotations

import codecs
import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cellfoundry.config import Settings
from cellfoundry.service import predict_body
from cellfoundry.service.app import create_app
from cellfoundry.service.predict_body import fast_parse, parse_predict_body
from cellfoundry.service.schemas import PredictRequest
from tests.service.conftest import state_with_model

OPTIONS = ("model_id", "top_k", "values", "threshold", "species", "panel")


def _bits(cells: list[dict[str, float]]) -> list[list[tuple[str, bytes]]]:
    """Genes in order with each value's exact float64 bits (NaN, -0.0 and 1e-320 included)."""
    return [[(g, struct.pack("<d", v)) for g, v in c.items()] for c in cells]


def _pydantic(raw: bytes) -> tuple[PredictRequest, list[dict[str, float]]] | None:
    try:
        req = PredictRequest.model_validate_json(raw)
    except ValidationError:
        return None
    return req, req.expression if isinstance(req.expression, list) else [req.expression]


def check_same(raw: bytes) -> bool:
    """The fast path accepts only what pydantic accepts, with the same values; True if taken.
    (``parse_predict_body`` ignores a leading UTF-8 byte order mark, which pydantic refuses.)"""
    want = _pydantic(raw)
    if want is None and raw.startswith(codecs.BOM_UTF8):
        want = _pydantic(raw[len(codecs.BOM_UTF8) :])
    fast = fast_parse(raw)
    if want is None:
        assert fast is None, raw[:200]
        with pytest.raises(ValidationError):
            parse_predict_body(raw)
        return False
    got = parse_predict_body(raw)
    assert _bits(got[1]) == _bits(want[1]), raw[:200]
    for name in OPTIONS:
        a, b = getattr(got[0], name), getattr(want[0], name)
        assert a == b and type(a) is type(b), (name, a, b, raw[:200])
    return fast is not None


EDGES = [
    b'{"expression": {"A": 1, "A": 2, "B": 3}}',  # a repeated gene: first place, last value
    b'{"expression": {"A": 1}, "expression": {"B": 2.5}}',
    b'{"expression": {"A": NaN}}',
    b'{"expression": {"A": Infinity}}',
    b'{"expression": {"A": -Infinity}}',
    b'{"expression": {"A": 1e400}}',
    b'{"expression": {"A": -1e400}}',
    b'{"expression": {"A": 1e-400}}',
    b'{"expression": {"A": 4.9e-324}}',
    b'{"expression": {"A": -0.0}}',
    b'{"expression": {"A": -0}}',
    b'{"expression": {"A": 9007199254740993}}',
    b'{"expression": {"A": 18446744073709551615}}',
    b'{"expression": {"A": 18446744073709551616}}',
    b'{"expression": {"A": -9223372036854775809}}',
    b'{"expression": {"A": 123456789012345678901234567890}}',
    b'{"expression": {"A": 0.1000000000000000055511151231257827}}',
    b'{"expression": {"A": 2.2250738585072011e-308}}',
    b'{"expression": {"A": true}}',
    b'{"expression": {"A": null}}',
    b'{"expression": {"A": "1.5"}}',
    b'{"expression": {"A": [1]}}',
    b'{"expression": {}}',
    b'{"expression": []}',
    b'{"expression": [{}]}',
    b'{"expression": [{"A": 1}, {}]}',
    b'{"expression": [{"A": 1}, {"B": 2, "A": 3}]}',
    b'{"expression": [{"A": 1}, 5]}',
    b'{"expression": "A"}',
    b'{"expression": null}',
    b'{"top_k": 3}',
    b'{"expression": {"A": 1}, "extra": 1}',
    b'{"expression": {"A": 1}, "top_k": 3.0}',
    b'{"expression": {"A": 1}, "top_k": true}',
    b'{"expression": {"A": 1}, "top_k": "3"}',
    b'{"expression": {"A": 1}, "top_k": 0}',
    b'{"expression": {"A": 1}, "top_k": 50}',
    b'{"expression": {"A": 1}, "top_k": 51}',
    b'{"expression": {"A": 1}, "threshold": 1}',
    b'{"expression": {"A": 1}, "threshold": 0.5}',
    b'{"expression": {"A": 1}, "threshold": 1.5}',
    b'{"expression": {"A": 1}, "threshold": null}',
    b'{"expression": {"A": 1}, "values": "lognorm"}',
    b'{"expression": {"A": 1}, "values": "log"}',
    b'{"expression": {"A": 1}, "model_id": "demo-logreg_1"}',
    b'{"expression": {"A": 1}, "model_id": "abc\\n"}',
    b'{"expression": {"A": 1}, "model_id": "a b"}',
    b'{"expression": {"A": 1}, "model_id": ""}',
    b'{"expression": {"A": 1}, "model_id": 5}',
    b'{"expression": {"A": 1}, "species": "mouse"}',
    b'{"expression": {"A": 1}, "species": "' + b"m" * 41 + b'"}',
    b'{"expression": {"A": 1}, "panel": ["A", "B"]}',
    b'{"expression": {"A": 1}, "panel": ["A", ""]}',
    b'{"expression": {"A": 1}, "panel": ["A", 1]}',
    b'{"expression": {"A": 1}, "panel": []}',
    b'{"expression": {"\\ud800": 1}}',
    b'{"expression": {"\\u00e9\\u0041": 1, "\\"q\\"": 2}}',
    b'{"expression": {"A\x01": 1}}',
    b'{"expression": {"A": 1}} x',
    b'{"expression": {"A": 1}}\n',
    b' \t{"expression": {"A": 1}}\r\n ',
    b'\xef\xbb\xbf{"expression": {"A": 1}}',  # a byte order mark: ignored, as json.loads does
    b'\xef\xbb\xbf{"expression": {"A": "x"}}',
    b'\xef\xbb\xbf\xef\xbb\xbf{"expression": {"A": 1}}',  # only one is
    b'\xef\xbb\xbf{"expression": {"A": 1}',
    '{"expression": {"A": 1}}'.encode("utf-16"),
    '{"expression": {"A": 1}}'.encode("utf-16-le"),
    b'{"expression": {"A": 1.}}',
    b'{"expression": {"A": .5}}',
    b'{"expression": {"A": 01}}',
    b'{"expression": {"A": +1}}',
    b'{"expression": {"\xff": 1}}',
    b'{"expression": {"A": 1}',
    b"[]",
    b"null",
    b'"x"',
    b"",
    b"{}",
]


@pytest.mark.parametrize("raw", EDGES, ids=range(len(EDGES)))
def test_edge_bodies_parse_as_pydantic_parses_them(raw: bytes) -> None:
    check_same(raw)


def test_the_usual_bodies_take_the_fast_path() -> None:
    cell = {f"GENE{i}": float(i % 7) * 1.5 for i in range(800)}
    assert check_same(json.dumps({"expression": cell, "top_k": 3}).encode())
    assert check_same(json.dumps({"expression": {"A": 3, "B": 2.5}}).encode())  # integers
    many = {"expression": [cell, {"A": 1}], "model_id": "m1", "panel": ["A", "B"]}
    assert check_same(json.dumps(many).encode())
    assert check_same(
        json.dumps({"expression": cell, "values": "lognorm", "threshold": 0.4}).encode()
    )


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=5)
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
NUMBERS = st.integers(min_value=-(2**66), max_value=2**66) | st.floats(
    allow_nan=True, allow_infinity=True
)
CELL = st.dictionaries(st.text(max_size=6), NUMBERS | JSON_SCALARS, max_size=6)
BODY = st.fixed_dictionaries(
    {"expression": CELL | st.lists(CELL, max_size=3) | JSON},
    optional={
        "model_id": st.sampled_from(["demo", "x y", "", None]) | JSON_SCALARS,
        "top_k": st.integers(min_value=-2, max_value=60) | JSON_SCALARS,
        "values": st.sampled_from(["counts", "lognorm", "raw"]) | JSON_SCALARS,
        "threshold": st.floats(min_value=-0.5, max_value=1.5) | JSON_SCALARS,
        "species": st.sampled_from(["mouse", "pig", "h" * 41]) | JSON_SCALARS,
        "panel": st.lists(st.text(max_size=3), max_size=3) | JSON,
        "extra": JSON,
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODY, spacing=st.booleans())
def test_any_body_parses_as_pydantic_parses_it(body: dict[str, Any], spacing: bool) -> None:
    raw = json.dumps(body, separators=(", ", ": ") if spacing else (",", ":")).encode()
    check_same(raw)


@settings(max_examples=300, deadline=None)
@given(value=st.floats(allow_nan=False, allow_infinity=False), digits=st.integers(1, 25))
def test_float_texts_parse_to_the_same_bits(value: float, digits: int) -> None:
    """Decimal texts of any length (beyond float64's 17 digits too) round as pydantic rounds."""
    for text in (repr(value), f"{value:.{digits}e}", f"{value:.{digits}g}"):
        if not math.isfinite(float(text)):
            continue
        check_same(b'{"expression": {"G": ' + text.encode() + b"}}")


# ------------------------------------------------------------------ over HTTP: the same answers


@pytest.fixture
def client(tmp_path: Path, demo_model_dir: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    settings = Settings(
        home=tmp_path / "home", demo_model=False, web_dir=tmp_path / "no-web", reaper_s=3600
    )
    key = state_with_model(settings, demo_model_dir)
    with TestClient(create_app(settings)) as c:
        yield c, {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def _answer(c: TestClient, auth: dict[str, str], raw: bytes) -> tuple[int, Any]:
    r = c.post("/predict", content=raw, headers=auth)
    body = r.json()
    if "error" in body:
        body["error"].pop("request_id")
    return r.status_code, body


def test_http_answers_with_and_without_the_fast_path_are_identical(
    client: tuple[TestClient, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    c, auth = client
    genes = list(next(iter(c.app.state.platform.predictor.models.values())).annotator.genes)  # type: ignore[attr-defined]
    cell = {g: float(i % 5) for i, g in enumerate(genes[:300])}
    dup = ", ".join(f'"{g}": {v}' for g, v in [*list(cell.items())[:50], (genes[0], 7.0)])
    bodies = [
        json.dumps({"expression": cell, "top_k": 3}).encode(),
        json.dumps({"expression": {g: int(v) for g, v in cell.items()}}).encode(),
        json.dumps({"expression": [cell, cell], "top_k": 2, "threshold": 0.2}).encode(),
        ('{"expression": {' + dup + "}}").encode(),  # a repeated gene
        json.dumps({"expression": {**cell, genes[1]: float("nan")}}).encode(),
        json.dumps({"expression": {**cell, genes[1]: float("inf")}}).encode(),
        ('{"expression": {"' + genes[0] + '": 1e400}}').encode(),
        json.dumps({"expression": {**cell, genes[1]: -1.0}}).encode(),
        json.dumps({"expression": {**cell, genes[1]: "x"}}).encode(),
        json.dumps({"expression": {**cell, genes[1]: True}}).encode(),
        json.dumps({"expression": {**cell, genes[1]: None}}).encode(),
        json.dumps({"expression": {}}).encode(),
        json.dumps({"expression": []}).encode(),
        json.dumps({"expression": cell, "top_k": 0}).encode(),
        json.dumps({"expression": cell, "top_k": "2"}).encode(),
        json.dumps({"expression": cell, "model_id": "no such"}).encode(),
        json.dumps({"expression": cell, "model_id": "nope"}).encode(),
        json.dumps({"expression": cell, "unknown_field": 1}).encode(),
        json.dumps({"expression": {"NOTAGENE": 1.0}}).encode(),
        json.dumps({"expression": cell, "values": "lognorm"}).encode(),
        json.dumps({"expression": [cell] * 3, "panel": genes[:400]}).encode(),
        b'{"expression": {"CD3D": 1.0',
        codecs.BOM_UTF8 + json.dumps({"expression": cell, "top_k": 2}).encode(),
        codecs.BOM_UTF8 + b'{"expression": {"CD3D": 1.0',
        json.dumps({"expression": cell}).encode("utf-16"),
        b"not json",
        b"",
        b"[]",
        json.dumps({"expression": [{f"G{i}": 1.0} for i in range(10_001)]}).encode(),  # > max cells
    ]
    fast = [_answer(c, auth, raw) for raw in bodies]
    taken = sum(fast_parse(raw) is not None for raw in bodies)
    assert taken >= 8
    monkeypatch.setattr(predict_body, "fast_parse", lambda raw: None)
    slow = [_answer(c, auth, raw) for raw in bodies]
    for raw, f, s in zip(bodies, fast, slow, strict=True):
        assert f == s, raw[:120]
    statuses = [s for s, _ in fast]
    assert statuses.count(200) >= 5 and 422 in statuses and 404 in statuses and 413 in statuses


def test_a_byte_order_mark_is_ignored_and_utf16_refused(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    """RFC 8259 §8.1: JSON between systems is UTF-8, and a parser may ignore a leading UTF-8 byte
    order mark. /predict answers a body with one as the same body without it (as /submit reads
    both); a body in UTF-16 or UTF-32 is refused 422 body_not_utf8, as on /submit."""
    c, auth = client
    genes = list(next(iter(c.app.state.platform.predictor.models.values())).annotator.genes)  # type: ignore[attr-defined]
    body = json.dumps({"expression": {g: float(i % 5) for i, g in enumerate(genes[:300])}})
    plain = _answer(c, auth, body.encode())
    assert plain[0] == 200
    assert _answer(c, auth, codecs.BOM_UTF8 + body.encode()) == plain
    for encoding in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"):
        status, answer = _answer(c, auth, body.encode(encoding))
        assert status == 422 and answer["error"]["code"] == "body_not_utf8", (encoding, answer)
        assert answer["error"]["hint"].startswith("encode the body as UTF-8")
