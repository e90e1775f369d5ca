"""The service runs foundation-model evaluation and fine-tuning end to end (SQLite + local worker).

A tiny random SCimilarity checkpoint in the published layout, a ``scimilarity-head`` annotator
trained on synthetic labelled counts, ``cellfoundry serve --model`` with it registered, then an
``evaluation`` run (logreg vs head) and a ``finetune`` run whose new model annotates via /submit.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import make_counts_adata
from tests.service.conftest import Stack, make_stack, wait_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models" / "scimilarity"))
from scim_helpers import official, write_official_checkpoint

LABEL = "cell_type"


@pytest.fixture(scope="module")
def scim(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random SCimilarity checkpoint, a head annotator trained on it and a labelled dataset."""
    import cellfoundry

    official("nn_models")  # skips when the reference package is absent
    root = tmp_path_factory.mktemp("scim-service")
    reference = make_counts_adata(n_cells=240, n_genes=80, n_types=3, seed=5)
    ckpt = write_official_checkpoint(
        root / "ckpt", sorted(map(str, reference.var_names)), [32, 16], 8, seed=1
    )
    model = root / "scim-head"
    cellfoundry.train(reference, LABEL, "scimilarity-head", checkpoint=ckpt, out=model)
    data = make_counts_adata(n_cells=180, n_genes=80, n_types=3, seed=6)
    data_path = root / "labelled.h5ad"
    data.write_h5ad(data_path)
    return {"ckpt": ckpt, "model": model, "data": data_path}


@pytest.fixture(scope="module")
def scim_stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    scim: dict[str, Path],
) -> Iterator[Stack]:
    """SQLite + one local worker, no demo model, the SCimilarity head model registered at start."""
    home = tmp_path_factory.mktemp("scim-stack")
    st = make_stack("sqlite-local", home, request, scim["model"], CELLFOUNDRY_DEMO_MODEL="false")
    try:
        st.start()
    except Exception:
        st.stop()
        shutil.rmtree(home, ignore_errors=True)
        raise
    yield st
    st.stop()


def _upload(stack: Stack, path: Path) -> str:
    with open(path, "rb") as fh:
        r = stack.server.client().post(
            "/upload", files={"file": (path.name, fh, "application/octet-stream")}
        )
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def _head_model_id(stack: Stack) -> str:
    models = stack.server.client().get("/models").json()
    heads = [m["id"] for m in models if m["family"] == "scimilarity-head"]
    assert len(heads) == 1, models
    return str(heads[0])


def _run_dir(stack: Stack, run_id: str) -> Path:
    return stack.home / "storage" / "runs" / run_id


def test_evaluation_of_a_foundation_model_compares_methods(
    scim_stack: Stack, scim: dict[str, Path]
) -> None:
    c = scim_stack.server.client()
    ds = _upload(scim_stack, scim["data"])
    mid = _head_model_id(scim_stack)
    r = c.post(
        "/submit",
        json={
            "dataset_id": ds,
            "model_id": mid,
            "application_id": "evaluation",
            "params": {"label_key": LABEL, "methods": ["logreg", "head"], "seeds": 1, "epochs": 1},
        },
    )
    assert r.status_code == 201, r.text
    rid = r.json()["run_id"]
    st = wait_run(c, rid, timeout=90)
    assert st["state"] == "succeeded", (st, scim_stack.logs())
    res = c.get(f"/results/{rid}").json()
    summ = res["summary"]
    assert summ["evaluator"] == "cellfoundry.evaluation.evaluate"
    per_method = summ["metrics"]["per_method"]
    assert {k.rsplit("-", 1)[1] for k in per_method} == {"logreg", "head"}, per_method
    assert "summary_mean_std_csv" in res["files"] and "report_json" in res["files"]
    # every per-method figure equals the accuracy recomputed from the stored predictions
    report = _run_dir(scim_stack, rid) / "report"
    runs = summ["report"]["runs"]
    assert len(runs) == 2 and {r_["method"] for r_ in runs} == {"logreg", "head"}
    for run in runs:
        pred = pd.read_csv(report / run["file"])
        assert abs(len(pred) - 180 * 0.3) <= 3  # the held-out share of the 180 cells
        acc = float((pred["true"].astype(str) == pred["predicted"].astype(str)).mean())
        got = per_method[f"{run['model']}-{run['method']}"]
        assert got["accuracy_mean"] == pytest.approx(acc, abs=1e-9)
        assert 0 <= got["macro_f1_mean"] <= 1
    # the logistic regression on this well-separated data is clearly better than chance
    logreg = next(v for k, v in per_method.items() if k.endswith("-logreg"))
    assert logreg["accuracy_mean"] > 0.6
    # each method keeps its own metrics; no method's figure is stored as the model's own
    assert not {"best_method", "accuracy", "macro_f1"} & set(summ["metrics"])
    assert set(summ["metrics"]["reference"]) == {"majority", "chance"}
    # stored against the model
    model = next(m for m in c.get("/models").json() if m["id"] == mid)
    ev = [e for e in model["metrics"]["evaluations"] if e["run_id"] == rid]
    assert ev and ev[0]["metrics"]["per_method"] == per_method


