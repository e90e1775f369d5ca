"""Record the web unit tests' fixtures from the real API (never typed by hand).

    PYTHONPATH=src python scripts/record_web_fixtures.py

Runs the app in process on a throwaway home with three models: the demo model, a logistic
regression trained on half of ../shared/data/pbmc3k_labeled_counts.h5ad (``pbmc3k-logreg``) and a
copy of the demo model with a weights file deleted (``demo-broken``: not ready). Through the API it
uploads ../shared/data/10x_pbmc68k_reduced.h5ad and the pbmc3k file, annotates the first with a
layout (viewed through GET /runs/{id}/layout as a density grid and as a zoomed viewport's points;
and has a submit with an out-of-range param refused), combines the demo model and pbmc3k-logreg on
the pbmc3k cells (consensus, explained; also at the broad Cell Ontology level, its every-cell
layout by its own and by pbmc3k-logreg's calls, at the classes and at that level, a broader term it
offers (T cell), a refused unknown level, and one cell's evidence), uploads the pbmc68k cells with
only their scaled matrix (refused) and as mouse genes (annotated through human orthologs),
fine-tunes a logistic regression on pbmc68k, evaluates pbmc3k-logreg on the pbmc3k cells it was not
trained on, evaluates the demo model on pbmc3k (whose cell-type names it does not share), and
submits an evaluation with a label column the data lacks (it fails). Every answer is written to
web/src/test/*.json as the API sent it.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
from fastapi.testclient import TestClient

import cellfoundry as cf
from cellfoundry.artifacts import Manifest
from cellfoundry.artifacts.manifest import MANIFEST
from cellfoundry.config import Settings
from cellfoundry.jobs.local import LocalWorkers
from cellfoundry.service.app import create_app
from cellfoundry.store.keys import create_key
from cellfoundry.store.model_records import ensure_demo_model, register_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.species_data import mouseify

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "web" / "src" / "test"
SHARED = ROOT.parent / "shared" / "data"
DATA = SHARED / "10x_pbmc68k_reduced.h5ad"
LABELLED = SHARED / "pbmc3k_labeled_counts.h5ad"
EVAL_PARAMS = {"label_key": "cell_type", "baseline_n_features": 300, "baseline_max_iter": 50}


def write(name: str, body: Any, indent: int | None = 1) -> None:
    text = json.dumps(body, indent=indent, ensure_ascii=False)
    (OUT / name).write_text(text + "\n", encoding="utf-8")
    print(f"wrote web/src/test/{name}")


def add_models(app: Any, tmp: Path) -> None:
    """pbmc3k-logreg (trained on half of the pbmc3k cells) and demo-broken (a file deleted)."""
    platform = app.state.platform
    adata = ad.read_h5ad(LABELLED)
    rng = np.random.default_rng(0)
    train_idx = np.sort(rng.choice(adata.n_obs, adata.n_obs // 2, replace=False))
    folder = tmp / "pbmc3k-logreg"
    cf.train(adata[train_idx].copy(), "cell_type", "logreg", n_features=500, out=folder)
    with platform.db.session() as s:
        register_model(s, platform.storage, folder, model_id="pbmc3k-logreg")
    demo_dir = platform.storage.model_dir("demo-logreg-pbmc68k")
    broken = tmp / "demo-broken"
    shutil.copytree(demo_dir, broken)
    manifest = json.loads((broken / MANIFEST).read_text())
    (broken / MANIFEST).write_text(json.dumps({**manifest, "name": "demo-broken"}))
    with platform.db.session() as s:
        rec = register_model(s, platform.storage, broken, model_id="demo-broken")
        folder = platform.storage.resolve(rec.path)
    weights = sorted(Manifest.read(folder).files)[0]
    (folder / weights).unlink()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="cellfoundry-fixtures-") as home:
        settings = Settings.model_validate({"home": Path(home), "web_dir": None})
        app = create_app(settings)
        ensure_demo_model(app.state.platform.db, app.state.platform.storage)
        add_models(app, Path(home))
        env = {
            "CELLFOUNDRY_HOME": home,
            "CELLFOUNDRY_DATABASE_URL": settings.database_url,
            "CELLFOUNDRY_STORAGE_DIR": str(settings.storage),
            "CELLFOUNDRY_QUEUE_BACKEND": "local",
        }
        workers = LocalWorkers(1, env)
        workers.start()
        try:
            return record(app)
        finally:
            workers.stop()


RUNNING: list[dict[str, Any]] = []  # the first status of each run seen in the running state
SUBMITTED: list[dict[str, Any]] = []  # POST /submit's answers


def run(c: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    """Submit a run and wait until it ends; its last status."""
    SUBMITTED.append(c.post("/submit", json=body).raise_for_status().json())
    run_id = SUBMITTED[-1]["run_id"]
    seen = False
    for _ in range(2400):
        status: dict[str, Any] = c.get(f"/status/{run_id}").raise_for_status().json()
        if status["state"] == "running" and not seen:
            RUNNING.append(status)
            seen = True
        if status["state"] in ("succeeded", "failed", "cancelled"):
            return status
        time.sleep(0.2)
    raise SystemExit(f"run {run_id} did not finish")


def succeeded(status: dict[str, Any]) -> dict[str, Any]:
    if status["state"] != "succeeded":
        raise SystemExit(f"the run ended {status['state']}: {status.get('error')}")
    return status


def results(c: TestClient, status: dict[str, Any], **params: int) -> dict[str, Any]:
    body: dict[str, Any] = (
        c.get(f"/results/{status['id']}", params=params).raise_for_status().json()
    )
    return body


def refused(response: Any, status: int) -> dict[str, Any]:
    """The error body of a request the service must refuse with ``status``."""
    if response.status_code != status:
        raise SystemExit(
            f"{response.request.url} was answered {response.status_code}, not {status}"
        )
    body: dict[str, Any] = response.json()
    return body


def upload(c: TestClient, path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        body: dict[str, Any] = (
            c.post("/upload", files={"file": (path.name, f)}).raise_for_status().json()
        )
    return body


def record_consensus(c: TestClient, dataset_id: str) -> None:
    """The demo model and pbmc3k-logreg combined on the pbmc3k cells, explained (top genes per cell):
    the results (also at the broad level) and the evidence of the layout's first point."""
    consensus = {
        "dataset_id": dataset_id,
        "model_id": "demo-logreg-pbmc68k",
        "application_id": "consensus",
        "params": {"layout": "pca", "explain": True, "other_model_ids": ["pbmc3k-logreg"]},
    }
    status = succeeded(run(c, consensus))
    write("consensus_status.json", status)
    res = results(c, status, page_size=10)
    write("consensus_results.json", res)
    broad = c.get(f"/results/{status['id']}", params={"level": "broad", "page_size": 10})
    write("consensus_results_broad.json", broad.raise_for_status().json())
    # the every-cell layout as the WebGL view asks for it, by the consensus's calls and by
    # pbmc3k-logreg's own, at the model's classes and at the broad level (the layout's controls),
    # and a level that is no Cell Ontology term (refused with a hint)
    for name, labels in [
        ("consensus_layout", {}),
        ("consensus_layout_broad", {"level": "broad"}),
        ("consensus_layout_model", {"source": "pbmc3k-logreg"}),
        ("consensus_layout_model_broad", {"source": "pbmc3k-logreg", "level": "broad"}),
    ]:
        view = {**labels, "max_points": 200, "bins": 32}
        layout = c.get(f"/runs/{status['id']}/layout", params=view).raise_for_status().json()
        write(f"{name}.json", layout)
    # one of the broader terms GET /results offers for the run (T cell), as the toggle asks for it
    term = next(lv for lv in res["levels"] if lv["name"] == "T cell")
    at_term = c.get(f"/results/{status['id']}", params={"level": term["level"], "page_size": 10})
    write("consensus_results_term.json", at_term.raise_for_status().json())
    bad = c.get(f"/results/{status['id']}", params={"level": "T-cells please", "page_size": 10})
    write("results_invalid_level.json", refused(bad, 422))
    first = res["layout"]["indices"][0]
    cell = c.get(f"/results/{status['id']}/cells/{first}").raise_for_status().json()
    write("consensus_cell.json", cell)


