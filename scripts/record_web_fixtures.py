"""Record the web unit tests' fixtures from the real API (never typed by hand).

    PYTHONPATH=src python scripts/record_web_fixtures.py

Runs the app in process on a throwaway home with the demo model, uploads a real dataset from
../shared/data, annotates it with a layout, and writes what the API answered to
web/src/test/*.json (applications, models, the upload, the run's status and its results).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from cellfoundry.config import Settings
from cellfoundry.jobs.local import LocalWorkers
from cellfoundry.service.app import create_app
from cellfoundry.store.keys import create_key
from cellfoundry.store.model_records import ensure_demo_model

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "web" / "src" / "test"
DATA = ROOT.parent / "shared" / "data" / "10x_pbmc68k_reduced.h5ad"


def write(name: str, body: Any) -> None:
    (OUT / name).write_text(json.dumps(body, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote web/src/test/{name}")


def main() -> int:
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else DATA
    with tempfile.TemporaryDirectory(prefix="cellfoundry-fixtures-") as home:
        settings = Settings.model_validate({"home": Path(home), "web_dir": None})
        app = create_app(settings)
        ensure_demo_model(app.state.platform.db, app.state.platform.storage)
        env = {
            "CELLFOUNDRY_HOME": home,
            "CELLFOUNDRY_DATABASE_URL": settings.database_url,
            "CELLFOUNDRY_STORAGE_DIR": str(settings.storage),
            "CELLFOUNDRY_QUEUE_BACKEND": "local",
        }
        workers = LocalWorkers(1, env)
        workers.start()
        try:
            return record(app, data)
        finally:
            workers.stop()


def record(app: Any, data: Path) -> int:
    with TestClient(app) as c:
        with app.state.platform.db.session() as s:
            _, key = create_key(s, "fixtures")
        c.headers["Authorization"] = f"Bearer {key}"
        write("applications.json", c.get("/applications").raise_for_status().json())
        models = c.get("/models").raise_for_status().json()
        write("models.json", models)
        with data.open("rb") as f:
            up = c.post("/upload", files={"file": (data.name, f)}).raise_for_status().json()
        write("upload.json", up)
        model = next(m["id"] for m in models if m["ready"])
        body = {
            "dataset_id": up["id"],
            "model_id": model,
            "application_id": "annotation",
            "params": {"layout": "pca", "label_key": "bulk_labels"},
        }
        run = c.post("/submit", json=body).raise_for_status().json()["run_id"]
        for _ in range(600):
            status = c.get(f"/status/{run}").raise_for_status().json()
            if status["state"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.5)
        if status["state"] != "succeeded":
            print(f"the run ended {status['state']}: {status.get('error')}", file=sys.stderr)
            return 1
        write("status.json", status)
        results = c.get(f"/results/{run}", params={"page_size": 20}).raise_for_status().json()
        write("results.json", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
