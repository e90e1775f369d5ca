"""The service's evaluation task: unlabelled cells dropped, the model never scored on the cells it
was trained on, ontology-aware scores beside the forced-choice and Unknown-aware metrics.

It runs the real task (real files, a real trained artifact) without the queue around it.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import cellfoundry as cf
from cellfoundry.artifacts import TRAINING_CELLS_FILE
from cellfoundry.errors import DataError
from cellfoundry.jobs.applications import EvaluationParams, TaskContext, evaluation_task


def _ctx(data: Path, model: Path, out: Path) -> TaskContext:
    out.mkdir(parents=True, exist_ok=True)
    return TaskContext(
        run_id="r_test",
        dataset_path=data,
        model_dir=model,
        model_family="logreg",
        params=EvaluationParams(
            label_key="cell_type", baseline_n_features=300, baseline_max_iter=50
        ),
        out_dir=out,
        report=lambda msg, pct: None,
    )


@pytest.fixture(scope="module")
def setup(pbmc3k: ad.AnnData, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("svc_eval")
    rng = np.random.default_rng(0)
    train_idx = np.sort(rng.choice(pbmc3k.n_obs, pbmc3k.n_obs // 2, replace=False))
    model = tmp / "model"
    cf.train(pbmc3k[train_idx].copy(), "cell_type", "logreg", n_features=500, out=model)
    data = pbmc3k.copy()
    lab = data.obs["cell_type"].astype(object).to_numpy().copy()
    rest = np.setdiff1d(np.arange(data.n_obs), train_idx)
    lab[rest[:40]] = np.nan  # unlabelled cells among the unseen ones
    data.obs["cell_type"] = lab
    path = tmp / "data.h5ad"
    data.write_h5ad(path)
    return tmp, model, path, train_idx, rest


def test_model_is_not_scored_on_its_training_cells(setup, pbmc3k: ad.AnnData) -> None:
    tmp, model, path, train_idx, rest = setup
    assert (model / TRAINING_CELLS_FILE).is_file()
    out = evaluation_task(_ctx(path, model, tmp / "run"))
    m = out.summary["metrics"]
    assert m["n_training_cells_left_out"] == len(train_idx)
    assert m["n_unlabelled_dropped"] == 40
    pred = pd.read_parquet(out.files["predictions"])
    scored = set(pred["cell"].astype(str))
    assert scored == set(pbmc3k.obs_names[rest[40:]])
    assert "nan" not in set(pred["true_label"]) and pred["true_label"].notna().all()
    assert m["n_cells"] == len(rest) - 40
    assert "nan" not in out.summary["confusion"]["labels_true"]
    # same vocabulary here, so the ontology-aware and the string scores are close
    assert m["ontology_accuracy"] >= m["accuracy"] - 0.05 and 0 < m["expressible_share"] <= 1
    assert 0 < m["coverage"] <= 1 and out.evaluation["metrics"] is m


def test_a_dataset_of_training_cells_only_is_refused(setup, pbmc3k: ad.AnnData) -> None:
    tmp, model, _, train_idx, _ = setup
    path = tmp / "train_only.h5ad"
    pbmc3k[train_idx].copy().write_h5ad(path)
    with pytest.raises(DataError, match="used to train this model"):
        evaluation_task(_ctx(path, model, tmp / "run2"))
