"""evaluate(): no "nan" class, no test cell that a model trained on, majority and chance rows."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellfoundry.errors import DataError
from cellfoundry.evaluation.compare import evaluate


@pytest.fixture(scope="module")
def symphony(shared_dir: Path) -> ad.AnnData:
    return ad.read_h5ad(shared_dir / "data" / "symphony_pbmcs_small_lognorm.h5ad")


def test_query_mode_drops_unlabelled_and_reference_cells(symphony: ad.AnnData, tmp_path) -> None:
    ref = symphony[symphony.obs["donor"] != "5p"].copy()
    # the query: every cell (so the reference cells are in it too), some without a label
    qry = symphony.copy()
    lab = qry.obs["cell_type"].astype(object).to_numpy().copy()
    five = np.nonzero(qry.obs["donor"].to_numpy() == "5p")[0]
    lab[five[:20]] = np.nan
    lab[five[20:30]] = "nan"
    qry.obs["cell_type"] = lab
    rep = evaluate(
        ref,
        "cell_type",
        "scimilarity",
        query=qry,
        seeds=1,
        out=tmp_path,
        methods=("logreg",),
        umap=False,
    )
    df = pd.read_csv(tmp_path / "predictions" / "logreg_logreg_seed0.csv", dtype={"true": str})
    assert set(df["cell"]) == set(qry.obs_names[five[30:]])  # only labelled 5' cells
    assert df["true"].notna().all() and "nan" not in set(df["true"])
    assert rep["context"]["query_cells_left_out_as_reference_cells"] == ref.n_obs
    per_class = pd.read_csv(tmp_path / "per_class_report.csv", keep_default_na=False)
    assert "nan" not in set(per_class["class"]) and "" not in set(per_class["class"])
    rows = {(r["model"], r["method"]): r for r in rep["summary"]}
    truth = df["true"].value_counts(normalize=True)
    assert rows[("reference", "majority")]["accuracy"] == pytest.approx(truth.max())
    assert rows[("reference", "chance")]["accuracy"] == pytest.approx((truth**2).sum())
    assert (
        json.loads((tmp_path / "report.json").read_text())["context"]["macro_f1_over"]
        == "true labels"
    )


def test_query_of_reference_cells_only_is_refused(symphony: ad.AnnData, tmp_path) -> None:
    ref = symphony[symphony.obs["donor"] != "5p"].copy()
    with pytest.raises(DataError, match="no labelled query cell"):
        evaluate(
            ref,
            "cell_type",
            "scimilarity",
            query=ref.copy(),
            seeds=1,
            out=tmp_path,
            methods=("logreg",),
            umap=False,
        )


def test_a_finetuned_artifact_is_never_tested_on_its_training_cells(tmp_path) -> None:
    from cellfoundry.artifacts import read_training_cells
    from cellfoundry.tuning.finetune import finetune
    from tests.conftest import make_counts_adata

    adata = make_counts_adata(220, 100, 3, seed=11)
    small = {"scratch_hidden": [16, 16], "scratch_latent": 8, "batch_size": 32}
    art = tmp_path / "ft"
    ann = finetune(
        adata, "cell_type", "scimilarity", "head", epochs=1, out=art, progress=False, **small
    )
    trained = read_training_cells(art)
    assert trained is not None and len(trained) == len(ann.holdout["train_index"])
    rep = evaluate(
        adata,
        "cell_type",
        art,
        seeds=1,
        out=tmp_path / "rep",
        methods=("logreg", "head"),
        epochs=1,
        umap=False,
        finetune_options=small,
    )
    assert rep["context"]["test_cells_left_out_as_model_training_cells"] > 0
    names = {k.split("|")[0] for k in trained}
    for run in rep["runs"]:
        cells = set(pd.read_csv(tmp_path / "rep" / run["file"], dtype={"cell": str})["cell"])
        assert cells and not cells & names
