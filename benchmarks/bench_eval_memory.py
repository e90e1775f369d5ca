"""Peak memory of fine-tuning and evaluating a large reference, and of the evaluation triplet loss.

1. Writes an N-cell reference (default 25,000) by resampling real pbmc3k counts with
   ``../shared/tools/make_scale_h5ad.py`` (labels in ``obs['source_type']``).
2. In a fresh child process: ``cellfoundry.evaluation.evaluate`` on it (logreg baseline and a
   LoRA fine-tune of the SCimilarity architecture, one seed: a 20 % test split, i.e. 5,000 test
   cells whose triplet and reconstruction losses are computed in mini-batches) and reports the
   child's peak RSS against the 4 GB target.
3. The evaluation triplet loss alone, each in a fresh child on the same real embeddings: the
   chunked ``triplet_loss_batched`` vs the whole-set ``triplet_loss`` (training's definition,
   which needs ``pairs x n`` memory), at a size where the whole-set one still fits; with the ratio.

Usage: python benchmarks/bench_eval_memory.py [--cells 25000] [--epochs 1] [--triplet-cells 800]
Writes benchmarks/results/eval_memory.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GB = 1024**3

EVALUATE = """
import json, sys, time
from cellfoundry.evaluation.compare import evaluate
t0 = time.perf_counter()
rep = evaluate(sys.argv[1], "source_type", "scimilarity", seeds=1, out=sys.argv[2],
               methods=("logreg", "lora"), epochs=int(sys.argv[3]), umap=False,
               )
rows = [r for r in rep["summary"] if r["model"] != "reference"]
import resource
print(json.dumps({"seconds": time.perf_counter() - t0, "summary": rows,
                  "n_test": rows[0]["n_cells"],
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""

TRIPLET = """
import json, sys, numpy as np, torch, anndata as ad, scipy.sparse as sp
from sklearn.decomposition import PCA
from cellfoundry.tuning.losses import triplet_loss, triplet_loss_batched
a = ad.read_h5ad(sys.argv[1], backed="r")
n = int(sys.argv[2])
x = sp.csr_matrix(a.X[:n]).astype(np.float64)
x = sp.diags(1e4 / np.maximum(np.asarray(x.sum(axis=1)).ravel(), 1)) @ x
x.data = np.log1p(x.data)
emb = PCA(64, random_state=0).fit_transform(x.toarray()).astype(np.float32)
y = np.unique(a.obs["source_type"].astype(str).to_numpy()[:n], return_inverse=True)[1]
if sys.argv[3] == "batched":
    v = triplet_loss_batched(emb, y, 0.1)
else:
    v = float(triplet_loss(torch.from_numpy(emb), torch.from_numpy(y), 0.1))
import resource
print(json.dumps({"loss": v, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def child(code: str, *args: str) -> tuple[dict, float]:
    """Run ``code`` in a fresh interpreter; (its JSON output, its own peak RSS in bytes)."""
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return res, float(res.pop("peak_rss"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--cells", type=int, default=25_000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--triplet-cells", type=int, default=800)
    args = ap.parse_args()
    shared = Path(args.shared)
    results: dict = {"cells": args.cells, "epochs": args.epochs}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / f"pbmc3k_resampled_{args.cells}.h5ad"
        subprocess.run(
            [
                sys.executable,
                str(shared / "tools" / "make_scale_h5ad.py"),
                str(shared / "data" / "pbmc3k_labeled_counts.h5ad"),
                str(data),
                str(args.cells),
            ],
            check=True,
        )
        # the triplet measures first (smaller peaks), then the large evaluation
        t_b, rss_b = child(TRIPLET, str(data), str(args.triplet_cells), "batched")
        t_f, rss_f = child(TRIPLET, str(data), str(args.triplet_cells), "full")
        results["triplet"] = {
            "cells": args.triplet_cells,
            "batched_loss": t_b["loss"],
            "full_loss": t_f["loss"],
            "batched_peak_rss_gb": rss_b / GB,
            "full_peak_rss_gb": rss_f / GB,
            "full_over_batched_rss": rss_f / rss_b,
        }
        t0 = time.perf_counter()
        ev, rss = child(EVALUATE, str(data), str(Path(tmp) / "report"), str(args.epochs))
        results["evaluate"] = ev | {
            "peak_rss_gb": rss / GB,
            "target_gb": 4.0,
            "under_target": rss / GB < 4.0,
            "wall_seconds": time.perf_counter() - t0,
        }
    out = ROOT / "benchmarks" / "results" / "eval_memory.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    tr = results["triplet"]
    print(
        f"triplet loss on {tr['cells']:,} cells: batched peak {tr['batched_peak_rss_gb']:.2f} GB, "
        f"whole-set peak {tr['full_peak_rss_gb']:.2f} GB (x{tr['full_over_batched_rss']:.1f}); "
        f"values {tr['batched_loss']:.6f} vs {tr['full_loss']:.6f}"
    )
    e = results["evaluate"]
    print(
        f"evaluate (logreg + LoRA, {args.epochs} epoch(s)) on {args.cells:,} cells "
        f"({e['n_test']:,} test cells): peak RSS {e['peak_rss_gb']:.2f} GB "
        f"(target < 4 GB: {'met' if e['under_target'] else 'NOT met'}), {e['wall_seconds']:.0f} s"
    )
    print(f"written: {out}")


if __name__ == "__main__":
    main()
