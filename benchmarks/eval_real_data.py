"""The evaluation table on the real ``../shared/data`` sets, every family from RANDOM weights
(the only weights available here) next to the baselines.

Datasets: PBMC 3k (stratified split of the reference), Symphony PBMCs 3pv1+3pv2 -> 5p (query =
chemistry ``obs['donor'] == '5p'``), Wang -> Xin pancreas. Each family runs head + LoRA (and
full fine-tuning from scratch for SCimilarity's architecture) through ``cellfoundry.evaluation.evaluate``;
logistic regression and kNN run through the same function on the same cells. To stay within
minutes on a 2-core CPU the references are subsampled (stratified, ``--max-cells``), with few
epochs and seeds; every report folder is kept under ``--out``.

    .venv/bin/python benchmarks/eval_real_data.py [--datasets pbmc3k,symphony,pancreas]
        [--families scimilarity,geneformer,scgpt] [--seeds 1] [--epochs 2] [--max-cells 600]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def _subsample(adata: ad.AnnData, key: str, n: int, seed: int = 0) -> ad.AnnData:
    if adata.n_obs <= n:
        return adata
    from sklearn.model_selection import train_test_split

    y = adata.obs[key].astype(str).to_numpy()
    counts = pd.Series(y).value_counts()
    ok = np.isin(y, counts[counts >= 2].index)
    idx = np.nonzero(ok)[0]
    keep, _ = train_test_split(idx, train_size=n, stratify=y[idx], random_state=seed)
    return adata[np.sort(keep)].copy()


def datasets(max_cells: int) -> dict[str, tuple[ad.AnnData, ad.AnnData | None, str]]:
    """name -> (reference, query or None, label key)."""
    out: dict[str, tuple[ad.AnnData, ad.AnnData | None, str]] = {}
    pbmc = ad.read_h5ad(DATA / "pbmc3k_labeled_counts.h5ad")
    out["pbmc3k"] = (_subsample(pbmc, "cell_type", max_cells), None, "cell_type")
    sym = ad.read_h5ad(DATA / "symphony_pbmcs_small_lognorm.h5ad")
    donor = sym.obs["donor"].astype(str)
    out["symphony_3p_to_5p"] = (
        _subsample(sym[donor.isin(["3pv1", "3pv2"]).to_numpy()].copy(), "cell_type", max_cells),
        sym[(donor == "5p").to_numpy()].copy(),
        "cell_type",
    )
    wang = ad.read_h5ad(DATA / "scClassify_wang_subset.h5ad")
    xin = ad.read_h5ad(DATA / "scClassify_xin_subset.h5ad")
    out["wang_to_xin"] = (_subsample(wang, "cell_type", max_cells), xin, "cell_type")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--datasets", default="pbmc3k,symphony_3p_to_5p,wang_to_xin")
    ap.add_argument("--families", default="scimilarity,geneformer,scgpt")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-cells", type=int, default=600)
    ap.add_argument("--out", default="/tmp/cellfoundry_eval_real")
    ap.add_argument("--umap", action="store_true", help="also draw UMAPs (slower)")
    a = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"needs the real data folder {DATA}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from cellfoundry.evaluation.compare import evaluate

    # CPU-sized SCimilarity architecture for the from-scratch runs; transformers at their tiny size
    options = {
        "scimilarity": {
            "scratch_hidden": [256, 256],
            "scratch_latent": 64,
            "batch_size": 64,
            "n_features": 2000,
        },
        "geneformer": {"batch_size": 32, "n_features": 2000},
        "scgpt": {"variant": "tiny", "batch_size": 32, "n_features": 2000},
    }
    methods = {
        "scimilarity": ("head", "lora", "full"),
        "geneformer": ("head", "lora"),
        "scgpt": ("head", "lora"),
    }
    rows, notes = [], []
    data = datasets(a.max_cells)
    for dname in a.datasets.split(","):
        ref, query, key = data[dname]
        for fam in ["baselines", *a.families.split(",")]:
            out = Path(a.out) / dname / fam
            t0 = time.perf_counter()
            try:
                rep = evaluate(
                    ref,
                    key,
                    fam,
                    query=query,
                    seeds=a.seeds,
                    out=out,
                    epochs=a.epochs,
                    umap=a.umap,
                    methods=("logreg", "knn") if fam == "baselines" else methods[fam],
                    finetune_options=options.get(fam, {}),
                )
            except Exception as exc:
                notes.append(
                    f"{dname} / {fam}: {type(exc).__name__}: {getattr(exc, 'message', str(exc))[:300]}"
                )
                traceback.print_exc(limit=2, file=sys.stderr)
                continue
            for r in rep["mean_std"]:
                rows.append(
                    {
                        "dataset": dname,
                        "model": r["model"],
                        "method": r["method"],
                        "seeds": r["n_seeds"],
                        "accuracy": r["accuracy_mean"],
                        "accuracy_std": r["accuracy_std"],
                        "macro_f1": r["macro_f1_mean"],
                        "macro_f1_std": r["macro_f1_std"],
                        "ece": r["ece_mean"],
                        "train_s": r["train_seconds_mean"],
                    }
                )
            fails = [w for w in rep["warnings"] if "FAILED" in w]
            notes += [f"{dname}: {w}" for w in fails]
            print(
                f"[{dname} / {fam}: {time.perf_counter() - t0:.0f}s]", file=sys.stderr, flush=True
            )
    table = pd.DataFrame(rows)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    table.to_csv(Path(a.out) / "table.csv", index=False)
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(
        f"\nrandom-weight foundation models; {a.seeds} seed(s), {a.epochs} epoch(s), references subsampled to "
        f"<= {a.max_cells} cells; reports in {a.out}"
    )
    for n in notes:
        print("NOTE:", n)
    print(json.dumps({"rows": rows, "notes": notes}, default=float))


if __name__ == "__main__":
    main()
