"""Batch runs on uploads, driven in this process: a NaN past the cells the validation samples
ends the run failed, with the cell named (before: the upload and the run passed, the NaN read as
a count of 0); float16 counts are annotated."""

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


def _run(tmp_path: Path, model_dir: Path, path: Path, shard_size: int) -> tuple[list[str], dict]:
    """Upload ``path``, submit an annotation and run it with an engine in this process: the
    outcome of each shard and the run's final status."""
    settings = Settings(
        home=tmp_path / "home", demo_model=False, web_dir=tmp_path / "no-web", shard_size=shard_size
    )
    key = state_with_model(settings, model_dir)
    db = Database(settings.database_url)
    auth = {"Authorization": f"Bearer {key}"}
    try:
        with TestClient(create_app(settings)) as c:  # no workers: the test's engine does the work
            up = c.post("/upload", files={"file": (path.name, path.read_bytes())}, headers=auth)
            assert up.status_code == 200, up.text
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
            n_shards = -(-up.json()["n_cells"] // shard_size)
            outcomes = [engine.execute_shard(rid, i) for i in range(n_shards)]
            return outcomes, c.get(f"/status/{rid}", headers=auth).json()
    finally:
        db.dispose()


@pytest.mark.parametrize("shard_size", [50_000, 1_000])
def test_a_run_on_nan_past_the_sample_fails_naming_the_cell(
    tmp_path: Path, demo_model_dir: Path, nan_h5ad: tuple[Path, str], shard_size: int
) -> None:
    """One shard: the stream's check refuses it. Shards of 1,000 cells: the third shard's own
    validation sees the NaN in its sample; both name the cell and say how to fix it."""
    path, cell = nan_h5ad
    outcomes, st = _run(tmp_path, demo_model_dir, path, shard_size)
    assert outcomes[-1] == "failed" and set(outcomes[:-1]) <= {"succeeded"}
    assert st["state"] == "failed"
    err = st["error"]
    assert f"cell '{cell}'" in err["message"] and "NaN" in err["message"], err
    assert err["hint"].startswith("replace NaN/Inf, e.g. with 0"), err
    if shard_size > 3_000:
        assert err["code"] == "non_finite_values"
        assert err["message"].startswith("X holds NaN or Inf values past the cells the validation")
        assert f"(row {ROW:,})" in err["message"]


def test_a_run_on_float16_counts_succeeds(
    tmp_path: Path, demo_model_dir: Path, pbmc3k: ad.AnnData
) -> None:
    """Real PBMC 3k stored as float16 (before: each shard's ``adata[rows].to_memory()`` of the
    backed file failed in scipy, "the run stopped on an unexpected error")."""
    x = sp.csr_matrix(pbmc3k.X, dtype=np.float32)
    q = pbmc3k.copy()
    q.X = sp.csr_matrix((x.data.astype(np.float16), x.indices, x.indptr), shape=x.shape)
    path = tmp_path / "pbmc3k_f16.h5ad"
    q.write_h5ad(path)
    outcomes, st = _run(tmp_path, demo_model_dir, path, 1_000)
    assert outcomes == ["succeeded"] * 3 and st["state"] == "succeeded", st
