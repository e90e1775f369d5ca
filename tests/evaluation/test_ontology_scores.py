"""Ontology-aware scores across vocabularies: a pbmc68k_reduced model annotating pbmc3k.

The reference is cellxgene-ontology-guide's own OntologyParser (ancestors and distances to the
root term), not our ontology package.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from cellxgene_ontology_guide.ontology_parser import OntologyParser

import cellfoundry as cf
from cellfoundry.evaluation.ontology_scores import ontology_metrics

ROOT = "CL:0000000"


@pytest.fixture(scope="module")
def run(shared_dir: Path, pbmc3k: ad.AnnData):
    src = ad.read_h5ad(shared_dir / "data" / "10x_pbmc68k_reduced.h5ad")
    ref = src.raw.to_adata()
    ref.obs = src.obs.copy()
    model = cf.train(ref, "bulk_labels", "logreg", n_features=None)
    res = cf.annotate(pbmc3k, model, min_coverage=0.05)
    truth = pbmc3k.obs["cell_type"].astype(str).to_numpy()
    om = ontology_metrics(
        truth, res.labels, res.classes, model_mapping=model.ontology, called=~res.unknown
    )
    return truth, res, om


def test_scores_agree_with_the_ontology_parser(run) -> None:
    truth, res, om = run
    parser = OntologyParser()
    anc = {}

    def ancestors(t: str) -> set[str]:
        if t not in anc:
            anc[t] = set(parser.get_term_ancestors(t))
        return anc[t]

    credits, exact, coarser = [], [], []
    for t_lab, p_lab in zip(truth, res.labels, strict=True):
        t, p = om["truth_terms"][t_lab], om["model_terms"][p_lab]
        if p == t or t in ancestors(p):
            c = 1.0
        elif p in ancestors(t):
            c = parser.get_distance_between_terms(p, ROOT) / parser.get_distance_between_terms(
                t, ROOT
            )
        else:
            c = 0.0
        credits.append(c)
        exact.append(c == 1.0)
        coarser.append(p in ancestors(t) and p != t)
    assert om["ontology_score"] == pytest.approx(np.mean(credits))
    assert om["ontology_accuracy"] == pytest.approx(np.mean(exact))
    assert om["coarser_share"] == pytest.approx(np.mean(coarser))
    assert om["coarser_share"] > 0  # some coarse calls: partial credit is exercised
    called = ~res.unknown
    assert om["coverage"] == pytest.approx(called.mean())
    assert om["called_ontology_score"] == pytest.approx(np.mean(np.asarray(credits)[called]))
    # string equality scores nothing across these vocabularies; terms do
    assert (res.labels == truth).mean() == 0.0 and om["ontology_accuracy"] > 0.6


def test_expressible_share(run) -> None:
    truth, _, om = run
    parser = OntologyParser()
    model_terms = set(om["model_terms"].values())

    def expressible(t: str) -> bool:
        return any(m == t or t in parser.get_term_ancestors(m) for m in model_terms)

    by_label = {lab: expressible(term) for lab, term in om["truth_terms"].items()}
    assert om["expressible_share"] == pytest.approx(np.mean([by_label[t] for t in truth]))
    assert 0 < om["expressible_share"] < 1  # pbmc68k_reduced has no megakaryocyte class
    assert om["per_true_term_score"][om["truth_terms"]["Megakaryocytes"]] == 0.0


def test_user_label_map_wins_and_unmapped_labels_are_listed(run) -> None:
    truth, res, _ = run
    # map pbmc3k's "CD4 T cells" to plain "T cell": the model's CD4 calls become finer (right)
    om = ontology_metrics(truth, res.labels, res.classes, label_map={"CD4 T cells": "CL:0000084"})
    assert om["truth_terms"]["CD4 T cells"] == "CL:0000084"
    labels = truth.copy().astype(object)
    labels[:5] = "no such cell type"
    om2 = ontology_metrics(labels, res.labels, res.classes)
    assert om2["truth_unmapped"] == ["no such cell type"]
    assert om2["truth_unmapped_share"] == pytest.approx(5 / len(truth))
