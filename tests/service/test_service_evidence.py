"""Per-cell evidence (params.explain) and marker overlap in service annotation runs.

In process (SQLite, local queue) with the local worker loop driven by the test; the library's
``cellfoundry.annotate`` over all the cells at once is the reference. Marker overlap comes from
every cell of the run: a run split into shards reports the same figures as a run in one piece.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from fastapi.testclient import TestClient

import cellfoundry
from cellfoundry.config import Settings
from cellfoundry.models.registry import load_model
from cellfoundry.result import UNS_KEY_SLASH
from cellfoundry.store.keys import create_key
from cellfoundry.store.tables import Run
from tests.service.test_service_layout import _run, uploaded
from tests.service.test_service_out_of_reference import written_query


def _overlap_close(got: dict, want: dict) -> None:
    """The same marker overlap (figures to float precision, marker lists exactly)."""
    assert set(got) == set(want)
    assert got["n_markers"] == want["n_markers"] and got["test"] == want["test"]
    assert got["expected_by_chance"] == pytest.approx(want["expected_by_chance"])
    assert got["mean_overlap"] == pytest.approx(want["mean_overlap"])
    assert got["by_predicted_type"].keys() == want["by_predicted_type"].keys()
    for t, row in want["by_predicted_type"].items():
        mine = got["by_predicted_type"][t]
        assert mine["n_cells"] == row["n_cells"]
        assert mine["overlap"] == pytest.approx(row["overlap"])
        for key in ("shared_markers", "query_markers", "reference_markers"):
            assert mine.get(key, []) == row.get(key, []), (t, key)


def test_sharded_and_unsharded_runs_report_the_library_marker_overlap(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    _, path = written_query(tmp_path, demo_model_dir)
    expected = cellfoundry.annotate(ad.read_h5ad(path), load_model(demo_model_dir))
    want = expected.findings["marker_overlap"]
    scored = [v for v in want["by_predicted_type"].values() if v["overlap"] is not None]
    assert len(scored) >= 2 and want["mean_overlap"] > 0  # informative figures

    settings = Settings(home=tmp_path / "home", demo_model=False, local_workers=0, shard_size=70)
    with uploaded(settings, demo_model_dir, path) as (c, platform, model, ds):
        runs = {}
        for shard_size in (70, 100_000):  # 5 shards, then one
            settings.shard_size = shard_size
            rid = _run(c, settings, ds, model, "annotation", {"layout": "none"})
            with platform.db.session() as s:
                run = s.get(Run, rid)
                assert run is not None
                runs[run.n_shards] = c.get(f"/results/{rid}").json()["summary"]
        assert set(runs) == {5, 1}
        for summary in runs.values():
            _overlap_close(summary["marker_overlap"], want)
        _overlap_close(runs[5]["marker_overlap"], runs[1]["marker_overlap"])


def test_explain_gives_each_cell_its_top_genes_with_contributions(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    query, path = written_query(tmp_path, demo_model_dir)
    expected = cellfoundry.annotate(ad.read_h5ad(path), load_model(demo_model_dir), explain=True)
    genes = expected.obs_columns["prediction_top_genes"]
    scores = expected.obs_columns["prediction_top_gene_contributions"]

    settings = Settings(home=tmp_path / "home", demo_model=False, local_workers=0, shard_size=90)
    with uploaded(settings, demo_model_dir, path) as (c, _, model, ds):
        plain = _run(c, settings, ds, model, "annotation", {"layout": "none"})
        assert "top_genes" not in c.get(f"/results/{plain}").json()["cells"]["items"][0]

        rid = _run(c, settings, ds, model, "annotation", {"layout": "none", "explain": True})
        items = c.get(f"/results/{rid}", params={"page_size": 5000}).json()["cells"]["items"]
        assert [i["index"] for i in items] == list(range(query.n_obs))
        for item, g, sc in zip(items, genes, scores, strict=True):
            top = item["top_genes"]
            assert [t["gene"] for t in top] == [x for x in g.split(";") if x]
            values = [t["contribution"] for t in top]
            np.testing.assert_allclose(values, [float(v) for v in sc.split(";") if v], rtol=1e-3)
            assert values == sorted(values, reverse=True) and all(v > 0 for v in values)
        assert sum(bool(i["top_genes"]) for i in items) > 0.9 * len(items)

        # one cell's evidence: the same as its row of the pages
        assert c.get(f"/results/{rid}/cells/7").json() == items[7]
        last = c.get(f"/results/{rid}/cells/{query.n_obs - 1}").json()
        assert last["cell"] == query.obs_names[-1]
        r = c.get(f"/results/{rid}/cells/{query.n_obs}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "cell_not_found"
        assert "index" in r.json()["error"]["hint"]
        assert c.get(f"/results/{rid}/cells/-1").status_code == 422

        # the downloads carry the evidence columns
        csv = c.get(f"/download/{rid}", params={"format": "csv"}).text
        header = csv.splitlines()[0].split(",")
        assert {"prediction_top_genes", "prediction_top_gene_contributions"} <= set(header)
        h5 = tmp_path / "out.h5ad"
        h5.write_bytes(c.get(f"/download/{rid}", params={"format": "h5ad"}).content)
        back = ad.read_h5ad(h5)
        assert back.obs["prediction_top_genes"].astype(str).tolist() == [str(g) for g in genes]
        # per-type findings keep one key per type, "/" in class names as "∕" (no nested groups)
        types = expected.findings["marker_overlap"]["by_predicted_type"]
        assert any("/" in t for t in types)
        stored = back.uns["cellfoundry"]["marker_overlap"]["by_predicted_type"]
        assert set(stored) == {t.replace("/", UNS_KEY_SLASH) for t in types}
        for t, row in types.items():
            assert stored[t.replace("/", UNS_KEY_SLASH)]["n_cells"] == row["n_cells"]

        # someone else cannot read the cell
        c2 = TestClient(c.app)
        with c.app.state.platform.db.session() as s:
            _, other = create_key(s, "someone else")
        c2.headers["Authorization"] = f"Bearer {other}"
        r = c2.get(f"/results/{rid}/cells/7")
        assert r.status_code == 404


def test_explain_refusals(tmp_path: Path, demo_model_dir: Path) -> None:
    _, path = written_query(tmp_path, demo_model_dir)
    settings = Settings(
        home=tmp_path / "home", demo_model=False, local_workers=0, explain_max_cells=100
    )
    with uploaded(settings, demo_model_dir, path) as (c, _, model, ds):
        r = c.post(
            "/submit",
            json={"dataset_id": ds, "model_id": model, "params": {"explain": True}},
        )
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == "invalid_params" and "320" in err["message"]
        assert "without explain" in err["hint"]
