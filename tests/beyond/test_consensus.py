"""Consensus of several models, combined up the Cell Ontology (checked against the official parser)."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import cellfoundry as cf
from cellfoundry.cli import cli
from cellfoundry.result import AnnotationResult
from cellfoundry.stats.metrics import macro_f1_true_labels
from tests.ontology.reference import PARSER, cl

CD4 = "CD4-positive, alpha-beta T cell"
CD8 = "CD8-positive, alpha-beta T cell"
TREG = "CD4-positive, CD25-positive, alpha-beta regulatory T cell"


def result(classes: list[str], rows: list[list[float]], name: str) -> AnnotationResult:
    proba = np.asarray(rows, dtype=np.float32)
    return AnnotationResult(
        obs_names=pd.Index([f"cell{i}" for i in range(len(proba))]),
        classes=classes,
        probabilities=proba,
        threshold=0.5,
        model_name=name,
        model_family="test",
    )


def test_votes_for_a_term_and_its_descendant_reinforce_each_other() -> None:
    assert cl(CD4) in PARSER.get_term_ancestors(cl(TREG))  # the premise, from the official parser
    a = result([TREG, CD8], [[0.6, 0.4]], "a")
    b = result([CD4, CD8], [[0.6, 0.4]], "b")
    c = cf.consensus([a, b])
    assert c.labels[0] == CD4  # no class name is shared, yet the support of CD4 is 0.6
    assert c.term_ids[0] == cl(CD4)
    assert c.confidence[0] == pytest.approx(0.6)
    assert c.obs_columns["consensus_agreement"][0] == pytest.approx(1.0)
    assert c.obs_columns["predicted_cell_type__a"][0] == TREG
    assert c.obs_columns["predicted_cell_type__b"][0] == CD4


def test_disagreement_goes_to_the_closest_common_term() -> None:
    a = result([CD4, CD8], [[0.9, 0.1]], "a")
    b = result([CD4, CD8], [[0.1, 0.9]], "b")
    c = cf.consensus([a, b])
    term = c.term_ids[0]
    common = set(PARSER.get_term_ancestors(cl(CD4))) & set(PARSER.get_term_ancestors(cl(CD8)))
    assert term in common
    # nothing common to both lies below the chosen term: it is the closest one
    assert not any(term in PARSER.get_term_ancestors(t) for t in common)
    assert term in PARSER.get_term_ancestors(cl(CD4)) and not c.unknown[0]
    assert c.labels[0] == PARSER.get_term_label(term)
    assert c.obs_columns["consensus_agreement"][0] == 0.0


def test_uninformative_common_term_means_unknown() -> None:
    a = result(["B cell", "pancreatic A cell"], [[0.9, 0.1]], "a")
    b = result(["B cell", "pancreatic A cell"], [[0.1, 0.9]], "b")
    c = cf.consensus([a, b])
    assert c.labels[0] == "Unknown" and c.term_ids[0] == "" and c.unknown[0]
    assert c.obs_columns["consensus_cell_type_ontology_term_id"][0] == ""


def test_agreement_and_weights() -> None:
    classes = [CD4, CD8]
    rows = [[0.8, 0.2], [0.2, 0.8]]  # cell0: all say CD4; cell1: a says CD4, b and c say CD8
    a = result(classes, [[0.9, 0.1], [0.9, 0.1]], "a")
    b = result(classes, [rows[0], rows[1]], "b")
    c3 = result(classes, [rows[0], rows[1]], "c")
    c = cf.consensus([a, b, c3])
    assert list(c.labels) == [CD4, CD8]
    np.testing.assert_allclose(c.obs_columns["consensus_agreement"], [1.0, 2 / 3])
    heavy = cf.consensus([a, b, c3], weights=[10, 1, 1])  # a model trusted more wins
    assert list(heavy.labels) == [CD4, CD4]


def test_same_names_for_two_models_are_made_unique() -> None:
    a = result([CD4, CD8], [[0.9, 0.1]], "logreg")
    b = result([CD4, CD8], [[0.8, 0.2]], "logreg")
    c = cf.consensus([a, b])
    assert {"predicted_cell_type__logreg", "predicted_cell_type__logreg_2"} <= set(c.obs_columns)


def test_consensus_on_real_pbmc_cells(pbmc_split, pbmc_models, tmp_path: Path) -> None:
    _, query = pbmc_split
    truth = query.obs["cell_type"].astype(str).to_numpy()
    single = {n: cf.annotate(query, p) for n, p in pbmc_models.items()}
    res = cf.annotate(query, [pbmc_models["logreg"], pbmc_models["knn"]])
    obs = res.to_adata(query.copy()).obs
    for col in (
        "consensus_cell_type",
        "consensus_cell_type_ontology_term_id",
        "consensus_agreement",
    ):
        assert col in obs
    np.testing.assert_array_equal(
        obs["predicted_cell_type"].astype(str), obs["consensus_cell_type"].astype(str)
    )
    agreement = obs["consensus_agreement"].to_numpy()
    assert ((agreement >= 0) & (agreement <= 1)).all()
    for name, r in single.items():
        np.testing.assert_array_equal(obs[f"predicted_cell_type__{name}"].astype(str), r.labels)
    # both models sure of the same class: the consensus is that class, in full agreement
    sure = (single["logreg"].labels == single["knn"].labels) & (
        np.minimum(single["logreg"].confidence, single["knn"].confidence) > 0.9
    )
    assert sure.mean() > 0.5
    np.testing.assert_array_equal(res.labels[sure], single["logreg"].labels[sure])
    assert (agreement[sure] == 1.0).all()
    ok = res.labels == truth
    full = agreement == 1.0
    assert ok[full].mean() > ok[~full].mean()
    f1 = macro_f1_true_labels(truth, res.labels)
    assert f1 >= min(macro_f1_true_labels(truth, r.labels) for r in single.values())
    uns = res.to_adata(query.copy()).uns["cellfoundry"]
    assert list(uns["consensus"]["models"]) == ["logreg", "knn"]
    assert "cellfoundry_probabilities__knn" in res.to_adata(query.copy()).obsm


def test_cli_with_two_models(pbmc_split, pbmc_models, tmp_path: Path) -> None:
    _, query = pbmc_split
    q = tmp_path / "q.h5ad"
    query[:150].copy().write_h5ad(q)
    out = tmp_path / "c.h5ad"
    run = CliRunner().invoke(
        cli,
        [
            "annotate",
            str(q),
            "--model",
            str(pbmc_models["logreg"]),
            "--model",
            str(pbmc_models["knn"]),
            "--out",
            str(out),
        ],
    )
    assert run.exit_code == 0, run.output
    obs = ad.read_h5ad(out).obs
    assert {"consensus_cell_type", "consensus_agreement", "predicted_cell_type__knn"} <= set(obs)
    summary = json.loads(run.output[run.output.index("{") :])
    assert summary["consensus"]["models"] == ["logreg", "knn"]
    assert set(summary["consensus"]["weights"]) == {"logreg", "knn"}