def record(app: Any) -> int:
    with TestClient(app) as c:
        with app.state.platform.db.session() as s:
            _, key = create_key(s, "fixtures")
        c.headers["Authorization"] = f"Bearer {key}"
        write("applications.json", c.get("/applications").raise_for_status().json())
        up = upload(c, DATA)
        write("upload.json", up)
        labelled = upload(c, LABELLED)
        write("upload_pbmc3k.json", labelled)
        # the pbmc68k cells with only their scaled matrix: no usable matrix, refused (422)
        scaled = ad.read_h5ad(DATA)
        del scaled.raw
        path = Path(app.state.platform.settings.home) / "scaled_only.h5ad"
        scaled.write_h5ad(path)
        with path.open("rb") as f:
            write(
                "upload_refused.json",
                refused(c.post("/upload", files={"file": (path.name, f)}), 422),
            )
        annotation = {
            "dataset_id": up["id"],
            "model_id": "demo-logreg-pbmc68k",
            "application_id": "annotation",
            "params": {"layout": "pca", "label_key": "bulk_labels"},
        }
        status = succeeded(run(c, annotation))
        write("submit.json", SUBMITTED[0])
        write("status.json", status)
        too_strict = {**annotation, "params": {"min_coverage": 2}}
        write("submit_refused.json", refused(c.post("/submit", json=too_strict), 422))
        if RUNNING:
            write("status_running.json", RUNNING[-1])
        write("results.json", results(c, status, page_size=25))
        write("results_page2.json", results(c, status, page=2, page_size=25)["cells"])
        # the every-cell layout as the WebGL view asks for it: the whole extent as a density grid
        # (more cells than max_points), then one zoomed quarter as points
        view = f"/runs/{status['id']}/layout"
        full = c.get(view, params={"max_points": 200, "bins": 32}).raise_for_status().json()
        write("layout_density.json", full)
        ext = full["extent"]
        quarter = {
            "x0": ext["x0"],
            "x1": (ext["x0"] + ext["x1"]) / 2,
            "y0": ext["y0"],
            "y1": (ext["y0"] + ext["y1"]) / 2,
        }
        write(
            "layout_points.json",
            c.get(view, params={**quarter, "max_points": 400}).raise_for_status().json(),
        )
        write("status_not_found.json", refused(c.get("/status/r_no_such_run"), 404))
        record_consensus(c, labelled["id"])
        # the pbmc68k cells as mouse genes (1:1 orthologs): mapped back to human for the model
        mouse = mouseify(ad.read_h5ad(DATA).raw.to_adata(), ROOT.parent / "shared")
        path = Path(app.state.platform.settings.home) / "pbmc68k_mouse.h5ad"
        mouse.write_h5ad(path)
        up_mouse = upload(c, path)
        write("upload_mouse.json", up_mouse)
        mouse_run = succeeded(
            run(c, {**annotation, "dataset_id": up_mouse["id"], "params": {"layout": "none"}})
        )
        write("mouse_results.json", results(c, mouse_run, page_size=1))
        finetune = {
            "dataset_id": up["id"],
            "model_id": "demo-logreg-pbmc68k",
            "application_id": "finetune",
            "params": {"label_key": "bulk_labels", "name": "pbmc68k-bulk-labels"},
        }
        tuned = succeeded(run(c, finetune))
        write("finetune_status.json", tuned)
        write("finetune_results.json", results(c, tuned))
        evaluation = {
            "dataset_id": labelled["id"],
            "model_id": "pbmc3k-logreg",
            "application_id": "evaluation",
            "params": EVAL_PARAMS,
        }
        ev = succeeded(run(c, evaluation))
        write("evaluation_status.json", ev)
        res = results(c, ev, page_size=1)
        write("evaluation_results.json", res)
        total = res["cells"]["total"]
        every = results(c, ev, page_size=max(total, 1))["cells"]
        write("evaluation_cells.json", every, indent=None)  # one line: 1,319 cells
        other = {**evaluation, "model_id": "demo-logreg-pbmc68k"}
        mismatch = succeeded(run(c, other))
        write("evaluation_mismatch_results.json", results(c, mismatch, page_size=1))
        bad = {**evaluation, "params": {**EVAL_PARAMS, "label_key": "no_such_column"}}
        failed = run(c, bad)
        if failed["state"] != "failed":
            raise SystemExit(f"the run with a missing label column ended {failed['state']}")
        write("failed_status.json", failed)
        write("runs.json", c.get("/runs").raise_for_status().json())
        unknown_key = {"Authorization": "Bearer cf_not_a_key"}
        write("unauthorized.json", refused(c.get("/runs", headers=unknown_key), 401))
        write("datasets.json", c.get("/datasets").raise_for_status().json())
        write("models.json", c.get("/models").raise_for_status().json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
