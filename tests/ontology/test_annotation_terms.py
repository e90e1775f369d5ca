"""Cell Ontology terms in the outputs: manifest, obs, uns, CSV, --label-map and --level.

Real data: a logreg model trained on scanpy's pbmc68k_reduced (sorted populations) annotates
pbmc3k (marker-named clusters); the two share no class name. Consistency is judged with the
official cellxgene-ontology-guide parser's descendants, not with cellfoundry's relations.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.baselines.test_cli import run
from tests.ontology.reference import PARSER, PBMC3K_TERMS, cl
from tests.ontology.reference import read_quietly as read

TERM = "predicted_cell_type_ontology_term_id"


@pytest.fixture(scope="module")
def annotated(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ontology")
    data = shared_dir / "data"
    label_map = d / "labels.csv"
    label_map.write_text("label,ontology_term_id\nCD34+,hematopoietic stem cell\nDendritic,\n")
    model = d / "m68k"
    train = run(
        "train",
        str(data / "10x_pbmc68k_reduced.h5ad"),
        "--label-key",
        "bulk_labels",
        "--out",
        str(model),
        "--label-map",
        str(label_map),
    )
    query = data / "pbmc3k_labeled_counts.h5ad"
    out = run(
        "annotate",
        str(query),
        "--model",
        str(model),
        "--out",
        str(d / "q.h5ad"),
        "--csv",
        str(d / "q.csv"),
        "--level",
        "T cell",
    )
    plain = run("annotate", str(query), "--model", str(model), "--csv", str(d / "plain.csv"))
    (d / "train.log").write_text(train.stderr)
    (d / "summary.json").write_text(out.stdout)
    (d / "plain.json").write_text(plain.stdout)
    return {"dir": d, "model": model, "query": query, "label_map": label_map}


def test_manifest_holds_a_term_per_class_and_the_user_map_wins(annotated) -> None:
    onto = json.loads((annotated["model"] / "manifest.json").read_text())["ontology"]
    assert onto["terms"]["CD34+"] == cl("hematopoietic stem cell")  # user map, not curated
    assert onto["unmapped"] == ["Dendritic"]  # user map keeps it empty on purpose
    assert onto["terms"]["CD4+/CD25 T Reg"] == cl(
        "CD4-positive, CD25-positive, alpha-beta regulatory T cell"
    )
    methods = {m["label"]: m["method"] for m in onto["matches"]}
    assert methods["CD34+"] == "user" and methods["CD56+ NK"] == "curated"
    log = (annotated["dir"] / "train.log").read_text()
    assert "9 of 10 classes mapped" in log and "(unmapped)" in log


def test_obs_uns_and_csv_carry_terms_consistent_with_the_query_labels(annotated) -> None:
    q = read(annotated["dir"] / "q.h5ad")
    terms = q.obs[TERM].astype(str).to_numpy()
    uns = q.uns["cellfoundry"]
    class_terms = dict(zip(uns["classes"], uns["class_ontology_term_ids"], strict=True))
    pred = q.obs["predicted_cell_type"].astype(str).to_numpy()
    assert list(terms) == [class_terms[c] for c in pred]  # the term of predicted_cell_type
    assert uns["ontology"]["version"].startswith("v") and uns["ontology"]["level"] == "T cell"
    names = dict(zip(uns["classes"], uns["class_ontology_term_names"], strict=True))
    assert names["CD56+ NK"] == "natural killer cell"

    truth = q.obs["cell_type"].astype(str).map({c: cl(n) for c, n in PBMC3K_TERMS.items()})
    below = {t: set(PARSER.get_term_descendants(t, include_self=True)) for t in set(truth)}
    consistent = np.array([p in below[t] for p, t in zip(terms, truth, strict=True)])
    assert consistent.mean() >= 0.60
    called = ~q.obs["prediction_unknown"].to_numpy(dtype=bool)
    assert consistent[called].mean() >= consistent.mean()  # confident calls are the better ones

    csv = pd.read_csv(annotated["dir"] / "q.csv", index_col=0, keep_default_na=False)
    assert list(csv[TERM]) == list(terms)
    assert {"rolled_up_cell_type", "rolled_up_cell_type_ontology_term_id"} <= set(csv.columns)


def test_level_rolls_t_cell_calls_up_and_leaves_the_rest(annotated) -> None:
    q = read(annotated["dir"] / "q.h5ad")
    t_cell = cl("T cell")
    t_classes = {
        c
        for c, t in zip(
            q.uns["cellfoundry"]["classes"],
            q.uns["cellfoundry"]["class_ontology_term_ids"],
            strict=True,
        )
        if t and t_cell in PARSER.get_term_ancestors(t, include_self=True)
    }
    assert len(t_classes) == 5
    pred = q.obs["predicted_cell_type"].astype(str)
    unknown = q.obs["prediction_unknown"].to_numpy(dtype=bool)
    rolled = q.obs["rolled_up_cell_type_ontology_term_id"].astype(str)
    rolled_name = q.obs["rolled_up_cell_type"].astype(str)
    is_t = pred.isin(t_classes).to_numpy()
    assert is_t.sum() > 500
    assert (rolled[is_t] == t_cell).all() and (rolled_name[is_t] == "T cell").all()
    assert (rolled[~is_t] == q.obs[TERM].astype(str)[~is_t]).all()
    summary = json.loads((annotated["dir"] / "summary.json").read_text())["ontology"]
    assert summary["rolled_up_counts"]["T cell"] == int((is_t & ~unknown).sum())
    assert summary["rolled_up_counts"]["Unknown"] == int(unknown.sum())
    assert summary["rolled_up_terms"]["T cell"] == t_cell


def test_without_level_there_are_no_rolled_up_columns(annotated) -> None:
    csv = pd.read_csv(annotated["dir"] / "plain.csv", index_col=0, keep_default_na=False)
    assert TERM in csv.columns and "rolled_up_cell_type" not in csv.columns
    summary = json.loads((annotated["dir"] / "plain.json").read_text())["ontology"]
    assert summary["unmapped"] == ["Dendritic"] and "level" not in summary


def test_bad_level_and_bad_label_map_exit_2_with_a_fix(annotated, tmp_path: Path) -> None:
    def annotate(*extra: str) -> subprocess.CompletedProcess[str]:
        query, model = str(annotated["query"]), str(annotated["model"])
        return run(
            "annotate", query, "--model", model, "--csv", str(tmp_path / "x.csv"), *extra, ok=False
        )

    bad = annotate("--level", "Teacell")
    assert bad.returncode == 2 and "fix:" in bad.stderr and "Teacell" in bad.stderr
    label_map = tmp_path / "bad.csv"
    label_map.write_text("label,ontology_term_id\nCD56+ NK,CL:9999999\n")
    bad = annotate("--label-map", str(label_map))
    assert bad.returncode == 2 and "CD56+ NK" in bad.stderr and "fix:" in bad.stderr
    assert not (tmp_path / "x.csv").exists()
