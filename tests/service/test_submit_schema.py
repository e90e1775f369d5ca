"""/submit's body schema (one ``oneOf`` variant per application) is built when an app makes its
OpenAPI document, not at import: an application registered later is in the next app's schema."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from fastapi.testclient import TestClient

from cellfoundry.config import Settings
from cellfoundry.jobs.applications import APPLICATIONS, register_application
from cellfoundry.service.app import create_app


def _variants(tmp_path: Path, name: str) -> list[str]:
    settings = Settings(home=tmp_path / name, demo_model=False, web_dir=tmp_path / "no-web")
    with TestClient(create_app(settings)) as c:
        schema = c.get("/openapi.json").json()["components"]["schemas"]["SubmitCreate"]
        apps = [a["id"] for a in c.get("/applications").json()]
    titles = [v["title"] for v in schema["oneOf"]]
    assert titles == [f"submit {a}" for a in apps]  # the same registry as GET /applications
    return titles


def test_an_application_registered_after_import_is_in_the_submit_schema(tmp_path: Path) -> None:
    before = _variants(tmp_path, "a")
    assert "submit late-app" not in before
    register_application(replace(APPLICATIONS["annotation"], id="late-app", name="Late"))
    try:
        assert _variants(tmp_path, "b") == [*before, "submit late-app"]
    finally:
        APPLICATIONS.pop("late-app", None)
