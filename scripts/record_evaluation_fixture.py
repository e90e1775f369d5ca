"""Record the Evaluation page's fixture from the service's real evaluation task (never typed).

    PYTHONPATH=src python scripts/record_evaluation_fixture.py

Trains a logreg on half of ../shared/data/pbmc3k_labeled_counts.h5ad, runs
``cellfoundry.jobs.applications.evaluation_task`` on the whole file (the task leaves out the
training cells) and writes the run summary to web/src/test/evaluation_summary.json; then runs the
same task for a foundation model (SCimilarity, methods logreg and knn over 2 seeds on
../shared/data/symphony_pbmcs_small_lognorm.h5ad: ``cellfoundry.evaluation.evaluate``) and writes
web/src/test/evaluation_foundation_summary.json. Non-finite numbers are written as null.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np

import cellfoundry as cf
from cellfoundry.jobs.applications import EvaluationParams, TaskContext, evaluation_task
from cellfoundry.store.jsonable import jsonable

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "pbmc3k_labeled_counts.h5ad"
OUT = ROOT / "web" / "src" / "test" / "evaluation_summary.json"
FOUNDATION_DATA = ROOT.parent / "shared" / "data" / "symphony_pbmcs_small_lognorm.h5ad"
FOUNDATION_OUT = ROOT / "web" / "src" / "test" / "evaluation_foundation_summary.json"


def _finite(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_finite(v) for v in o]
    return o


def _write(path: Path, summary: Any) -> None:
    text = json.dumps(_finite(jsonable(summary)), indent=1, ensure_ascii=False, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)}")


def main() -> int:
    adata = ad.read_h5ad(DATA)
    rng = np.random.default_rng(0)
    train_idx = np.sort(rng.choice(adata.n_obs, adata.n_obs // 2, replace=False))
    with tempfile.TemporaryDirectory(prefix="cellfoundry-evalfixture-") as tmp:
        model = Path(tmp) / "model"
        cf.train(adata[train_idx].copy(), "cell_type", "logreg", n_features=500, out=model)
        out_dir = Path(tmp) / "run"
        out_dir.mkdir()
        ctx = TaskContext(
            run_id="r_fixture",
            dataset_path=DATA,
            model_dir=model,
            model_family="logreg",
            params=EvaluationParams(
                label_key="cell_type", baseline_n_features=300, baseline_max_iter=50
            ),
            out_dir=out_dir,
            report=lambda msg, pct: None,
        )
        _write(OUT, evaluation_task(ctx).summary)
        out_dir = Path(tmp) / "foundation"
        out_dir.mkdir()
        ctx = TaskContext(
            run_id="r_fixture_foundation",
            dataset_path=FOUNDATION_DATA,
            model_dir=Path("scimilarity"),
            model_family="scimilarity",
            params=EvaluationParams(label_key="cell_type", seeds=2, methods=["logreg", "knn"]),
            out_dir=out_dir,
            report=lambda msg, pct: None,
        )
        _write(FOUNDATION_OUT, evaluation_task(ctx).summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
