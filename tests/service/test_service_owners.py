"""Owners: datasets stored per owner, private models, and deletion, on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import sqlalchemy as sa
from fastapi.testclient import TestClient

from cellfoundry.config import Settings
from cellfoundry.service.app import create_app
from cellfoundry.store.db import Database, migrate
from cellfoundry.store.keys import create_key
from cellfoundry.store.model_records import register_model
from cellfoundry.store.tables import Dataset, ModelRecord, User
from tests.service.test_service_layout import _drain

DEMO = "demo"
PRIVATE = "alice-ft"


@dataclass
class World:
    settings: Settings
    app_client: TestClient
    alice: dict[str, str]
    bob: dict[str, str]
    alice_id: str
    db: Database

    def get(self, path: str, who: dict[str, str] | None = None) -> object:
        return self.app_client.get(path, headers=who or {})


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path, demo_model_dir: Path) -> Iterator[World]:
    url = (
        f"sqlite:///{tmp_path / 'db.sqlite'}"
        if request.param == "sqlite"
        else str(request.getfixturevalue("pg_database")())
    )
    settings = Settings(
        home=tmp_path / "home", database_url=url, demo_model=False, web_dir=None, shard_size=100
    )
    app = create_app(settings)
    platform = app.state.platform
    with platform.db.session() as s:
        register_model(s, platform.storage, demo_model_dir, model_id=DEMO)
        _, ka = create_key(s, "alice")
        _, kb = create_key(s, "bob")
        alice_id = s.scalar(sa.select(User.id).where(User.name == "alice"))
        assert alice_id
        register_model(s, platform.storage, demo_model_dir, model_id=PRIVATE, owner_id=alice_id)
    with TestClient(app) as c:
        yield World(
            settings,
            c,
            {"Authorization": f"Bearer {ka}"},
            {"Authorization": f"Bearer {kb}"},
            alice_id,
            platform.db,
        )


@pytest.fixture(scope="module")
def small_h5ad(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Path:
    genes = (demo_model_dir / "genes.txt").read_text().split()
    rng = np.random.default_rng(7)
    x = rng.poisson(rng.gamma(0.5, 1.0, len(genes)), size=(150, len(genes))).astype(np.float32)
    a = ad.AnnData(
        X=sp.csr_matrix(x),
        obs=pd.DataFrame(index=[f"c{i}" for i in range(150)]),
        var=pd.DataFrame(index=genes),
    )
    path = tmp_path_factory.mktemp("owners") / "cells.h5ad"
    a.write_h5ad(path)
    return path


def _upload(w: World, who: dict[str, str], path: Path, name: str) -> object:
    return w.app_client.post(
        "/upload",
        files={"file": (name, path.read_bytes(), "application/octet-stream")},
        headers=who,
    )


def _stored(w: World, dataset_id: str) -> Path:
    with w.db.session() as s:
        d = s.get(Dataset, dataset_id)
        assert d is not None
        return w.settings.storage / d.path


def _submit(w: World, who: dict[str, str], ds: str, model: str = DEMO) -> object:
    return w.app_client.post(
        "/submit",
        json={"dataset_id": ds, "model_id": model, "params": {"layout": "none"}},
        headers=who,
    )


def test_a_failed_upload_of_the_same_bytes_cannot_delete_another_owners_file(
    world: World, small_h5ad: Path
) -> None:
    w = world
    a = _upload(w, w.alice, small_h5ad, "cells.h5ad")
    assert a.status_code == 200, a.text  # type: ignore[attr-defined]
    a_id = a.json()["id"]  # type: ignore[attr-defined]
    a_file = _stored(w, a_id)
    before = a_file.read_bytes()
    # the reported attack: bob sends alice's bytes under a .csv name, which fails validation
    r = _upload(w, w.bob, small_h5ad, "cells.csv")
    assert 400 <= r.status_code < 500 and r.json()["error"]["hint"]  # type: ignore[attr-defined]
    assert a_file.is_file() and a_file.read_bytes() == before
    # bob's copy of the same bytes is his own dataset in his own folder
    b = _upload(w, w.bob, small_h5ad, "cells.h5ad").json()  # type: ignore[attr-defined]
    assert b["id"] != a_id and not b["duplicate"]
    b_file = _stored(w, b["id"])
    assert b_file.parent != a_file.parent and b_file.read_bytes() == before
    # deleting bob's dataset leaves alice's file, and alice's next run succeeds
    assert w.app_client.delete(f"/datasets/{b['id']}", headers=w.bob).status_code == 204
    assert not b_file.exists() and a_file.read_bytes() == before
    rid = _submit(w, w.alice, a_id).json()["run_id"]  # type: ignore[attr-defined]
    _drain(w.settings)
    st = w.get(f"/status/{rid}", w.alice).json()  # type: ignore[attr-defined]
    assert st["state"] == "succeeded", st


def test_private_models_are_seen_and_used_by_their_owner_only(
    world: World, small_h5ad: Path
) -> None:
    w = world

    def ids(who: dict[str, str] | None, path: str = "/models") -> set[str]:
        r = w.get(path, who)
        assert r.status_code == 200, r.text  # type: ignore[attr-defined]
        return {m["id"] for m in r.json()}  # type: ignore[attr-defined]

    assert ids(None) == {DEMO} and ids(w.bob) == {DEMO} and ids(w.alice) == {DEMO, PRIVATE}
    assert ids(None, "/applications/annotation/models") == {DEMO}
    assert ids(w.alice, "/applications/annotation/models") == {DEMO, PRIVATE}
    bad = w.get("/models", {"Authorization": "Bearer cf_0000_nope"})
    assert bad.status_code == 401  # type: ignore[attr-defined]
    # /submit
    ds_b = _upload(w, w.bob, small_h5ad, "cells.h5ad").json()["id"]  # type: ignore[attr-defined]
    r = _submit(w, w.bob, ds_b, PRIVATE)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"  # type: ignore[attr-defined]
    ds_a = _upload(w, w.alice, small_h5ad, "cells.h5ad").json()["id"]  # type: ignore[attr-defined]
    assert _submit(w, w.alice, ds_a, PRIVATE).status_code == 201  # type: ignore[attr-defined]
    # /predict: preloaded private model, a private model loaded on demand, and the default model
    genes = (Path(w.settings.storage) / "models" / DEMO / "genes.txt").read_text().split()[:40]
    cell = {g: float(i % 7) for i, g in enumerate(genes)}
    with w.db.session() as s:
        platform_storage = w.app_client.app.state.platform.storage  # type: ignore[attr-defined]
        register_model(
            s,
            platform_storage,
            Path(w.settings.storage) / "models" / DEMO,
            model_id="alice-late",
            owner_id=w.alice_id,
        )
    for model in (PRIVATE, "alice-late"):
        r = w.app_client.post(
            "/predict", json={"expression": cell, "model_id": model}, headers=w.bob
        )
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", r.text
        r = w.app_client.post(
            "/predict", json={"expression": cell, "model_id": model}, headers=w.alice
        )
        assert r.status_code == 200 and r.json()["model_id"] == model, r.text
    r = w.app_client.post("/predict", json={"expression": cell}, headers=w.bob)
    assert r.status_code == 200 and r.json()["model_id"] == DEMO


def test_delete_endpoints_remove_rows_and_files_and_hide_other_owners_ids(
    world: World, small_h5ad: Path
) -> None:
    w = world
    c = w.app_client
    ds = _upload(w, w.alice, small_h5ad, "cells.h5ad").json()["id"]  # type: ignore[attr-defined]
    ds_file = _stored(w, ds)
    rid = _submit(w, w.alice, ds).json()["run_id"]  # type: ignore[attr-defined]
    # a queued run blocks deleting its dataset and itself
    r = c.delete(f"/datasets/{ds}", headers=w.alice)
    assert r.status_code == 409 and r.json()["error"]["code"] == "active_runs"
    assert c.delete(f"/runs/{rid}", headers=w.alice).status_code == 409
    _drain(w.settings)
    assert w.get(f"/status/{rid}", w.alice).json()["state"] == "succeeded"  # type: ignore[attr-defined]
    run_dir = w.settings.storage / "runs" / rid
    assert any(run_dir.iterdir())
    # the run produced a (fine-tuned) model: its folder inside the run folder must survive
    with w.db.session() as s:
        shutil.copytree(w.settings.storage / "models" / DEMO, run_dir / "model")
        register_model(
            s,
            c.app.state.platform.storage,  # type: ignore[attr-defined]
            run_dir / "model",
            model_id="from-run",
            owner_id=w.alice_id,
            source_run_id=rid,
            copy=False,
        )
    # other owners get 404 for every id, exactly as for ids that do not exist
    for path in (f"/runs/{rid}", f"/datasets/{ds}", "/models/from-run", f"/models/{DEMO}"):
        for who in (w.bob, w.alice if path.endswith(DEMO) else w.bob):
            r = c.delete(path, headers=who)
            assert r.status_code == 404, (path, r.text)
        nothing = c.delete(path.rsplit("/", 1)[0] + "/does-not-exist", headers=w.bob)
        assert r.json()["error"]["code"] == nothing.json()["error"]["code"]
    assert c.delete(f"/runs/{rid}", headers={}).status_code == 401
    # the owner deletes the run: rows and files go, the model it produced stays usable
    assert c.delete(f"/runs/{rid}", headers=w.alice).status_code == 204
    assert w.get(f"/status/{rid}", w.alice).status_code == 404  # type: ignore[attr-defined]
    assert sorted(p.name for p in run_dir.iterdir()) == ["model"]
    cell = {g: 1.0 for g in (run_dir / "model" / "genes.txt").read_text().split()[:30]}
    r = c.post("/predict", json={"expression": cell, "model_id": "from-run"}, headers=w.alice)
    assert r.status_code == 200, r.text
    # the owner deletes the model: its folder goes, nobody can use or see it
    assert c.delete("/models/from-run", headers=w.alice).status_code == 204
    assert not (run_dir / "model").exists()
    assert "from-run" not in {m["id"] for m in w.get("/models", w.alice).json()}  # type: ignore[attr-defined]
    r = c.post("/predict", json={"expression": cell, "model_id": "from-run"}, headers=w.alice)
    assert r.status_code == 404
    # the owner deletes the dataset: row and file go
    assert c.delete(f"/datasets/{ds}", headers=w.alice).status_code == 204
    assert w.get(f"/datasets/{ds}", w.alice).status_code == 404  # type: ignore[attr-defined]
    assert not ds_file.exists()
    with w.db.session() as s:
        assert s.get(Dataset, ds) is None and s.get(ModelRecord, "from-run") is None
        assert s.get(ModelRecord, DEMO) is not None


def test_migration_makes_existing_owned_models_private(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    for url in (
        f"sqlite:///{tmp_path / 'm.sqlite'}",
        str(request.getfixturevalue("pg_database")()),
    ):
        migrate(url, "0002_leases")  # before the visibility migration
        eng = sa.create_engine(url)
        with eng.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO users (id, name, created_at) VALUES ('u1', 'u', :t)"),
                {"t": "2026-01-01"},
            )
            for mid, owner in (("admin", None), ("ft", "u1")):
                conn.execute(
                    sa.text(
                        "INSERT INTO models (id, name, family, path, size_bytes, n_genes, classes,"
                        " requirements, training_metrics, ready, status, owner_id, created_at)"
                        " VALUES (:id, :id, 'logreg', 'models/x', 1, 1, '[]', '{}', '{}', true,"
                        " 'ready', :owner, :t)"
                    ),
                    {"id": mid, "owner": owner, "t": "2026-01-01"},
                )
        migrate(url)
        with eng.connect() as conn:
            got = dict(conn.execute(sa.text("SELECT id, visibility FROM models")).all())  # type: ignore[arg-type]
        eng.dispose()
        assert got == {"admin": "public", "ft": "private"}
