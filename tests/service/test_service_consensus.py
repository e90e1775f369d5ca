"""The consensus application: several models over the same cells, combined up the Cell Ontology.

In process (SQLite, local queue) with the local worker loop driven by the test. The library's
``cellfoundry.annotate(data, [model, model])`` over all the cells at once is the reference for
the calls; the official Cell Ontology parser for each model's agreement with the consensus.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

import cellfoundry
from cellfoundry.api import train
from cellfoundry.config import Settings
from cellfoundry.demo import DEMO_LABEL_KEY, demo_dataset
from cellfoundry.models.registry import load_model
from cellfoundry.ontology import roll_up
from cellfoundry.service.platform import Platform
from cellfoundry.store.keys import create_key
from cellfoundry.store.model_records import register_model
from cellfoundry.store.tables import ApiKey, Run
from tests.ontology.reference import PARSER
from tests.service.test_service_layout import _run, uploaded
from tests.service.test_service_out_of_reference import written_query


@pytest.fixture(scope="module")
def knn_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = train(demo_dataset(), DEMO_LABEL_KEY, "knn", name="demo-knn", n_features=None)
    return model.save(tmp_path_factory.mktemp("knn") / "model")


def _register(platform: Platform, folder: Path, **kw: object) -> str:
    with platform.db.session() as s:
        return register_model(s, platform.storage, folder, **kw).id  # type: ignore[arg-type]


def _lineage_agreement(call_terms: np.ndarray, own_terms: np.ndarray, unknown: np.ndarray) -> float:
    """Share of cells whose model term is the call's term, or above or below it (official CL)."""
    ok = []
    for ct, mt, unk in zip(call_terms, own_terms, unknown, strict=True):
        if unk or not ct or not mt:
            ok.append(False)
            continue
        ok.append(
            ct == mt or ct in PARSER.get_term_ancestors(mt) or mt in PARSER.get_term_ancestors(ct)
        )
    return float(np.mean(ok))


@pytest.fixture
def setup(
    tmp_path: Path, demo_model_dir: Path, knn_model_dir: Path
) -> Iterator[tuple[TestClient, Platform, Settings, str, str, str, ad.AnnData]]:
    query, path = written_query(tmp_path, demo_model_dir)
    settings = Settings(
        home=tmp_path / "home", demo_model=False, local_workers=0, shard_size=90
    )  # 4 shards, merged
    with uploaded(settings, demo_model_dir, path) as (c, platform, model, ds):
        knn = _register(platform, knn_model_dir)
        yield c, platform, settings, ds, model, knn, query


