"""A batch run on an upload whose NaN lies past the cells the validation samples ends failed,
with the cell named (before: the upload and the run passed, the NaN read as a count of 0)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from fastapi.testclient import TestClient

from cellfoundry.config import Settings
from cellfoundry.data.matrix import SAMPLE_ROWS
from cellfoundry.jobs.engine import Engine
from cellfoundry.service.app import create_app
from cellfoundry.store.db import Database
from tests.service.conftest import state_with_model

ROW = SAMPLE_ROWS + 321


@pytest.fixture(scope="module")
def nan_h5ad(pbmc3k: ad.AnnData, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Real PBMC 3k counts with one NaN at cell 2,321 (past the 2,000 cells the upload samples)."""
    q = pbmc3k.copy()
    x = sp.csr_matrix(q.X, dtype=np.float32, copy=True)
    x.data[int(x.indptr[ROW])] = np.nan
    q.X = x
    path = tmp_path_factory.mktemp("nan") / "pbmc3k_nan.h5ad"
    q.write_h5ad(path)
    return path, str(q.obs_names[ROW])


@pytest.mark.parametrize("shard_size", [50_000, 1_000])
def test_a_run_on_nan_past_the_sample_fails_naming_the_cell(
    tmp_path: Path, demo_model_dir: Path, nan_h5ad: tuple[Path, str], shard_size: int
) -> None:
    """One shard: the stream's check refuses it. Shards of 1,000 cells: the third shard's own
    validation sees the NaN in its sample; both name the cell and say how to fix it."""
    path, cell = nan_h5ad
    settings = Settings(
        home=tmp_path / "home", demo_model=False, web_dir=tmp_path / "no-web", shard_size=shard_size
    )
    key = state_with_model(settings, demo_model_dir)
    db = Database(settings.database_url)
    auth = {"Authorization": f"Bearer {key}"}
    try:
        with TestClient(create_app(settings)) as c:  # no workers: the test's engine does the work
            up = c.post("/upload", files={"file": (path.name, path.read_bytes())}, headers=auth)
            assert up.status_code == 200, up.text  # the upload's sample is clean
            body = {
                "dataset_id": up.json()["id"],
                "model_id": c.get("/models").json()[0]["id"],
                "params": {"layout": "none"},
            }
            r = c.post("/submit", json=body, headers=auth)
            assert r.status_code == 201, r.text
            rid = r.json()["run_id"]
            engine = Engine(settings, "local", db)
            assert engine.execute_run(rid) == "sharded"
            outcomes = [engine.execute_shard(rid, i) for i in range(-(-3_000 // shard_size))]
            assert outcomes[-1] == "failed" and set(outcomes[:-1]) <= {"succeeded"}
            st = c.get(f"/status/{rid}", headers=auth).json()
    finally:
        db.dispose()
    assert st["state"] == "failed"
    err = st["error"]
    assert f"cell '{cell}'" in err["message"] and "NaN" in err["message"], err
    assert err["hint"].startswith("replace NaN/Inf, e.g. with 0"), err
    if shard_size > 3_000:
        assert err["code"] == "non_finite_values"
        assert err["message"].startswith("X holds NaN or Inf values past the cells the validation")
        assert f"(row {ROW:,})" in err["message"]
