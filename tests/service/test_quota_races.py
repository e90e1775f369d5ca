"""The per-user quotas hold under concurrent requests: racing submits and uploads of one user
never take them past the limit (PostgreSQL row lock, SQLite write lock)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from cellfoundry.config import Settings
from cellfoundry.service.app import create_app
from cellfoundry.store.tables import Dataset, Run, RunState
from tests.service.conftest import state_with_model

CSV = "cell,CD3D,CD3E,MS4A1,LYZ,NKG7\nc1,1,2,0,9,0\nc2,0,0,5,1,3\nc3,4,0,0,2,1\n"


@pytest.fixture(params=["postgres", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_database")())
    return f"sqlite:///{tmp_path / 'race.db'}"


def _settings(tmp_path: Path, url: str, demo_model_dir: Path, **over: Any) -> tuple[Settings, str]:
    settings = Settings(
        home=tmp_path / "home",
        database_url=url,
        demo_model=False,
        web_dir=tmp_path / "no-web",
        **over,
    )
    return settings, state_with_model(settings, demo_model_dir)


def _all_at_once(n: int, call: Callable[[int], httpx.Response]) -> list[httpx.Response]:
    """``call(i)`` from ``n`` threads released together (a barrier), their answers in order."""
    barrier = threading.Barrier(n)
    out: list[httpx.Response | None] = [None] * n

    def one(i: int) -> None:
        barrier.wait()
        out[i] = call(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(r is not None for r in out)
    return [r for r in out if r is not None]


def test_concurrent_submits_never_exceed_the_active_runs_quota(
    tmp_path: Path, database_url: str, demo_model_dir: Path
) -> None:
    limit, n = 3, 12
    settings, key = _settings(
        tmp_path, database_url, demo_model_dir, max_active_runs_per_user=limit
    )
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings)) as c:  # no workers: submitted runs stay queued
        ds = c.post("/upload", files={"file": ("a.csv", CSV.encode())}, headers=auth).json()["id"]
        body = {"dataset_id": ds, "model_id": c.get("/models").json()[0]["id"]}
        db = c.app.state.platform.db  # type: ignore[attr-defined]
        for round_ in range(3):  # a few rounds, each from an empty quota
            answers = _all_at_once(n, lambda _: c.post("/submit", json=body, headers=auth))
            codes = Counter(r.status_code for r in answers)
            assert codes == {201: limit, 429: n - limit}, (round_, codes)
            for r in answers:
                if r.status_code == 429:
                    assert r.json()["error"]["code"] == "run_quota_exceeded"
            with db.session() as s:
                active = s.scalar(
                    select(func.count()).select_from(Run).where(Run.state == RunState.QUEUED)
                )
            assert active == limit
            for r in answers:
                if r.status_code == 201:
                    c.post(f"/runs/{r.json()['run_id']}/cancel", headers=auth)


def test_concurrent_uploads_never_exceed_the_upload_quota(
    tmp_path: Path, database_url: str, demo_model_dir: Path
) -> None:
    files = [(CSV + f"c9,{i},1,1,1,1\n").encode() for i in range(6)]
    quota = 2.5 * len(files[0])  # room for two of them
    settings, key = _settings(tmp_path, database_url, demo_model_dir, upload_quota_mb=quota / 2**20)
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings)) as c:
        answers = _all_at_once(
            len(files),
            lambda i: c.post("/upload", files={"file": (f"f{i}.csv", files[i])}, headers=auth),
        )
        codes = Counter(r.status_code for r in answers)
        assert codes == {200: 2, 413: len(files) - 2}, [r.text for r in answers]
        db = c.app.state.platform.db  # type: ignore[attr-defined]
        with db.session() as s:
            stored = s.scalar(select(func.sum(Dataset.size_bytes)))
        assert stored is not None and stored <= quota
        kept = {p.name for p in settings.storage.glob("datasets/*/*/*") if p.is_file()}
        assert kept == {f"f{i}.csv" for i, r in enumerate(answers) if r.status_code == 200}
