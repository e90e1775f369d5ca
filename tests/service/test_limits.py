"""Quotas per user (active runs, stored upload bytes) and the /predict rate limit per key."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cellfoundry.config import Settings
from cellfoundry.service.app import create_app
from cellfoundry.service.ratelimit import SharedBuckets, TokenBuckets, make_limiter
from cellfoundry.store.db import Database, migrate
from cellfoundry.store.keys import create_key
from cellfoundry.store.model_records import register_model
from cellfoundry.store.storage import FileStorage

CSV = "cell,CD3D,CD3E,MS4A1,LYZ,NKG7\nc1,1,2,0,9,0\nc2,0,0,5,1,3\nc3,4,0,0,2,1\n"


def _platform(tmp_path: Path, demo_model_dir: Path, **over: object) -> tuple[Settings, list[str]]:
    """A state folder with the demo model registered and two users' keys."""
    settings = Settings(home=tmp_path / "home", demo_model=False, **over)  # type: ignore[arg-type]
    migrate(settings.database_url)
    db = Database(settings.database_url)
    with db.session() as s:
        register_model(s, FileStorage(settings.storage), demo_model_dir)
        keys = [create_key(s, name)[1] for name in ("alice", "bob")]
    db.dispose()
    return settings, keys


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _upload(c: TestClient, key: str, text: str, name: str = "cells.csv") -> object:
    return c.post("/upload", files={"file": (name, text.encode())}, headers=_auth(key))


def test_upload_bytes_quota_per_user(tmp_path: Path, demo_model_dir: Path) -> None:
    quota = 2.5 * len(CSV)  # room for two small files, not three
    settings, (alice, bob) = _platform(tmp_path, demo_model_dir, upload_quota_mb=quota / 2**20)
    with TestClient(create_app(settings)) as c:
        assert _upload(c, alice, CSV).status_code == 200  # type: ignore[attr-defined]
        assert _upload(c, alice, CSV + "c4,1,1,1,1,1\n").status_code == 200  # type: ignore[attr-defined]
        r = _upload(c, alice, CSV + "c5,2,2,2,2,2\n")
        assert r.status_code == 413, r.text  # type: ignore[attr-defined]
        err = r.json()["error"]  # type: ignore[attr-defined]
        assert err["code"] == "upload_quota_exceeded" and "DELETE /datasets" in err["hint"]
        assert len(c.get("/datasets", headers=_auth(alice)).json()) == 2
        assert _upload(c, bob, CSV + "c5,2,2,2,2,2\n").status_code == 200  # type: ignore[attr-defined]
        assert not list((settings.storage / "tmp").glob("*.part"))


def test_active_runs_quota_per_user(tmp_path: Path, demo_model_dir: Path) -> None:
    settings, (alice, bob) = _platform(tmp_path, demo_model_dir, max_active_runs_per_user=2)
    with TestClient(create_app(settings)) as c:  # no workers: submitted runs stay queued
        ds = _upload(c, alice, CSV).json()["id"]  # type: ignore[attr-defined]
        mid = c.get("/models").json()[0]["id"]
        body = {"dataset_id": ds, "model_id": mid, "params": {"min_coverage": 0}}
        ids = [
            c.post("/submit", json=body, headers=_auth(alice)).json()["run_id"] for _ in range(2)
        ]
        r = c.post("/submit", json=body, headers=_auth(alice))
        assert r.status_code == 429, r.text
        assert (
            r.json()["error"]["code"] == "run_quota_exceeded"
            and "cancel" in r.json()["error"]["hint"]
        )
        assert c.get("/runs", headers=_auth(alice)).json()["total"] == 2
        c.post(f"/runs/{ids[0]}/cancel", headers=_auth(alice))
        assert c.post("/submit", json=body, headers=_auth(alice)).status_code == 201
        ds_b = _upload(c, bob, CSV).json()["id"]  # type: ignore[attr-defined]
        body_b = {**body, "dataset_id": ds_b}
        assert c.post("/submit", json=body_b, headers=_auth(bob)).status_code == 201


def test_predict_rate_limit_per_key_answers_429_with_retry_after(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    settings, (alice, bob) = _platform(
        tmp_path, demo_model_dir, predict_rate_per_s=0.5, predict_burst=3
    )
    cell = {"expression": {"CD3D": 5.0, "CD3E": 4.0, "LYZ": 1.0}}
    with TestClient(create_app(settings)) as c:
        codes = [c.post("/predict", json=cell, headers=_auth(alice)).status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        r = c.post("/predict", json=cell, headers=_auth(alice))
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "rate_limited" and r.json()["error"]["hint"]
        assert 1 <= int(r.headers["Retry-After"]) <= 2  # one token every 2 s
        assert c.post("/predict", json=cell, headers=_auth(bob)).status_code == 200  # per key
        assert "429" in c.get("/openapi.json").json()["paths"]["/predict"]["post"]["responses"]


@pytest.mark.parametrize("shared", [False, True], ids=["process", "shared-file"])
def test_token_bucket_refills_at_the_rate(shared: bool, tmp_path: Path) -> None:
    b: TokenBuckets | SharedBuckets = (
        SharedBuckets(tmp_path / "rl.bin", rate_per_s=10, burst=2)
        if shared
        else TokenBuckets(rate_per_s=10, burst=2)
    )
    assert b.take("k", now=0.0) == 0 and b.take("k", now=0.0) == 0
    assert b.take("k", now=0.0) == pytest.approx(0.1)
    assert b.take("k", now=0.05) == pytest.approx(0.05)
    assert b.take("k", now=0.1) == 0  # one token back after 1/rate s
    assert b.take("k", now=10.0) == 0 and b.take("k", now=10.0) == 0  # never above the burst
    assert b.take("k", now=10.0) > 0


def test_default_rate_leaves_room_for_5000_requests_per_second_from_one_key(
    tmp_path: Path,
) -> None:
    s = Settings(home=tmp_path, demo_model=False)
    b = make_limiter(s)
    assert isinstance(b, SharedBuckets)  # the default: shared by the host's API processes
    refused = sum(b.take("k", now=i / 5_000) > 0 for i in range(5 * 5_000))  # 5 s at 5,000/s
    assert refused == 0
