"""The embedded demo: a logistic-regression model trained on a dataset scanpy ships offline.

``pbmc68k_reduced`` (700 PBMCs, 765 genes, ``.raw`` log-normalised, ``obs['bulk_labels']``) is
inside the scanpy wheel, so the demo needs no download and no data from the user.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np

DEMO_LABEL_KEY = "bulk_labels"
DEMO_MODEL_NAME = "demo-logreg-pbmc68k"


def demo_dataset() -> ad.AnnData:
    """scanpy's bundled pbmc68k_reduced (read from the installed package, offline)."""
    import scanpy as sc

    return sc.datasets.pbmc68k_reduced()


def train_demo_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Train the demo logistic-regression model into ``out_dir`` and return the folder."""
    from cellfoundry.api import train

    model = train(
        demo_dataset(), DEMO_LABEL_KEY, "logreg", name=DEMO_MODEL_NAME, seed=seed, n_features=None
    )
    return model.save(out_dir)


def run_demo(work_dir: str | Path, seed: int = 0) -> dict[str, Any]:
    """Train on 70% of the demo cells, annotate the other 30%, and return the figures."""
    from sklearn.model_selection import train_test_split

    from cellfoundry.api import annotate, train
    from cellfoundry.data.report import validate
    from cellfoundry.stats.metrics import classification_metrics, most_confused

    adata = demo_dataset()
    report = validate(adata)
    idx = np.arange(adata.n_obs)
    tr, te = train_test_split(
        idx, test_size=0.3, stratify=adata.obs[DEMO_LABEL_KEY], random_state=seed
    )
    work = Path(work_dir)
    model = train(
        adata[tr].copy(),
        DEMO_LABEL_KEY,
        "logreg",
        name=DEMO_MODEL_NAME,
        seed=seed,
        n_features=None,
        out=work / "model",
    )
    query = adata[te].copy()
    result = annotate(query, work / "model")
    truth = query.obs[DEMO_LABEL_KEY].astype(str).to_numpy()
    metrics = classification_metrics(
        truth, result.labels, result.probabilities, result.classes, threshold=result.threshold
    )
    return {
        "report": report,
        "model": model,
        "result": result,
        "metrics": metrics,
        "most_confused": most_confused(truth, result.labels),
    }