@pytest.mark.parametrize("method", ["head", "lora"])
def test_finetune_registers_a_model_that_annotates(
    scim_stack: Stack, scim: dict[str, Path], method: str
) -> None:
    c = scim_stack.server.client()
    ds = _upload(scim_stack, scim["data"])
    mid = _head_model_id(scim_stack)
    before = {m["id"] for m in c.get("/models").json()}
    r = c.post(
        "/submit",
        json={
            "dataset_id": ds,
            "model_id": mid,
            "application_id": "finetune",
            "params": {"label_key": LABEL, "options": {"method": method, "epochs": 1}},
        },
    )
    assert r.status_code == 201, r.text
    rid = r.json()["run_id"]
    st = wait_run(c, rid, timeout=90)
    assert st["state"] == "succeeded", (st, scim_stack.logs())
    new_id = c.get(f"/results/{rid}").json()["summary"]["new_model_id"]
    models = {m["id"]: m for m in c.get("/models").json()}
    assert new_id and new_id not in before and new_id in models
    assert models[new_id]["family"] == "finetuned"  # the family of cellfoundry.tuning outputs
    assert sorted(models[new_id]["classes"]) == ["type_0", "type_1", "type_2"]
    # the new model annotates the dataset through the queue
    r = c.post(
        "/submit",
        json={
            "dataset_id": ds,
            "model_id": new_id,
            "application_id": "annotation",
            "params": {"layout": "none", "label_key": LABEL},
        },
    )
    assert r.status_code == 201, r.text
    aid = r.json()["run_id"]
    st = wait_run(c, aid, timeout=90)
    assert st["state"] == "succeeded", (st, scim_stack.logs())
    res = c.get(f"/results/{aid}", params={"page_size": 500}).json()
    assert res["summary"]["n_cells"] == 180
    items = res["cells"]["items"]
    assert len(items) == 180
    probs = np.array([sum(t["probability"] for t in it["top3"]) for it in items])
    np.testing.assert_allclose(probs, 1.0, atol=1e-4)  # three classes: top-3 is everything
    # ... with the same calls as the library on the fine-tuned folder the run wrote
    import cellfoundry

    ref = cellfoundry.annotate(scim["data"], _run_dir(scim_stack, rid) / "model")
    by_cell = {it["cell"]: it for it in items}
    got = np.array([by_cell[c]["predicted"] for c in map(str, ref.obs_names)])
    assert (got == ref.labels.astype(str)).all()
    conf = np.array([by_cell[c]["confidence"] for c in map(str, ref.obs_names)])
    np.testing.assert_allclose(conf, ref.probabilities.max(axis=1), rtol=1e-5, atol=1e-6)
