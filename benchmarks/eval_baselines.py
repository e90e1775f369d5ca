"""Accuracy of the baselines on real data (issue #2 measures).

- pbmc3k: 5-fold stratified cross-validation (train on 4 folds, annotate the 5th).
- symphony: train on chemistries 3pv1 + 3pv2, annotate 5p.
- pancreas: train on Wang, annotate Xin.

Every figure is computed from the predictions of `cellfoundry.annotate`; results are written to
benchmarks/results/baselines.json. Usage: python benchmarks/eval_baselines.py [--shared ../shared]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
from sklearn.model_selection import StratifiedKFold

import cellfoundry as cf
from cellfoundry.stats.metrics import classification_metrics

ROOT = Path(__file__).resolve().parents[1]


def run(
    ref: ad.AnnData, query: ad.AnnData, key_ref: str, key_query: str, family: str, tmp: Path
) -> dict:
    t0 = time.perf_counter()
    cf.train(ref, key_ref, family, out=tmp / family)
    t1 = time.perf_counter()
    res = cf.annotate(query, tmp / family)
    m = classification_metrics(
        query.obs[key_query].astype(str).to_numpy(), res.labels, res.probabilities, res.classes
    )
    known = np.isin(query.obs[key_query].astype(str).to_numpy(), res.classes)
    m["accuracy_on_reference_classes"] = float(
        (res.labels[known] == query.obs[key_query].astype(str).to_numpy()[known]).mean()
    )
    m["unknown_share"] = float(res.unknown.mean())
    m["gene_coverage"] = res.coverage.fraction_present if res.coverage else None
    m["train_seconds"] = t1 - t0
    return m


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--families", default="logreg,knn")
    args = ap.parse_args()
    data = Path(args.shared) / "data"
    fams = args.families.split(",")
    out: dict = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        pbmc = ad.read_h5ad(data / "pbmc3k_labeled_counts.h5ad")
        y = pbmc.obs["cell_type"].astype(str).to_numpy()
        for fam in fams:
            folds = []
            for k, (tr, te) in enumerate(
                StratifiedKFold(5, shuffle=True, random_state=0).split(y, y)
            ):
                folds.append(
                    run(
                        pbmc[tr].copy(),
                        pbmc[te].copy(),
                        "cell_type",
                        "cell_type",
                        fam,
                        tmp / f"f{k}",
                    )
                )
                print(f"pbmc3k {fam} fold {k}: accuracy {folds[-1]['accuracy']:.4f}", flush=True)
            acc = [f["accuracy"] for f in folds]
            f1 = [f["macro_f1"] for f in folds]
            out[f"pbmc3k_5fold/{fam}"] = {
                "accuracy_mean": float(np.mean(acc)),
                "accuracy_std": float(np.std(acc)),
                "macro_f1_mean": float(np.mean(f1)),
                "macro_f1_std": float(np.std(f1)),
                "folds": folds,
            }
        sym = ad.read_h5ad(data / "symphony_pbmcs_small_lognorm.h5ad")
        ref = sym[sym.obs["donor"].isin(["3pv1", "3pv2"])].copy()
        qry = sym[sym.obs["donor"] == "5p"].copy()
        for fam in fams:
            out[f"symphony_3p_to_5p/{fam}"] = run(
                ref, qry, "cell_type", "cell_type", fam, tmp / "sym"
            )
        wang = ad.read_h5ad(data / "scClassify_wang_subset.h5ad")
        xin = ad.read_h5ad(data / "scClassify_xin_subset.h5ad")
        for fam in fams:
            out[f"wang_to_xin/{fam}"] = run(wang, xin, "cell_type", "cell_type", fam, tmp / "panc")
    print(f"\n{'task':<28}{'accuracy':>18}{'macro-F1':>18}")
    for name, m in out.items():
        if "accuracy_mean" in m:
            print(
                f"{name:<28}{m['accuracy_mean']:>10.4f} ± {m['accuracy_std']:.4f}{m['macro_f1_mean']:>10.4f} ± {m['macro_f1_std']:.4f}"
            )
        else:
            print(
                f"{name:<28}{m['accuracy']:>18.4f}{m['macro_f1']:>18.4f}   (coverage {m['gene_coverage']:.1%}, Unknown {m['unknown_share']:.1%})"
            )
    dest = ROOT / "benchmarks" / "results" / "baselines.json"
    dest.write_text(json.dumps(out, indent=2))
    print(f"written {dest}")


if __name__ == "__main__":
    main()
