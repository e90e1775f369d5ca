"""`cellfoundry evaluate` prints and stores the honest metrics, the reference rows and the
ontology-aware score; a user's label map wins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cellfoundry.cli import cli


def test_evaluate_cli_reports_reference_rows_and_ontology(shared_dir: Path, tmp_path: Path) -> None:
    lmap = tmp_path / "map.csv"
    lmap.write_text("label,ontology_term_id\nT_CD4,CL:0000624\n")
    out = tmp_path / "rep"
    r = CliRunner().invoke(
        cli,
        [
            "evaluate",
            str(shared_dir / "data" / "symphony_pbmcs_small_lognorm.h5ad"),
            "--model",
            "scimilarity",
            "--methods",
            "logreg",
            "--seeds",
            "1",
            "--no-umap",
            "--label-map",
            str(lmap),
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "macro-F1 over the true labels" in r.output
    assert "majority" in r.output and "chance" in r.output and "ontology" in r.output
    rep = json.loads((out / "report.json").read_text())
    run = rep["runs"][0]
    assert run["ontology"]["truth_terms"]["T_CD4"] == "CL:0000624"
    assert run["ontology"]["model_terms"]["T_CD4"] == "CL:0000624"
    row = next(s for s in rep["summary"] if s["method"] == "logreg")
    assert row["ontology_score"] == pytest.approx(run["ontology"]["ontology_score"])
