"""Errors tell clients a code, a message, a hint and a request id; details stay in the log."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cellfoundry.config import Settings
from cellfoundry.service.app import create_app
from cellfoundry.store.keys import create_key
from cellfoundry.store.tables import Run

SECRET = "SELECT api_key FROM users -- at /srv/cellfoundry/secret/config.toml"


@pytest.fixture
def app_and_key(tmp_path: Path) -> Iterator[tuple[TestClient, str, Settings]]:
    # no web UI (a missing folder): its catch-all GET would answer the /boom route added below
    settings = Settings(home=tmp_path / "home", demo_model=False, web_dir=tmp_path / "no-web")
    app = create_app(settings)

    @app.get("/boom", include_in_schema=False)
    def boom() -> None:
        raise RuntimeError(SECRET)

    with TestClient(app, raise_server_exceptions=False) as c:
        with app.state.platform.db.session() as s:
            _, key = create_key(s, "alice")
        yield c, key, settings


def _no_leak(text: str, settings: Settings) -> None:
    assert "SELECT" not in text and "secret" not in text and "Traceback" not in text
    assert str(settings.home) not in text and str(settings.storage) not in text
    assert not re.search(r"/(tmp|home|root|srv|var)/", text), text


def test_unexpected_error_is_a_500_with_a_request_id_and_details_only_in_the_log(
    app_and_key: tuple[TestClient, str, Settings], caplog: pytest.LogCaptureFixture
) -> None:
    c, _, settings = app_and_key
    with caplog.at_level(logging.ERROR, logger="cellfoundry.service"):
        r = c.get("/boom")
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["code"] == "internal_error" and err["message"] and err["hint"]
    rid = err["request_id"]
    assert rid and r.headers["x-request-id"] == rid and rid in err["hint"]
    _no_leak(r.text, settings)
    logged = [rec for rec in caplog.records if rid in rec.getMessage()]
    assert logged and logged[0].exc_info is not None
    assert SECRET in str(logged[0].exc_info[1])


def test_request_ids_are_echoed_when_sane_and_made_otherwise(
    app_and_key: tuple[TestClient, str, Settings],
) -> None:
    c, key, _ = app_and_key
    r = c.get("/applications", headers={"X-Request-ID": "trace-42.a_b"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "trace-42.a_b"
    r = c.get("/runs", headers={"X-Request-ID": "trace-43"})  # no key: 401
    assert r.status_code == 401 and r.headers["x-request-id"] == "trace-43"
    assert r.json()["error"]["request_id"] == "trace-43"
    for bad in ("x" * 65, "a b", "<script>", "../etc"):
        r = c.get("/runs", headers={"X-Request-ID": bad})
        made = r.headers["x-request-id"]
        assert made != bad and re.fullmatch(r"[0-9a-f]{32}", made)
        assert r.json()["error"]["request_id"] == made
    a, b = c.get("/applications"), c.get("/applications")
    assert a.headers["x-request-id"] != b.headers["x-request-id"]
    # errors raised by routing (405) and validation (422) carry it too, and 405 says what is allowed
    r = c.delete("/applications")
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    r = c.put("/datasets/d_1")  # two routes share this path: Allow names both methods
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET"
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
    r = c.get("/datasets/a.b", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 422 and r.json()["error"]["request_id"] == r.headers["x-request-id"]


def test_an_unreadable_upload_says_what_to_fix_without_paths_or_exception_text(
    app_and_key: tuple[TestClient, str, Settings], caplog: pytest.LogCaptureFixture
) -> None:
    c, key, settings = app_and_key
    auth = {"Authorization": f"Bearer {key}"}
    for name, body in [
        ("junk.h5ad", b"this is not hdf5" * 100),
        ("junk.csv", b"\x00\x01\x02" * 500),
        ("junk.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 600),
    ]:
        with caplog.at_level(logging.INFO):
            r = c.post("/upload", files={"file": (name, body)}, headers=auth)
        assert r.status_code in (415, 422), r.text
        err = r.json()["error"]
        assert err["code"] and err["message"] and err["hint"] and err["request_id"]
        assert name in err["message"] or "file" in err["message"]
        _no_leak(r.text, settings)
        assert not re.search(r"\b[A-Z][a-z]+(Error|Exception)\b", err["message"]), err["message"]
    r = c.post(
        "/upload",
        content=b"--xx\r\nnot a header\r\n",
        headers={**auth, "Content-Type": "multipart/form-data; boundary=xx"},
    )
    assert r.status_code in (400, 422) and r.json()["error"]["hint"]
    _no_leak(r.text, settings)


def test_public_health_says_only_ok_or_degraded_details_need_a_key(
    app_and_key: tuple[TestClient, str, Settings],
) -> None:
    c, key, _ = app_and_key
    for headers in ({}, {"Authorization": "Bearer cf_0000_nope"}, {"Authorization": "Basic x"}):
        r = c.get("/health", headers=headers)
        assert r.status_code == 200 and r.json() == {"status": "ok"}, r.text
    full = c.get("/health", headers={"Authorization": f"Bearer {key}"}).json()
    assert full["status"] == "ok" and full["database"]["ok"] and full["queue"]["ok"]
    assert full["database"]["detail"] == "sqlite" and full["workers"] == []
    assert full["loaded_models"] == []


def test_run_failures_keep_exception_text_and_paths_out_of_the_status(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from cellfoundry.errors import DataError
    from cellfoundry.jobs.engine import Engine
    from cellfoundry.service.public import run_public
    from cellfoundry.store.db import Database, migrate
    from tests.service.test_store_db import _seed

    home = tmp_path / "state"
    url = f"sqlite:///{tmp_path / 'r.db'}"
    migrate(url)
    settings = Settings(home=home, database_url=url)
    db = Database(url)
    bug, bad_data = _seed(db, 2)
    e = Engine(settings, "local", db)
    with caplog.at_level(logging.ERROR, logger="cellfoundry.jobs"):
        try:
            raise KeyError(SECRET)
        except KeyError as exc:
            e.fail_with(bug, exc, f"run {bug}")
    e.fail_with(
        bad_data,
        DataError(
            f"cannot read {settings.storage}/datasets/ab/cells.h5ad: truncated",
            f"re-export {home}/x.h5ad",
        ),
        f"run {bad_data}",
    )
    with db.session() as s:
        failed = {r.id: run_public(r) for r in s.query(Run)}
    assert SECRET in caplog.text and bug in caplog.text  # the traceback went to the worker log
    for pub in failed.values():
        assert pub.state == "failed" and pub.error is not None
        text = pub.model_dump_json()
        _no_leak(text, settings)
    assert failed[bug].error is not None and failed[bug].error.code == "internal_error"
    err = failed[bad_data].error
    assert err is not None and err.message == "cannot read cells.h5ad: truncated"
    assert err.hint == "re-export x.h5ad"
    db.dispose()


def test_api_paths_answer_405_with_allow_when_the_web_ui_is_served(tmp_path: Path) -> None:
    """The web UI's catch-all GET must not turn a wrong method on an API path into a 404."""
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text("<!doctype html><title>cellfoundry</title>")
    settings = Settings(home=tmp_path / "home", demo_model=False, web_dir=web)
    with TestClient(create_app(settings)) as c:
        for path, allow in [("/predict", "POST"), ("/submit", "POST"), ("/upload", "POST")]:
            r = c.get(path)
            assert r.status_code == 405, (path, r.text)
            assert allow in r.headers["allow"].split(", ")
            assert r.json()["error"]["code"] == "method_not_allowed"
        assert c.get("/no-such-api-path/x").status_code == 200  # a UI route: the SPA's index
        assert c.get("/runs/abc/nothing-here").status_code == 404  # under an API prefix
        assert c.get("/").text.startswith("<!doctype html>")
