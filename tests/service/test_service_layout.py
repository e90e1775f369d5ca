"""The layout block of GET /results: per-point confidence and top 3, and the dataset's obs columns.

In process (SQLite, local queue) with the local worker loop driven by the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from fastapi.testclient import TestClient

from cellfoundry.config import Settings
from cellfoundry.jobs.applications import MAX_OBS_CATEGORIES
from cellfoundry.jobs.engine import Engine
from cellfoundry.service.app import create_app
from cellfoundry.service.platform import Platform
from cellfoundry.store.keys import create_key
from cellfoundry.store.model_records import register_model

N = 260


@pytest.fixture
def dataset(tmp_path: Path, demo_model_dir: Path) -> ad.AnnData:
    genes = (demo_model_dir / "genes.txt").read_text().split()
    rng = np.random.default_rng(3)
    x = rng.poisson(rng.gamma(0.5, 1.0, len(genes)), size=(N, len(genes))).astype(np.float32)
    a = ad.AnnData(
        X=sp.csr_matrix(x),
        obs=pd.DataFrame(index=[f"cell{i}" for i in range(N)]),
        var=pd.DataFrame(index=genes),
    )
    a.obs["group"] = pd.Categorical(rng.choice(["a", "b", "c"], N))
    donor = rng.choice(["d1", "d2"], N).astype(object)
    donor[5] = None
    a.obs["donor"] = donor
    a.obs["barcode_like"] = [f"u{i}" for i in range(N)]  # > MAX_OBS_CATEGORIES distinct: left out
    a.obs["score"] = rng.normal(size=N)  # numeric: left out
    return a


def _drain(settings: Settings) -> None:
    eng = Engine(settings, "local")
    try:
        while (work := eng.next_local_work()) is not None:
            kind, run_id, idx = work
            if kind == "shard":
                eng.execute_shard_claimed(run_id, idx)
            else:
                eng.execute_claimed(run_id)
    finally:
        eng.stop()
        eng.db.dispose()


def _run(c: TestClient, settings: Settings, ds: str, model: str, app: str, params: Any) -> str:
    r = c.post(
        "/submit",
        json={"dataset_id": ds, "model_id": model, "application_id": app, "params": params},
    )
    assert r.status_code == 201, r.text
    rid = str(r.json()["run_id"])
    _drain(settings)
    st = c.get(f"/status/{rid}").json()
    assert st["state"] == "succeeded", st
    return rid


@contextmanager
def uploaded(
    settings: Settings, model_dir: Path, path: Path
) -> Iterator[tuple[TestClient, Platform, str, str]]:
    """An in-process app with ``model_dir`` registered and ``path`` uploaded by a keyed user:
    (client with the key, platform, model id, dataset id)."""
    app = create_app(settings)
    with TestClient(app) as c:
        platform = app.state.platform
        with platform.db.session() as s:
            model = register_model(s, platform.storage, model_dir).id
            _, key = create_key(s, "tester")
        c.headers["Authorization"] = f"Bearer {key}"
        with open(path, "rb") as fh:
            r = c.post("/upload", files={"file": (path.name, fh)})
        assert r.status_code in (200, 201), r.text
        yield c, platform, model, r.json()["id"]


def test_layout_carries_confidence_top3_and_obs(
    tmp_path: Path, demo_model_dir: Path, dataset: ad.AnnData
) -> None:
    assert N > MAX_OBS_CATEGORIES
    path = tmp_path / "cells.h5ad"
    dataset.write_h5ad(path)
    settings = Settings(
        home=tmp_path / "home",
        demo_model=False,
        local_workers=0,
        shard_size=100,  # 3 shards, merged
        umap_max_cells=150,  # the layout is a sample: only its points carry values
    )
    with uploaded(settings, demo_model_dir, path) as (c, platform, model, ds):
        rid = _run(c, settings, ds, model, "annotation", {"layout": "pca", "label_key": "group"})

        res = c.get(f"/results/{rid}", params={"page_size": 5000}).json()
        lay = res["layout"]
        assert lay["sampled"] and 0 < lay["n_points"] < N
        cells = lay["cells"]
        assert len(cells) == len(set(cells)) == lay["n_points"]
        assert [dataset.obs_names[i] for i in lay["indices"]] == cells  # rows for cells/{index}
        by_id = {row["cell"]: row for row in res["cells"]["items"]}
        assert len(by_id) == N
        # per point: the stored prediction of that cell, never recomputed differently
        assert len(lay["confidence"]) == len(lay["top3"]) == len(cells)
        for cell, conf, top, label in zip(
            cells, lay["confidence"], lay["top3"], lay["labels"], strict=True
        ):
            assert conf == by_id[cell]["confidence"]
            assert top == by_id[cell]["top3"]
            assert label == by_id[cell]["label"]
            assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"]
        # the dataset's categorical obs columns, for exactly the layout's points
        obs = lay["obs"]
        assert set(obs) == {"group", "donor"}
        expected = dataset.obs.loc[cells]
        assert obs["group"] == expected["group"].astype(str).tolist()
        assert obs["donor"] == [None if pd.isna(v) else v for v in expected["donor"]]

        # a layout stored before obs columns existed: read from the dataset, same answer
        lay_path = platform.storage.run_dir(rid) / "layout.parquet"
        frame = pd.read_parquet(lay_path)
        frame[[c for c in frame.columns if not c.startswith("obs:")]].to_parquet(lay_path)
        again = c.get(f"/results/{rid}", params={"page_size": 1}).json()["layout"]
        assert again["obs"] == obs and again["confidence"] == lay["confidence"]

        # an embedding run has a layout (all cells here) but no predictions
        emb = c.get(
            f"/results/{_run(c, settings, ds, model, 'embedding', {'layout': 'pca', 'n_components': 5})}"
        ).json()["layout"]
        assert emb["confidence"] is None and emb["top3"] is None
        assert emb["obs"]["group"] == dataset.obs.loc[emb["cells"], "group"].astype(str).tolist()