def test_consensus_run_matches_the_library(
    setup, demo_model_dir: Path, knn_model_dir: Path
) -> None:
    c, platform, settings, ds, model, knn, query = setup
    expected = cellfoundry.annotate(
        query.copy(), [load_model(demo_model_dir), load_model(knn_model_dir)], explain=True
    )
    names = expected.member_names  # the library names the models; the service uses their ids
    ids = [model, knn]
    obs = expected.obs_columns

    rid = _run(
        c,
        settings,
        ds,
        model,
        "consensus",
        {"other_model_ids": [knn], "layout": "pca", "explain": True},
    )
    with platform.db.session() as s:
        run = s.get(Run, rid)
        assert run is not None and run.n_shards == 4
    res = c.get(f"/results/{rid}", params={"page_size": 5000}).json()
    summary = res["summary"]
    assert res["run"]["model_ids"] == ids

    # the calls: the library's consensus over all the cells
    items = res["cells"]["items"]
    assert [i["cell"] for i in items] == list(query.obs_names)
    display = np.where(expected.unknown, "Unknown", expected.labels)
    assert [i["label"] for i in items] == display.tolist()
    assert [i["predicted"] for i in items] == [str(x) for x in expected.labels]
    assert [i["ontology_term_id"] for i in items] == [str(t) for t in expected.term_ids]
    np.testing.assert_allclose([i["agreement"] for i in items], obs["consensus_agreement"])
    np.testing.assert_allclose([i["confidence"] for i in items], expected.confidence, rtol=1e-6)
    assert {"Unknown"} < set(display)  # both called and Unknown cells: the figures mean something
    for j, (mid, name) in enumerate(zip(ids, names, strict=True)):
        own = expected.members[j]
        assert [i["models"][mid]["predicted"] for i in items] == [str(x) for x in own.labels]
        assert [i["models"][mid]["unknown"] for i in items] == own.unknown.tolist()
        assert [i["models"][mid]["ontology_term_id"] for i in items] == list(own.term_ids)
        top = obs[f"prediction_top_genes__{name}"]
        assert [";".join(g["gene"] for g in i["models"][mid]["top_genes"]) for i in items] == list(
            top
        )
        # each model's marker overlap, from all its cells
        want = own.findings["marker_overlap"]
        got = summary["members"][mid]["marker_overlap"]
        assert got["mean_overlap"] == pytest.approx(want["mean_overlap"])
        for t, row in want["by_predicted_type"].items():
            assert got["by_predicted_type"][t]["overlap"] == pytest.approx(row["overlap"])

    # the summary's consensus figures
    cons = summary["consensus"]
    lib = expected.consensus_summary()
    assert cons["model_ids"] == ids
    for key in ("mean_agreement", "share_full_agreement", "share_unknown", "share_broader_term"):
        assert cons[key] == pytest.approx(lib[key]), key
    agree = np.round(np.asarray(obs["consensus_agreement"], dtype=float), 4)
    dist = {row["agreement"]: row for row in cons["agreement_distribution"]}
    assert sum(row["n_cells"] for row in dist.values()) == query.n_obs
    for v in np.unique(agree):
        assert dist[float(v)]["n_cells"] == int((agree == v).sum())
        assert dist[float(v)]["share"] == pytest.approx(float((agree == v).mean()))
    for j, mid in enumerate(ids):
        want = _lineage_agreement(expected.term_ids, expected.members[j].term_ids, expected.unknown)
        assert cons["per_model"][mid]["agreement"] == pytest.approx(want)
        same = (expected.term_ids == expected.members[j].term_ids) & ~expected.unknown
        assert cons["per_model"][mid]["same_call"] == pytest.approx(float(same.mean()))
    assert set(cons["weights"]) == set(ids)
    # how the weights were chosen is the library's too (sharded or not)
    assert cons["weighting"]["method"] == lib["weighting"]["method"]
    assert cons["weighting"].get("chosen") == lib["weighting"].get("chosen")
    lay = res["layout"]
    assert lay["n_points"] == query.n_obs and lay["labels"] == display.tolist()
    assert [query.obs_names[i] for i in lay["indices"]] == lay["cells"]
    for j, mid in enumerate(ids):  # each model's own labels per point, to colour the layout by
        own = expected.members[j]
        own_display = np.where(own.unknown, "Unknown", own.labels.astype(str))
        assert lay["model_labels"][mid] == [str(own_display[i]) for i in lay["indices"]]
    broad_res = c.get(f"/results/{rid}", params={"level": "broad", "page_size": 1})
    assert broad_res.status_code == 200, broad_res.text
    broad = broad_res.json()["layout"]
    for mid in ids:  # at a broader level: fewer distinct labels, Unknown kept where it was
        rolled, fine = broad["model_labels"][mid], lay["model_labels"][mid]
        assert len(set(rolled)) <= len(set(fine))
        assert [r == "Unknown" for r in rolled] == [f == "Unknown" for f in fine]

    # at a broader level, the consensus's own broader calls roll up too (the library's roll-up)
    broader = [i for i in items if i["predicted"] not in summary["classes"] and not i["unknown"]]
    assert broader  # calls that are no model's class: a common term of two models' classes
    leveled = c.get(f"/results/{rid}", params={"page_size": 5000, "level": "broad"}).json()
    for item in leveled["cells"]["items"]:
        if not item["unknown"]:
            want = roll_up(item["ontology_term_id"], "broad")
            assert item["rolled_up_ontology_term_id"] == want, item
    counts = leveled["summary"]["ontology"]["rolled_up_counts"]
    assert counts == dict(Counter(i["rolled_up_label"] for i in leveled["cells"]["items"]))

    # one cell, and the downloads
    assert c.get(f"/results/{rid}/cells/3").json() == items[3]
    table = pd.read_csv(io.StringIO(c.get(f"/download/{rid}", params={"format": "csv"}).text))
    assert table["consensus_cell_type"].fillna("").astype(str).tolist() == [
        str(x) for x in obs["consensus_cell_type"]
    ]
    for mid in ids:
        assert f"predicted_cell_type__{mid}" in table.columns
    h5 = platform.storage.run_dir(rid) / "dl.h5ad"
    h5.write_bytes(c.get(f"/download/{rid}", params={"format": "h5ad"}).content)
    back = ad.read_h5ad(h5)
    assert back.obs["predicted_cell_type"].astype(str).tolist() == [str(x) for x in expected.labels]
    np.testing.assert_allclose(back.obs["consensus_agreement"], obs["consensus_agreement"])
    assert back.obs[f"predicted_cell_type__{knn}"].astype(str).tolist() == [
        str(x) for x in expected.members[1].labels
    ]
    assert back.uns["cellfoundry"]["family"] == "consensus"


