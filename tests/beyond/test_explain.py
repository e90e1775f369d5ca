"""Per-cell evidence (prediction_top_genes) and marker overlap on real PBMC 3k cells."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from click.testing import CliRunner

import cellfoundry as cf
from cellfoundry.cli import cli
from cellfoundry.data.normalize import log1p_cp10k
from cellfoundry.errors import ModelError
from cellfoundry.models.baselines.explain import GroupStats

# canonical markers from the literature (e.g. the scanpy PBMC 3k tutorial, Azimuth PBMC markers)
KNOWN = {
    "B cells": {"CD79A", "CD79B", "MS4A1", "CD19", "CD22", "BLK", "BANK1", "TCL1A", "FCRLA"},
    "CD14+ Monocytes": {"LYZ", "S100A8", "S100A9", "S100A12", "CD14", "FCN1", "VCAN", "LGALS2"},
    "NK cells": {"GNLY", "NKG7", "GZMB", "PRF1", "KLRD1", "KLRF1", "FGFBP2", "SPON2"},
}


@pytest.mark.parametrize("family", ["logreg", "knn"])
def test_top_genes_name_known_markers(pbmc_split, pbmc_models, family) -> None:
    _, query = pbmc_split
    res = cf.annotate(query, pbmc_models[family], explain=True)
    top = res.obs_columns["prediction_top_genes"]
    assert top.shape == (query.n_obs,)
    for label, markers in KNOWN.items():
        calls = top[res.labels == label]
        assert len(calls) >= 20
        genes = [set(t.split(";")) for t in calls]
        assert all(0 < len(g) <= 10 for g in genes)
        hit = np.mean([bool(g & markers) for g in genes])
        assert hit >= 0.8, (family, label, hit, calls[:3])


def test_top_genes_are_ordered_by_contribution(pbmc_split, pbmc_models) -> None:
    _, query = pbmc_split
    model = cf.load_model(pbmc_models["logreg"])
    res = cf.annotate(query[:40], model, explain=True)
    plan = model.plan(query[:40])
    x = log1p_cp10k(query[:40].X)[:, plan.alignment.source_index]
    called = res.label_index
    contrib = model.contributions(x, called, plan.alignment.source_index >= 0)
    names = model.symbols
    for i, row in enumerate(res.obs_columns["prediction_top_genes"]):
        listed = row.split(";")
        idx = [names.index(g) for g in listed]
        vals = contrib[i, idx]
        assert (np.diff(vals) <= 1e-6).all() and (vals > 0).all()
        assert vals[-1] >= np.sort(contrib[i])[-len(listed)] - 1e-6


def test_streamed_t_test_matches_scanpy(pbmc_split) -> None:
    ref, _ = pbmc_split
    x = log1p_cp10k(ref.X)[:, :400].tocsr()
    groups = ref.obs["cell_type"].astype(str).to_numpy()
    classes = sorted(set(groups))
    idx = np.array([classes.index(g) for g in groups])
    stats = GroupStats(x.shape[1], len(classes))
    for start in range(0, x.shape[0], 300):  # in chunks, as when streaming
        stats.add(x[start : start + 300], idx[start : start + 300])
    t = stats.welch_t()
    tmp = ad.AnnData(X=x, obs=pd.DataFrame({"g": pd.Categorical(groups)}, index=ref.obs_names))
    tmp.uns["log1p"] = {"base": None}
    sc.tl.rank_genes_groups(tmp, "g", method="t-test", n_genes=x.shape[1])
    rg = tmp.uns["rank_genes_groups"]
    for c, name in enumerate(classes):
        genes = np.asarray(rg["names"][name]).astype(int)
        scores = np.asarray(rg["scores"][name], dtype=float)
        ok = np.isfinite(scores) & np.isfinite(t[c, genes])
        np.testing.assert_allclose(t[c, genes][ok], scores[ok], rtol=1e-3, atol=1e-3)


def test_marker_overlap_is_far_above_chance(pbmc_split, pbmc_models) -> None:
    _, query = pbmc_split
    res = cf.annotate(query, pbmc_models["logreg"])
    mo = res.summary()["marker_overlap"]
    assert mo["n_markers"] == 50
    chance = mo["expected_by_chance"]
    per = mo["by_predicted_type"]
    for label in KNOWN:
        assert per[label]["overlap"] > 10 * chance
    assert mo["mean_overlap"] > 0.5


def test_cli_explain_writes_the_column(pbmc_split, pbmc_models, tmp_path: Path) -> None:
    _, query = pbmc_split
    q = tmp_path / "q.h5ad"
    query[:200].copy().write_h5ad(q)
    runner = CliRunner()
    plain = runner.invoke(
        cli,
        ["annotate", str(q), "--model", str(pbmc_models["knn"]), "--out", str(tmp_path / "a.h5ad")],
    )
    assert plain.exit_code == 0, plain.output
    assert "prediction_top_genes" not in ad.read_h5ad(tmp_path / "a.h5ad").obs
    out = tmp_path / "b.h5ad"
    res = runner.invoke(
        cli,
        ["annotate", str(q), "--model", str(pbmc_models["knn"]), "--out", str(out), "--explain"],
    )
    assert res.exit_code == 0, res.output
    obs = ad.read_h5ad(out).obs
    assert obs["prediction_top_genes"].str.len().gt(0).mean() > 0.95
    assert {"reference_distance", "out_of_reference"} <= set(obs.columns)
    summary = json.loads(res.output[res.output.index("{") :])
    assert "marker_overlap" in summary and "out_of_reference" in summary


def test_explain_needs_what_the_model_stores(pbmc_split, pbmc_models) -> None:
    _, query = pbmc_split
    model = cf.load_model(pbmc_models["knn"])
    del model.state["explain.separation"]  # as in an artifact from before explanations existed
    with pytest.raises(ModelError, match="cannot explain"):
        cf.annotate(query[:50], model, explain=True)
    assert "prediction_top_genes" not in cf.annotate(query[:50], model).obs_columns
