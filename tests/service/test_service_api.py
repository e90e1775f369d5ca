"""The API suite, run against (SQLite + local worker) and (PostgreSQL + Celery/Redis)."""

from __future__ import annotations

import io
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tests.service.conftest import Stack, wait_run

MODEL = "demo-logreg-pbmc68k"


@pytest.fixture(scope="module")
def small_h5ad(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Path:
    """200 cells of counts over the demo model's genes (plus 50 unrelated genes)."""
    genes = (demo_model_dir / "genes.txt").read_text().split()
    rng = np.random.default_rng(1)
    names = [*genes, *[f"OTHER{i}" for i in range(50)]]
    x = rng.poisson(rng.gamma(0.5, 1.0, len(names)), size=(200, len(names))).astype(np.float32)
    a = ad.AnnData(
        X=sp.csr_matrix(x),
        obs=pd.DataFrame(index=[f"c{i}" for i in range(200)]),
        var=pd.DataFrame(index=names),
    )
    a.obs["group"] = pd.Categorical(rng.choice(["a", "b"], 200))
    path = tmp_path_factory.mktemp("small") / "small.h5ad"
    a.write_h5ad(path)
    return path


def upload(client, path: Path, name: str | None = None):  # type: ignore[no-untyped-def]
    with open(path, "rb") as fh:
        return client.post(
            "/upload", files={"file": (name or path.name, fh, "application/octet-stream")}
        )


def test_public_catalogue_and_health(stack: Stack) -> None:
    c = stack.server.client(key="")
    apps = c.get("/applications").json()
    ids = {a["id"] for a in apps}
    assert {"annotation", "embedding", "finetune", "evaluation"} <= ids
    assert all("params_schema" in a for a in apps)
    models = c.get("/models").json()
    demo = next(m for m in models if m["id"] == MODEL)
    assert demo["ready"] and demo["family"] == "logreg" and demo["size_bytes"] > 0
    assert (
        demo["metrics"]["training_holdout"]["accuracy"] > 0.3
    )  # measured at training, not typed in
    assert demo["requirements"]["n_genes"] == 765
    assert [m["id"] for m in c.get("/applications/annotation/models").json()] == [
        m["id"] for m in models
    ]
    assert c.get("/health").json() == {"status": "ok"}  # anonymous: no details
    health = stack.server.client().get("/health").json()
    assert health["status"] == "ok" and health["database"]["ok"] and health["queue"]["ok"]
    assert MODEL in health["loaded_models"] and health["workers"]
    assert c.get("/applications/nope/models").json()["error"]["code"] == "unknown_application"
    assert c.get("/docs").status_code == 200
    assert c.get("/openapi.json").json()["paths"]["/predict"]


def test_auth_required_and_errors_are_json(stack: Stack) -> None:
    anon = stack.server.client(key="")
    for method, path in [
        ("get", "/runs"),
        ("get", "/datasets"),
        ("get", "/status/r_x"),
        ("post", "/submit"),
        ("post", "/predict"),
        ("get", "/results/r_x"),
        ("get", "/download/r_x"),
    ]:
        r = getattr(anon, method)(path)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["error"]["code"] == "unauthorized" and r.json()["error"]["hint"]
    bad = stack.server.client(key="cf_0000_nope")
    assert bad.get("/runs").json()["error"]["code"] == "invalid_key"
    c = stack.server.client()
    r = c.get("/runs/x/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = c.post("/submit", json={"dataset_id": "x"})
    assert r.status_code == 422 and "model_id" in r.json()["error"]["message"]


def test_upload_dedup_bad_files_limits_and_traversal(
    stack: Stack, small_h5ad: Path, tmp_path: Path
) -> None:
    c = stack.server.client()
    first = upload(c, small_h5ad)
    assert first.status_code == 200, first.text
    d = first.json()
    assert d["n_cells"] == 200 and d["report"]["ok"] and not d["duplicate"]
    cov = {x["target"]: x for x in d["report"]["coverage"]}
    assert cov[f"model {MODEL}"]["fraction_present"] == 1.0
    again = upload(c, small_h5ad, name="renamed.h5ad").json()
    assert again["id"] == d["id"] and again["duplicate"]
    # unreadable content with a valid extension
    junk = tmp_path / "junk.h5ad"
    junk.write_bytes(b"this is not hdf5" * 100)
    r = upload(c, junk)
    # content that is not what the extension says: named as such (data.io.detect_format)
    assert r.status_code == 422, r.text
    assert "junk.h5ad is text, but its name ends in .h5ad" in r.json()["error"]["message"]
    assert r.json()["error"]["hint"]
    # unsupported type
    r = c.post("/upload", files={"file": ("data.exe", b"MZ....", "application/octet-stream")})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_type"
    # wrong field name
    r = c.post("/upload", files={"data": ("a.csv", b"cell,G1\nc1,1\n", "text/csv")})
    assert r.status_code == 422 and r.json()["error"]["code"] == "missing_file"
    # over the limit (20 MB in tests), refused while streaming
    big = io.BytesIO(b"0" * (21 * 1024 * 1024))
    r = c.post("/upload", files={"file": ("big.csv", big, "text/csv")})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    assert not list((stack.home / "storage" / "tmp").glob("*.part"))
    # a path-traversal file name is stored under a safe name inside the storage folder
    csv = b"cell," + ",".join(["CD3D", "CD3E", "MS4A1"]).encode() + b"\nc1,1,2,3\nc2,0,1,5\n"
    r = c.post("/upload", files={"file": ("../../../../tmp/evil.csv", csv, "text/csv")})
    assert r.status_code == 200, r.text
    assert r.json()["filename"] == "evil.csv"
    assert not Path("/tmp/evil.csv").exists() or Path("/tmp/evil.csv").read_bytes() != csv
    # ids that could escape a folder are refused by validation
    assert c.get("/status/..%2F..%2Fetc").status_code in (404, 422)
    r = c.get("/datasets/a.b")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_other_users_runs_are_404(stack: Stack, small_h5ad: Path) -> None:
    alice = stack.server.client(stack.server.new_key("alice"))
    bob = stack.server.client(stack.server.new_key("bob"))
    ds = upload(alice, small_h5ad).json()["id"]
    run = alice.post(
        "/submit",
        json={
            "dataset_id": ds,
            "model_id": MODEL,
            "application_id": "annotation",
            "params": {"layout": "none"},
        },
    )
    assert run.status_code == 201, run.text
    rid = run.json()["run_id"]
    for path in (f"/status/{rid}", f"/results/{rid}", f"/download/{rid}"):
        r = bob.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "run_not_found"
    assert bob.post(f"/runs/{rid}/cancel").status_code == 404
    assert bob.get(f"/datasets/{ds}").status_code == 404
    r = bob.post("/submit", json={"dataset_id": ds, "model_id": MODEL})
    assert r.status_code == 404 and r.json()["error"]["code"] == "dataset_not_found"
    assert rid not in {x["id"] for x in bob.get("/runs").json()["items"]}
    assert wait_run(alice, rid)["state"] == "succeeded"


def test_bad_params_are_refused_before_queueing(stack: Stack, small_h5ad: Path) -> None:
    c = stack.server.client()
    ds = upload(c, small_h5ad).json()["id"]
    before = c.get("/runs").json()["total"]
    for params in ({"threshold": 3}, {"nope": 1}, {"layout": "tsne"}):
        r = c.post(
            "/submit",
            json={
                "dataset_id": ds,
                "model_id": MODEL,
                "application_id": "annotation",
                "params": params,
            },
        )
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_params", r.text
    r = c.post(
        "/submit",
        json={"dataset_id": ds, "model_id": MODEL, "application_id": "evaluation", "params": {}},
    )
    assert r.status_code == 422 and "label_key" in r.json()["error"]["message"]
    r = c.post("/submit", json={"dataset_id": ds, "model_id": "no-such-model"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = c.post("/submit", json={"dataset_id": ds, "model_id": MODEL, "application_id": "nope"})
    assert r.status_code == 404
    assert c.get("/runs").json()["total"] == before


def test_failing_run_reports_reason_and_cancel(stack: Stack, small_h5ad: Path) -> None:
    c = stack.server.client()
    ds = upload(c, small_h5ad).json()["id"]
    rid = c.post(
        "/submit",
        json={
            "dataset_id": ds,
            "model_id": MODEL,
            "application_id": "evaluation",
            "params": {"label_key": "no_such_column"},
        },
    ).json()["run_id"]
    st = wait_run(c, rid, timeout=90)
    assert st["state"] == "failed" and st["finished_at"]
    assert (
        "no obs column 'no_such_column'" in st["error"]["message"]
        and "group" in st["error"]["hint"]
    )
    r = c.get(f"/results/{rid}")
    assert r.status_code == 409 and "no_such_column" in r.json()["error"]["message"]
    # cancel
    rid2 = c.post(
        "/submit", json={"dataset_id": ds, "model_id": MODEL, "params": {"layout": "none"}}
    ).json()["run_id"]
    st = c.post(f"/runs/{rid2}/cancel").json()
    if st["state"] != "succeeded":  # it may have finished already on a fast worker
        assert st["state"] == "cancelled"
        assert wait_run(c, rid2)["state"] == "cancelled"
    page = c.get("/runs", params={"state": "failed", "page_size": 1}).json()
    assert page["total"] >= 1 and len(page["items"]) == 1 and page["items"][0]["state"] == "failed"


def test_end_to_end_real_data(
    stack: Stack, shared_dir: Path, demo_model_dir: Path, tmp_path: Path
) -> None:
    """Upload pbmc3k -> annotate -> poll -> results -> download h5ad; predictions equal the library's."""
    import cellfoundry

    c = stack.server.client()
    path = shared_dir / "data" / "pbmc3k_labeled_counts.h5ad"
    up = upload(c, path)
    assert up.status_code == 200, up.text
    ds = up.json()
    assert ds["n_cells"] == 2638 and ds["format"] == "h5ad"
    rid = c.post(
        "/submit",
        json={
            "dataset_id": ds["id"],
            "model_id": MODEL,
            "application_id": "annotation",
            "params": {"layout": "pca", "label_key": "cell_type"},
        },
    ).json()["run_id"]
    st = wait_run(c, rid, timeout=180)
    assert st["state"] == "succeeded", (st, stack.logs())
    assert st["progress"] == 100 and st["started_at"] and st["finished_at"]
    res = c.get(f"/results/{rid}", params={"page": 2, "page_size": 10}).json()
    summ = res["summary"]
    assert summ["n_cells"] == 2638 and sum(summ["label_counts"].values()) == 2638
    assert 0 < summ["mean_confidence"] <= 1 and 0 <= summ["unknown_share"] < 1
    assert summ["metrics"]["n_cells"] == 2638  # labels exist -> metrics
    assert res["layout"]["n_points"] == 2638 and not res["layout"]["sampled"]
    cells = res["cells"]
    assert (
        cells["total"] == 2638 and len(cells["items"]) == 10 and len(cells["items"][0]["top3"]) == 3
    )
    # download the annotated h5ad and compare with the library on the same file
    r = c.get(f"/download/{rid}", params={"format": "h5ad"})
    assert r.status_code == 200
    out = tmp_path / "annotated.h5ad"
    out.write_bytes(r.content)
    got = ad.read_h5ad(out)
    ref = cellfoundry.annotate(path, demo_model_dir)
    assert got.n_obs == 2638 and list(got.obs_names) == list(ref.obs_names)
    np.testing.assert_allclose(
        got.obsm["cellfoundry_probabilities"], ref.probabilities, rtol=1e-5, atol=1e-6
    )
    assert (got.obs["predicted_cell_type"].astype(str).to_numpy() == ref.labels.astype(str)).all()
    assert got.obs["prediction_unknown"].to_numpy().sum() == ref.unknown.sum()
    # the same cell through /predict gets the same probabilities (same preprocessing)
    raw = ad.read_h5ad(path)
    symbols = raw.var["gene_symbols"].astype(str).to_numpy()
    dup = pd.Series(symbols).duplicated(keep=False).to_numpy()
    x = sp.csr_matrix(raw.X)
    checked = 0
    for i in range(raw.n_obs):
        row = x[i]
        if dup[row.indices].any():
            continue  # a duplicated symbol cannot be sent as one key
        expr = {symbols[j]: float(v) for j, v in zip(row.indices, row.data, strict=True)}
        p = c.post("/predict", json={"expression": expr, "model_id": MODEL, "top_k": 10}).json()
        top = {t["label"]: t["probability"] for t in p["predictions"][0]["top_k"]}
        want = dict(zip(ref.classes, ref.probabilities[i].tolist(), strict=True))
        for lab, prob in top.items():
            assert prob == pytest.approx(want[lab], rel=1e-5, abs=1e-6)
        checked += 1
        if checked == 3:
            break
    assert checked == 3
    # csv and parquet downloads hold the same calls
    csv = pd.read_csv(io.BytesIO(c.get(f"/download/{rid}", params={"format": "csv"}).content))
    pq = pd.read_parquet(
        io.BytesIO(c.get(f"/download/{rid}", params={"format": "parquet"}).content)
    )
    assert len(csv) == len(pq) == 2638
    assert (csv["predicted_cell_type"].astype(str).to_numpy() == ref.labels.astype(str)).all()
    assert (pq["true_label"] == raw.obs["cell_type"].astype(str).to_numpy()).all()


def test_evaluation_run_stores_measured_metrics(stack: Stack, shared_dir: Path) -> None:
    c = stack.server.client()
    ds = upload(c, shared_dir / "data" / "pbmc3k_labeled_counts.h5ad").json()["id"]
    rid = c.post(
        "/submit",
        json={
            "dataset_id": ds,
            "model_id": MODEL,
            "application_id": "evaluation",
            "params": {
                "label_key": "cell_type",
                "baseline_n_features": 300,
                "baseline_max_iter": 40,
            },
        },
    ).json()["run_id"]
    st = wait_run(c, rid, timeout=180)
    assert st["state"] == "succeeded", (st, stack.logs())
    res = c.get(f"/results/{rid}").json()
    summ = res["summary"]
    comp = summ["baseline_comparison"]
    # the baseline trained on this dataset's own labels is far better than the demo model's foreign labels
    assert comp["logreg_baseline_on_test"]["accuracy"] > 0.5
    assert comp["logreg_baseline_on_test"]["accuracy"] > comp["model_on_test"]["accuracy"]
    assert comp["logreg_baseline_on_test"]["macro_f1"] > comp["model_on_test"]["macro_f1"]
    assert summ["confusion"]["counts"] and summ["most_confused"]
    assert {"confusion", "most_confused", "predictions"} <= set(res["files"])
    model = next(m for m in c.get("/models").json() if m["id"] == MODEL)
    ev = [e for e in model["metrics"]["evaluations"] if e["run_id"] == rid]
    assert ev and ev[0]["metrics"]["accuracy"] == pytest.approx(summ["metrics"]["accuracy"])
    # the demo model's labels differ from pbmc3k's: the ontology-aware score still measures it
    m = summ["metrics"]
    assert m["macro_f1_over"] == "true labels" and 0 < m["expressible_share"] <= 1
    assert m["ontology_accuracy"] > m["accuracy"]


def test_predict_validation_and_coverage_warning(stack: Stack) -> None:
    c = stack.server.client()
    r = c.post("/predict", json={"expression": {"CD19": 8.5, "MS4A1": 9.2}, "top_k": 2})
    assert r.status_code == 200, r.text
    p = r.json()
    assert len(p["predictions"]) == 1 and len(p["predictions"][0]["top_k"]) == 2
    assert 1 <= p["coverage"]["n_present"] <= 2 and p["warnings"]
    many = c.post(
        "/predict",
        json={"expression": [{"MS4A1": 9.0}, {"CD3D": 4.0, "CD3E": 3.0}], "values": "lognorm"},
    )
    assert len(many.json()["predictions"]) == 2
    assert (
        c.post("/predict", json={"expression": {"NOTAGENE": 1.0}}).json()["error"]["code"]
        == "low_gene_coverage"
    )
    assert c.post("/predict", json={"expression": {"CD3D": -1.0}}).status_code == 422
    assert c.post("/predict", json={"expression": {}}).status_code == 422
    assert (
        c.post("/predict", json={"expression": {"CD3D": 1}, "model_id": "nope"}).status_code == 404
    )


def test_embedding_and_finetune_runs(stack: Stack, small_h5ad: Path) -> None:
    c = stack.server.client()
    ds = upload(c, small_h5ad).json()["id"]
    emb = c.post(
        "/submit",
        json={
            "dataset_id": ds,
            "model_id": MODEL,
            "application_id": "embedding",
            "params": {"layout": "pca", "n_components": 10},
        },
    ).json()["run_id"]
    ft = c.post(
        "/submit",
        json={
            "dataset_id": ds,
            "model_id": MODEL,
            "application_id": "finetune",
            "params": {
                "label_key": "group",
                "name": f"grp-{stack.kind}",
                "options": {"n_features": None},
            },
        },
    ).json()["run_id"]
    st = wait_run(c, emb)
    assert st["state"] == "succeeded", (st, stack.logs())
    res = c.get(f"/results/{emb}").json()
    assert res["summary"]["embedding_dim"] == 765 and res["layout"]["n_points"] == 200
    assert len(res["layout"]["x"]) == 200 and not res["layout"]["sampled"]
    st = wait_run(c, ft)
    assert st["state"] == "succeeded", (st, stack.logs())
    new_id = c.get(f"/results/{ft}").json()["summary"]["new_model_id"]
    model = next(m for m in c.get("/models").json() if m["id"] == new_id)
    assert model["classes"] == ["a", "b"] and model["ready"] and model["source_run_id"] == ft
    # the new model serves runs at once
    rid = c.post(
        "/submit", json={"dataset_id": ds, "model_id": new_id, "params": {"layout": "none"}}
    ).json()
    assert wait_run(c, rid["run_id"])["state"] == "succeeded"
