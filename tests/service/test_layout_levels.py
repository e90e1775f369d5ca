"""The roll-up toggle's levels and the every-cell layout at a level or by one model's calls.

Issue #9 §3 (GET /results lists the levels worth offering for a run) and issue #11 §2 (GET
/runs/{id}/layout with ``level`` and, for a consensus, ``source``). In process (SQLite, local
queue) on the pbmc68k cells of the level tests; the per-cell pages of GET /results (paged from
the stored predictions) are the reference for every point's label.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from cellfoundry.config import Settings
from tests.ontology.reference import PARSER
from tests.service.test_results_level import BROAD, _query
from tests.service.test_service_consensus import knn_model_dir, setup
from tests.service.test_service_layout import _run, uploaded

__all__ = ["knn_model_dir", "setup"]  # the fixtures


def _labels_by_row(view: dict[str, Any]) -> dict[int, str]:
    pts = view["points"]
    assert not pts["sampled"]
    return {row: view["labels"][lab] for row, lab in zip(pts["row"], pts["label"], strict=True)}


def _density_totals(view: dict[str, Any]) -> Counter[str]:
    grid = view["density"]
    out: Counter[str] = Counter()
    for lab, n in zip(grid["label"], grid["count"], strict=True):
        out[view["labels"][lab]] += n
    return out


def test_levels_offered_and_the_layout_at_a_level(tmp_path: Path, demo_model_dir: Path) -> None:
    path = tmp_path / "cells.h5ad"
    _query(demo_model_dir).write_h5ad(path)
    settings = Settings(home=tmp_path / "home", demo_model=False, local_workers=0)
    with uploaded(settings, demo_model_dir, path) as (c, _platform, model, ds):
        rid = _run(c, settings, ds, model, "annotation", {"layout": "pca"})
        res = c.get(f"/results/{rid}", params={"page_size": 5000}).json()
        counts = res["summary"]["label_counts"]
        predicted = set(counts) - {"Unknown"}
        own = {c: t["id"] for c, t in res["summary"]["ontology"]["terms"].items()}

        # the levels: "broad" first, then the CL terms that merge two or more predicted types
        levels = res["levels"]
        assert levels[0]["level"] == "broad" and levels[0]["term"] is None
        assert set(levels[0]["labels"]) == predicted  # every demo class is under a compartment
        terms = levels[1:]
        assert terms and all(lv["level"] == lv["term"] for lv in terms)
        by_name = {lv["name"]: lv for lv in terms}
        t_types = {c for c in predicted if BROAD[c][0] == "T cell"}
        assert len(t_types) >= 2 and set(by_name["T cell"]["labels"]) == t_types
        assert [lv["n_cells"] for lv in terms] == sorted(
            (lv["n_cells"] for lv in terms), reverse=True
        )
        for lv in terms:
            assert 2 <= len(lv["labels"]) < len(predicted)
            under = {  # by the official parser, from each class's stored term
                c for c in predicted if lv["term"] in {own[c], *PARSER.get_term_ancestors(own[c])}
            }
            assert set(lv["labels"]) == under
            # asking for it: its types become one, with the cells it said
            at = c.get(f"/results/{rid}", params={"level": lv["level"], "page_size": 1}).json()
            assert at["level"] == lv["level"]
            assert at["summary"]["ontology"]["rolled_up_counts"][lv["name"]] == lv["n_cells"]
            assert at["levels"] == levels  # the offer does not depend on the level shown

        # every cell of the layout at the broad level: the rolled-up calls of the cell pages
        broad = c.get(f"/results/{rid}", params={"level": "broad", "page_size": 5000}).json()
        want = {it["index"]: it["rolled_up_label"] for it in broad["cells"]["items"]}
        view = c.get(f"/runs/{rid}/layout", params={"level": "broad", "max_points": 5000}).json()
        assert view["level"] == "broad" and "source" not in view and "sources" not in view
        assert view["mode"] == "points" and view["n_cells"] == len(want) == 700
        assert _labels_by_row(view) == want
        assert len(view["labels"]) == len(set(view["labels"]))
        # ... and binned: the counts per label are the rolled-up counts
        dens = c.get(f"/runs/{rid}/layout", params={"level": "broad", "max_points": 10}).json()
        assert dens["mode"] == "density"
        assert _density_totals(dens) == Counter(broad["summary"]["ontology"]["rolled_up_counts"])
        # a CL term by name: the T types merge (the others at their own term's name)
        plain = _labels_by_row(c.get(f"/runs/{rid}/layout", params={"max_points": 5000}).json())
        t_cells = c.get(f"/results/{rid}", params={"level": "T cell", "page_size": 5000}).json()
        t_view = c.get(f"/runs/{rid}/layout", params={"level": "T cell", "max_points": 5000})
        t_rows = _labels_by_row(t_view.json())
        assert t_rows == {it["index"]: it["rolled_up_label"] for it in t_cells["cells"]["items"]}
        assert {row for row, lab in t_rows.items() if lab == "T cell"} == {
            row for row, lab in plain.items() if lab in t_types
        }
        # refused with what to send: an unknown level, a source on a run of one model
        bad = c.get(f"/runs/{rid}/layout", params={"level": "T-cells please"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_level"
        assert "CL:0000084" in bad.json()["error"]["hint"]
        one = c.get(f"/runs/{rid}/layout", params={"source": model})
        assert one.status_code == 422 and one.json()["error"]["code"] == "unknown_source"
        assert "leave source out" in one.json()["error"]["hint"]
        same = c.get(f"/runs/{rid}/layout", params={"source": "consensus", "max_points": 5000})
        assert same.status_code == 200 and _labels_by_row(same.json()) == plain


def test_consensus_layout_by_each_models_own_calls(setup: Any) -> None:
    c: TestClient
    c, _platform, settings, ds, model, knn, _query_cells = setup
    rid = _run(c, settings, ds, model, "consensus", {"other_model_ids": [knn], "layout": "pca"})
    res = c.get(f"/results/{rid}", params={"page_size": 5000}).json()
    items = {it["index"]: it for it in res["cells"]["items"]}
    lv = {lv["name"]: lv for lv in res["levels"]}
    assert "T cell" in lv  # the consensus's own types, its broader calls included

    whole = c.get(f"/runs/{rid}/layout", params={"max_points": 5000}).json()
    assert whole["sources"] == [model, knn] and "source" not in whole
    assert _labels_by_row(whole) == {i: it["label"] for i, it in items.items()}
    for mid in (model, knn):
        view = c.get(f"/runs/{rid}/layout", params={"source": mid, "max_points": 5000}).json()
        assert view["source"] == mid
        assert _labels_by_row(view) == {i: it["models"][mid]["label"] for i, it in items.items()}
        # at the broad level: the model's own calls rolled up (as the /results layout block's)
        at = c.get(
            f"/runs/{rid}/layout", params={"source": mid, "level": "broad", "max_points": 5000}
        ).json()
        assert at["source"] == mid and at["level"] == "broad"
        shown = c.get(f"/results/{rid}", params={"level": "broad", "page_size": 1}).json()
        block = shown["layout"]
        rows = _labels_by_row(at)
        assert [rows[i] for i in block["indices"]] == block["model_labels"][mid]
        assert len(set(rows.values())) < len(set(_labels_by_row(view).values()))
        dens = c.get(f"/runs/{rid}/layout", params={"source": mid, "max_points": 10}).json()
        assert _density_totals(dens) == Counter(it["models"][mid]["label"] for it in items.values())

    bad = c.get(f"/runs/{rid}/layout", params={"source": "someone-else"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "unknown_source"
    assert model in bad.json()["error"]["hint"] and knn in bad.json()["error"]["hint"]
