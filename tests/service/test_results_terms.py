"""/results' cell pages carry each cell's Cell Ontology term, as the typed summary names it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cellfoundry.jobs.applications import _predictions_frame, write_predictions_parquet
from cellfoundry.result import AnnotationResult
from cellfoundry.service.results import page_predictions
from cellfoundry.service.schemas import CellPage, ResultSummaryPublic

# Cell Ontology ids as published by the OBO Foundry (https://obofoundry.org/ontology/cl.html)
CL = {"B cell": "CL:0000236", "T cell": "CL:0000084", "natural killer cell": "CL:0000623"}


def test_cell_pages_carry_the_term_of_the_predicted_class(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    classes = [*CL, "my odd cluster 7"]
    probs = rng.dirichlet(np.ones(len(classes)), size=50).astype(np.float32)
    res = AnnotationResult(
        obs_names=pd.Index([f"c{i}" for i in range(50)]),
        classes=classes,
        probabilities=probs,
        threshold=0.3,
        model_name="m",
        model_family="logreg",
    )
    path = tmp_path / "predictions.parquet"
    write_predictions_parquet(_predictions_frame(res), path)
    page = CellPage.model_validate(page_predictions(path, 1, 50))
    summary = ResultSummaryPublic.model_validate(res.summary())
    assert summary.ontology is not None
    terms = {c: t.id for c, t in summary.ontology.terms.items()}
    assert {c: terms[c] for c in CL} == CL
    assert terms["my odd cluster 7"] == "" and summary.ontology.unmapped == ["my odd cluster 7"]
    predicted = [classes[j] for j in probs.argmax(axis=1)]
    assert [c.predicted for c in page.items] == predicted
    assert [c.ontology_term_id for c in page.items] == [terms[p] for p in predicted]
    assert {c.ontology_term_id for c in page.items} >= {"", CL["B cell"]}
