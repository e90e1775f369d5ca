"""AnnotationResult writes CL terms beside predicted_cell_type (library level, no training)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from cellfoundry.ontology import map_labels
from cellfoundry.result import TERM_COLUMN, AnnotationResult
from tests.ontology.reference import cl


def result(**kw) -> AnnotationResult:
    classes = ["CD4+/CD25 T Reg", "CD14+ Monocytes", "cluster 7"]
    proba = np.array(
        [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.4, 0.35, 0.25]], np.float32
    )
    return AnnotationResult(
        obs_names=pd.Index([f"c{i}" for i in range(4)]),
        classes=classes,
        probabilities=proba,
        threshold=0.5,
        model_name="m",
        model_family="logreg",
        **kw,
    )


def test_terms_follow_predicted_cell_type_and_unmapped_are_empty(tmp_path: Path) -> None:
    res = result()
    df = res.to_frame()
    treg = cl("CD4-positive, CD25-positive, alpha-beta regulatory T cell")
    # the last cell is an Unknown call: its term is still that of its predicted_cell_type
    assert list(df["prediction_unknown"]) == [False, False, False, True]
    assert list(df[TERM_COLUMN]) == [treg, cl("CD14-positive monocyte"), "", treg]
    adata = res.to_adata()
    adata.write_h5ad(tmp_path / "a.h5ad")  # class names with "/" survive h5ad
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    assert list(back.obs[TERM_COLUMN].astype(str)) == list(df[TERM_COLUMN])
    uns = back.uns["cellfoundry"]
    assert list(uns["class_ontology_term_ids"]) == [treg, cl("CD14-positive monocyte"), ""]
    assert res.summary()["ontology"]["unmapped"] == ["cluster 7"]


def test_level_broad_and_an_annotate_time_label_map() -> None:
    stored = map_labels(["CD4+/CD25 T Reg", "CD14+ Monocytes", "cluster 7"])
    res = result(
        ontology=map_labels(stored.classes, {"cluster 7": "mast cell"}, base=stored),
        level="broad",
    )
    df = res.to_frame()
    assert list(df["rolled_up_cell_type"]) == ["T cell", "monocyte", "mast cell", "T cell"]
    assert list(df["rolled_up_cell_type_ontology_term_id"]) == [
        cl("T cell"),
        cl("monocyte"),
        cl("mast cell"),
        cl("T cell"),
    ]
    counts = res.summary()["ontology"]["rolled_up_counts"]  # counted as shown: Unknown apart
    assert counts == {"T cell": 1, "monocyte": 1, "mast cell": 1, "Unknown": 1}
    assert res.class_terms.matches["CD14+ Monocytes"].method == "curated"
    assert res.class_terms.matches["cluster 7"].method == "user"
