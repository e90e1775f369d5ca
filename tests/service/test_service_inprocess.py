"""In-process checks of the app factory: the web UI with SPA fallback, settings, the keys CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from cellfoundry.config import Settings
from cellfoundry.service.app import create_app


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    web = tmp_path / "web"
    (web / "assets").mkdir(parents=True)
    (web / "index.html").write_text("<html>cellfoundry ui</html>")
    (web / "assets" / "app.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("do not serve")
    return Settings(home=tmp_path / "home", web_dir=web, demo_model=False)


def test_web_ui_is_served_with_spa_fallback_and_api_first(settings: Settings) -> None:
    with TestClient(create_app(settings)) as c:
        assert c.get("/").text == "<html>cellfoundry ui</html>"
        assert c.get("/assets/app.js").text == "console.log(1)"
        assert c.get("/runs/r_1/details").status_code == 404  # API namespace: JSON 404, not the UI
        assert c.get("/some/client/route").text == "<html>cellfoundry ui</html>"
        assert "do not serve" not in c.get("/../secret.txt").text
        assert "do not serve" not in c.get("/%2e%2e/secret.txt").text
        assert c.get("/health").json() == {"status": "ok"}  # details need a key
        assert c.get("/applications").status_code == 200
        assert c.get("/runs").json()["error"]["code"] == "unauthorized"


def test_settings_defaults_follow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELLFOUNDRY_HOME", str(tmp_path))
    monkeypatch.setenv("CELLFOUNDRY_PRELOAD_MODELS", '["a", "b"]')
    monkeypatch.setenv("CELLFOUNDRY_QUEUE_BACKEND", "celery")
    s = Settings()  # type: ignore[call-arg]
    assert s.database_url == f"sqlite:///{tmp_path / 'cellfoundry.db'}"
    assert s.storage == tmp_path / "storage" and s.preload_models == ["a", "b"]
    assert s.queue_backend == "celery"
    monkeypatch.setenv("CELLFOUNDRY_QUEUE_BACKEND", "kafka")
    with pytest.raises(ValueError):
        Settings()  # type: ignore[call-arg]


def test_keys_create_prints_the_key_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cellfoundry.cli import cli

    monkeypatch.setenv("CELLFOUNDRY_HOME", str(tmp_path))
    out = CliRunner().invoke(cli, ["keys", "create", "alice"])
    assert out.exit_code == 0, out.output
    assert re.fullmatch(r"cf_[0-9a-f]{12}_[A-Za-z0-9_-]{40,}\n", out.stdout)
    listing = CliRunner().invoke(cli, ["keys", "list"])
    assert "alice" in listing.stdout and out.stdout.strip() not in listing.stdout
    key_id = out.stdout.split("_")[1]
    assert CliRunner().invoke(cli, ["keys", "revoke", key_id]).exit_code == 0
    assert "revoked" in CliRunner().invoke(cli, ["keys", "list"]).stdout


def test_an_upload_named_in_another_script_keeps_its_name(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    from tests.service.conftest import state_with_model

    settings = Settings(home=tmp_path / "home", demo_model=False)
    key = state_with_model(settings, demo_model_dir)
    genes = ",".join(f"G{i}" for i in range(60))
    csv = f"cell,{genes}\n" + "".join(f"c{j}," + ",".join("1" * 60) + "\n" for j in range(3))
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as c:
        r = c.post("/upload", files={"file": ("日本語データ.csv", csv.encode(), "text/csv")})
        assert r.status_code == 200, r.text  # was 415 unsupported_type: the name became 'csv'
        assert r.json()["filename"] == "日本語データ.csv" and r.json()["n_cells"] == 3
        assert [d["filename"] for d in c.get("/datasets").json()] == ["日本語データ.csv"]
