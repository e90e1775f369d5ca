"""No error answer carries a server path, SQL or exception text, whatever raised it: bugs in a
route or a dependency, database errors, library errors whose message embeds such text, HTTP
and validation errors, runs failed with such text, and stored files found corrupted."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi import HTTPException
from fastapi.testclient import TestClient
from pydantic import BaseModel, field_validator

from cellfoundry.config import Settings
from cellfoundry.errors import CellfoundryError, DataError
from cellfoundry.jobs.engine import Engine
from cellfoundry.service.app import create_app
from cellfoundry.service.deps import get_session
from cellfoundry.store.tables import Run
from tests.service.conftest import state_with_model
from tests.service.test_shard_cleanup import _csv

ELSEWHERE = "/opt-data/cellfoundry-secrets/db/users.sqlite"  # a server path under no usual top
SQL = "SELECT key_hash FROM api_keys WHERE id = %(id)s"


def _assert_clean(r: httpx.Response, home: Path) -> dict[str, str]:
    """The one error body, every field filled, and nothing internal in it."""
    assert r.status_code >= 400, r.text
    err = r.json()["error"]
    assert set(err) == {"code", "message", "hint", "request_id"}, err
    assert all(isinstance(err[k], str) and err[k] for k in err), err
    assert err["request_id"] == r.headers["x-request-id"]
    text = r.text
    for part in (
        str(home),
        *(f"/{p}/" for p in home.parts[1:]),
        "/opt-data/",
        "/cellfoundry-secrets",
    ):
        assert part not in text, (part, text)
    assert "Traceback" not in text and 'File "' not in text, text
    assert not re.search(r"\b(SELECT|FROM api_keys|\[SQL|psycopg|sqlalchemy)\b", text), text
    assert not re.search(r"\b[A-Z]\w*(Error|Exception)\b", text), text
    return err  # type: ignore[no-any-return]


class Body(BaseModel):
    name: str

    @field_validator("name")
    @classmethod
    def _exists(cls, v: str) -> str:
        raise ValueError(f"no file {ELSEWHERE} for {v!r}")


@pytest.fixture
def served(
    tmp_path: Path, demo_model_dir: Path
) -> Iterator[tuple[TestClient, dict[str, str], Settings]]:
    settings = Settings(
        home=tmp_path / "srv-home", demo_model=False, web_dir=tmp_path / "no-web", reaper_s=3600
    )
    key = state_with_model(settings, demo_model_dir)
    app = create_app(settings)
    home, storage = settings.home, settings.storage
    raised: dict[str, Exception] = {
        "bug": RuntimeError(f"{SQL} at {home}/x"),
        "oserror": FileNotFoundError(2, "No such file", str(storage / "runs" / "r" / "p.npy")),
        "sql": sa.exc.ProgrammingError(SQL, {"id": "k"}, Exception(f"relation at {ELSEWHERE}")),
        "data": DataError(
            f"cannot read {storage}/datasets/u/ab/cells.h5ad or {ELSEWHERE}",
            f"re-export {home}/cells.h5ad",
        ),
        "wrapped-sql": CellfoundryError(
            f"lookup failed: (psycopg.errors.UndefinedTable) [SQL: {SQL}]", "try again"
        ),
        "wrapped-repr": CellfoundryError(f"bad value: {KeyError('secret')!r}", code="bad_value"),
        "http": HTTPException(400, f"cannot use {home}/tmp/a.part"),
    }

    def raiser(exc: Exception) -> Callable[[], None]:
        def route() -> None:
            raise exc

        return route

    for name, exc in raised.items():
        app.add_api_route(f"/boom/{name}", raiser(exc), include_in_schema=False)

    @app.post("/boom/validation", include_in_schema=False)
    def validation(body: Body) -> None:
        return None

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, {"Authorization": f"Bearer {key}"}, settings


@pytest.mark.parametrize(
    "name,status",
    [
        ("bug", 500),
        ("oserror", 500),
        ("sql", 500),
        ("data", 422),
        ("wrapped-sql", 422),
        ("wrapped-repr", 422),
        ("http", 400),
    ],
)
def test_errors_raised_in_routes_reach_the_client_clean(
    served: tuple[TestClient, dict[str, str], Settings], name: str, status: int
) -> None:
    c, _, settings = served
    r = c.get(f"/boom/{name}")
    assert r.status_code == status
    err = _assert_clean(r, settings.home)
    if name == "data":  # a library error keeps what to fix, with the file names only
        assert err["message"] == "cannot read cells.h5ad or users.sqlite"
        assert err["hint"] == "re-export cells.h5ad"
    if name.startswith("wrapped"):  # its code stays; the request id leads to the details
        assert err["request_id"] in err["hint"]


def test_validation_and_dependency_failures_reach_the_client_clean(
    served: tuple[TestClient, dict[str, str], Settings],
) -> None:
    c, auth, settings = served
    r = c.post("/boom/validation", json={"name": "x"})
    assert r.status_code == 422
    assert "name" in _assert_clean(r, settings.home)["message"]

    def broken_session() -> Iterator[None]:
        raise sa.exc.OperationalError(
            SQL, {}, Exception(f'could not connect: socket "{ELSEWHERE}"')
        )
        yield None

    c.app.dependency_overrides[get_session] = broken_session  # type: ignore[attr-defined]
    try:
        r = c.get("/runs", headers=auth)
        assert r.status_code == 500
        _assert_clean(r, settings.home)
    finally:
        c.app.dependency_overrides.clear()  # type: ignore[attr-defined]
    assert c.get("/runs", headers=auth).status_code == 200
    for r in (
        c.get("/runs/r_nope/nothing", headers=auth),  # 404 from routing
        c.delete("/applications"),  # 405
        c.get("/runs"),  # 401
        c.get("/runs?page=0", headers=auth),  # 422 from a query parameter
    ):
        _assert_clean(r, settings.home)


def test_runs_failed_with_internal_text_and_corrupted_result_files_answer_clean(
    served: tuple[TestClient, dict[str, str], Settings], demo_model_dir: Path
) -> None:
    c, auth, settings = served
    ds = c.post("/upload", files={"file": ("a.csv", _csv(demo_model_dir))}, headers=auth)
    body = {"dataset_id": ds.json()["id"], "model_id": c.get("/models").json()[0]["id"]}
    body["params"] = {"layout": "none"}  # type: ignore[assignment]
    ids = [c.post("/submit", json=body, headers=auth).json()["run_id"] for _ in range(2)]
    laid = c.post("/submit", json={**body, "params": {"layout": "pca"}}, headers=auth)
    db = c.app.state.platform.db  # type: ignore[attr-defined]
    engine = Engine(settings, "local", db)
    for rid in (ids[0], laid.json()["run_id"]):
        assert engine.execute_run(rid) == "sharded"
        assert engine.execute_shard(rid, 0) == "succeeded"
    # a damaged layout file: the results and the layout view say so (the layout alone is read)
    layout = next((settings.storage / "runs" / laid.json()["run_id"]).glob("layout*.parquet"))
    layout.write_bytes(layout.read_bytes()[: layout.stat().st_size // 2])
    for path in (f"/results/{laid.json()['run_id']}", f"/runs/{laid.json()['run_id']}/layout"):
        r = c.get(path, headers=auth)
        assert r.status_code == 500, (path, r.status_code)
        err = _assert_clean(r, settings.home)
        assert err["code"] == "result_file_damaged" and "submit the run again" in err["hint"]
    run_dir = settings.storage / "runs" / ids[0]
    (run_dir / "predictions.parquet").write_bytes(b"PAR1 this is not parquet " * 40)
    (run_dir / "probabilities.npy").write_bytes(b"\x93NUMPY garbage")
    for path in (
        f"/results/{ids[0]}",
        f"/results/{ids[0]}/cells/0",
        f"/download/{ids[0]}",
        f"/download/{ids[0]}?format=csv",  # said before any byte is streamed
        f"/download/{ids[0]}?format=parquet",
    ):
        r = c.get(path, headers=auth)
        assert r.status_code == 500, (path, r.status_code)
        err = _assert_clean(r, settings.home)
        assert err["code"] == "result_file_damaged", (path, err)
        assert "submit the run again" in err["hint"] and ids[0] in err["message"]
    (run_dir / "predictions.parquet").unlink()  # a missing stored file
    for path in (f"/results/{ids[0]}", f"/download/{ids[0]}?format=parquet"):
        err = _assert_clean(c.get(path, headers=auth), settings.home)
        assert err["code"] == "result_file_missing" and "submit the run again" in err["hint"]
    with db.session() as s:  # a failure reason stored with internal text (an older version)
        s.execute(
            sa.update(Run)
            .where(Run.id == ids[1])
            .values(
                state="failed",
                error_code="internal_error",
                error_message=f"KeyError: 'x' in {ELSEWHERE}",
                error_hint=f"see {settings.home}/logs and GET /runs/{ids[1]}",
            )
        )
    st = c.get(f"/status/{ids[1]}", headers=auth)
    assert st.status_code == 200 and st.json()["error"]["code"] == "internal_error"
    text = st.text
    assert str(settings.home) not in text and "/opt-data/" not in text and "KeyError" not in text


def test_predict_answers_carry_the_request_id_and_its_failures_reach_the_client_clean(
    served: tuple[TestClient, dict[str, str], Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """/predict is answered before the framework's middleware: the request id, the error body
    and the 500 answer are still those of every other endpoint."""
    c, auth, settings = served
    body = {"expression": {"CD3D": 4.0, "LTB": 9.0, "IL7R": 2.0}, "top_k": 2}
    ok = c.post("/predict", json=body, headers={**auth, "X-Request-ID": "req-42"})
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "req-42"
    assert len(ok.json()["predictions"][0]["top_k"]) == 2
    assert len(c.post("/predict", json=body, headers=auth).headers["x-request-id"]) == 32
    for r, status in (
        (c.post("/predict", json=body), 401),
        (c.post("/predict", json={"expression": {"CD3D": "x"}}, headers=auth), 422),
        (c.post("/predict", json={**body, "model_id": "nope"}, headers=auth), 404),
    ):
        assert r.status_code == status
        _assert_clean(r, settings.home)
    loaded = next(iter(c.app.state.platform.predictor.models.values()))  # type: ignore[attr-defined]

    def broken(*_: object) -> None:
        raise RuntimeError(f"{SQL} at {settings.home}/models/w.safetensors")

    monkeypatch.setattr(loaded.annotator, "logits_or_proba", broken)
    r = c.post("/predict", json=body, headers=auth)
    assert r.status_code == 500
    assert _assert_clean(r, settings.home)["code"] == "internal_error"