def test_consensus_submit_checks_every_model(setup, tmp_path: Path, demo_model_dir: Path) -> None:
    c, platform, _, ds, model, knn, _ = setup
    with platform.db.session() as s:
        _, other_key = create_key(s, "someone else")
        other_uid = s.query(ApiKey).filter(ApiKey.name == "someone else").one().user_id
    theirs = _register(platform, demo_model_dir, model_id="theirs", owner_id=other_uid)

    def submit(params: dict, model_id: str = model) -> dict:
        r = c.post(
            "/submit",
            json={
                "dataset_id": ds,
                "model_id": model_id,
                "application_id": "consensus",
                "params": params,
            },
        )
        return {"status": r.status_code, **r.json()}

    # another owner's private model, as model_id or among the others: not found, with a hint
    for params, mid in (
        ({"other_model_ids": [theirs]}, model),
        ({"other_model_ids": [knn]}, theirs),
    ):
        r = submit(params, mid)
        assert r["status"] == 404, r
        assert r["error"]["code"] == "model_not_found" and "theirs" in r["error"]["message"]
        assert "GET /models" in r["error"]["hint"]
    # the owner may combine it
    other = TestClient(c.app)
    other.headers["Authorization"] = f"Bearer {other_key}"
    with open(tmp_path / "cells.h5ad", "rb") as fh:  # the file the setup uploaded
        their_ds = other.post("/upload", files={"file": ("cells.h5ad", fh)}).json()["id"]
    r = other.post(
        "/submit",
        json={
            "dataset_id": their_ds,
            "model_id": knn,
            "application_id": "consensus",
            "params": {"other_model_ids": ["theirs"], "layout": "none"},
        },
    )
    assert r.status_code == 201, r.text
    queued = r.json()["run_id"]
    assert other.get(f"/status/{queued}").json()["model_ids"] == [knn, "theirs"]
    # a model in use by a queued consensus (not as its model_id) is not deleted under it
    r = other.delete("/models/theirs")
    assert r.status_code == 409 and queued in r.json()["error"]["message"]

    # invalid model lists: 422 with what to fix
    bad = {
        "one model": {"other_model_ids": []},
        "no list": {},
        "duplicates": {"other_model_ids": [knn, knn]},
        "too many": {"other_model_ids": [knn, "a", "b", "c", "d"]},
        "bad id": {"other_model_ids": ["../x"]},
    }
    for what, params in bad.items():
        r = submit(params)
        assert r["status"] == 422, (what, r)
        assert r["error"]["code"] == "invalid_params", what
        assert "other_model_ids" in r["error"]["message"], what
        assert r["error"]["hint"], what
    r = submit({"other_model_ids": [knn, knn]})
    assert "repeated" in r["error"]["message"]
    r = submit({"other_model_ids": [model]})
    assert r["status"] == 422 and "both model_id and" in r["error"]["message"]
    with platform.db.session() as s:  # nothing was queued by a refused submit
        assert s.query(Run).filter(Run.application_id == "consensus").count() == 1
