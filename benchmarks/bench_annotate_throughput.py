"""Annotation throughput of the logistic-regression baseline vs CellTypist 1.7.1 (issue #2).

Builds >=100k cells by multinomial resampling of real PBMC 3k cells (each new cell keeps the
profile and depth of a randomly chosen real cell), trains both tools on the real cells, and times
annotation of the in-memory matrix only (file reading excluded). CellTypist needs
scikit-learn < 1.7, so it runs in its own environment (.venv-celltypist, created on first use).

Usage: python benchmarks/bench_annotate_throughput.py [--cells 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

import cellfoundry as cf

ROOT = Path(__file__).resolve().parents[1]
CT_VENV = ROOT / ".venv-celltypist"
CT_REQS = ["celltypist==1.7.1", "scikit-learn==1.6.1", "scanpy==1.11.5", "anndata==0.12.19"]

CT_SCRIPT = r"""
import sys, time, json, warnings
warnings.filterwarnings("ignore")
import anndata as ad, numpy as np, scanpy as sc, celltypist
ref = ad.read_h5ad(sys.argv[1]); qry = ad.read_h5ad(sys.argv[2]); repeats = int(sys.argv[3])
ref.var_names = ref.var["gene_symbols"].astype(str); ref.var_names_make_unique()
qry.var_names = qry.var["gene_symbols"].astype(str); qry.var_names_make_unique()
for a in (ref,):
    sc.pp.normalize_total(a, target_sum=1e4); sc.pp.log1p(a)
model = celltypist.train(ref, labels="cell_type", n_jobs=2, feature_selection=True, max_iter=200)
times = []
for _ in range(repeats):
    q = qry.copy()
    t0 = time.perf_counter()
    sc.pp.normalize_total(q, target_sum=1e4); sc.pp.log1p(q)
    pred = celltypist.annotate(q, model=model, majority_voting=False)
    times.append(time.perf_counter() - t0)
print(json.dumps({"seconds": times, "n_cells": qry.n_obs, "labels": pred.predicted_labels["predicted_labels"].astype(str).tolist()[:5]}))
"""


def resample_cells(adata: ad.AnnData, n: int, seed: int = 0) -> ad.AnnData:
    """New cells drawn by multinomial resampling of real cells' counts (same depth)."""
    rng = np.random.default_rng(seed)
    x = sp.csr_matrix(adata.X)
    pick = rng.integers(0, adata.n_obs, n)
    rows, cols, vals = [], [], []
    for i, c in enumerate(pick):
        s, e = x.indptr[c], x.indptr[c + 1]
        counts = x.data[s:e]
        total = int(counts.sum())
        draw = rng.multinomial(total, counts / counts.sum())
        keep = draw > 0
        rows.append(np.full(int(keep.sum()), i))
        cols.append(x.indices[s:e][keep])
        vals.append(draw[keep])
    m = sp.csr_matrix(
        (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n, adata.n_vars),
    )
    out = ad.AnnData(X=m, var=adata.var.copy())
    out.obs_names = [f"r{i}" for i in range(n)]
    out.obs["source_cell"] = adata.obs_names[pick].to_numpy()
    return out


def ensure_celltypist_env() -> Path:
    py = CT_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(CT_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *CT_REQS], check=True)
    return py


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--cells", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args()
    ref = ad.read_h5ad(Path(args.shared) / "data" / "pbmc3k_labeled_counts.h5ad")
    qry = resample_cells(ref, args.cells)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cf.train(ref, "cell_type", "logreg", out=tmp / "model")
        cf.annotate(qry[:1000].copy(), tmp / "model")  # warm-up
        ours = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            res = cf.annotate(qry, tmp / "model")
            ours.append(time.perf_counter() - t0)
        truth = ref.obs["cell_type"].astype(str).reindex(qry.obs["source_cell"]).to_numpy()
        agree = float((res.labels == truth).mean())
        ours_rate = args.cells / float(np.median(ours))
        print(
            f"cellfoundry logreg: median {np.median(ours):.2f} s for {args.cells:,} cells -> {ours_rate:,.0f} cells/s "
            f"(runs {', '.join(f'{t:.2f}' for t in ours)}); agreement with the source cell's label {agree:.3f}"
        )
        result = {
            "n_cells": args.cells,
            "ours_seconds": ours,
            "ours_cells_per_s": ours_rate,
            "label_agreement": agree,
        }
        if not args.skip_reference:
            py = ensure_celltypist_env()
            ref.write_h5ad(tmp / "ref.h5ad")
            qry.write_h5ad(tmp / "qry.h5ad")
            script = tmp / "ct.py"
            script.write_text(CT_SCRIPT)
            proc = subprocess.run(
                [
                    str(py),
                    str(script),
                    str(tmp / "ref.h5ad"),
                    str(tmp / "qry.h5ad"),
                    str(args.repeats),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            ct = json.loads(proc.stdout.strip().splitlines()[-1])
            ct_rate = args.cells / float(np.median(ct["seconds"]))
            print(
                f"CellTypist 1.7.1 (normalise + annotate, no majority voting): median {np.median(ct['seconds']):.2f} s "
                f"-> {ct_rate:,.0f} cells/s"
            )
            print(
                f"ratio cellfoundry / CellTypist: {ours_rate / ct_rate:.1f}x   (target: >= 50,000 cells/s)"
            )
            result |= {
                "celltypist_seconds": ct["seconds"],
                "celltypist_cells_per_s": ct_rate,
                "ratio": ours_rate / ct_rate,
            }
        (ROOT / "benchmarks" / "results" / "annotate_throughput.json").write_text(
            json.dumps(result, indent=2)
        )


if __name__ == "__main__":
    main()
