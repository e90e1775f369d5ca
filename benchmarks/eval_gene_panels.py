"""Partial gene panels (issue #9 §1): macro-F1 with missing genes unobserved vs refit on shared genes.

Tasks (as in eval_baselines.py):
- pbmc3k: 5-fold stratified cross-validation (train on 4 folds, annotate the 5th);
- symphony: train on chemistries 3pv1 + 3pv2, annotate 5p;
- pancreas: train on Wang, annotate Xin.

Panels, applied to the query only: its k most expressed genes (k = 500, 1,000, 2,000, 5,000;
ranked by the sum over the query's cells) and random 10 / 25 / 50 % of its genes (seed 0).
Each panel query is annotated twice with the model trained on all reference genes:
``unobserved`` (missing model genes at the reference mean; ``refit_below=0``) and ``refit``
(the baseline refit on the genes the reference and the panel share; ``reference=``), beside the
all-genes result. ``default`` names the mode ``annotate()`` picks by itself (refit below 80 %
coverage when the reference is at hand). Every figure comes from ``cellfoundry.annotate``
predictions scored with scikit-learn's macro-F1 over the true labels.

Usage: python benchmarks/eval_gene_panels.py [--shared ../shared] [--families logreg]
       [--folds 0,1,2,3,4] [--tasks pbmc3k,symphony,pancreas] [--out FILE]
Parts run in separate processes are combined with --merge PART.json ... --out FILE.
Writes benchmarks/results/gene_panels.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import scipy.sparse as sp
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold

import cellfoundry as cf
from cellfoundry.errors import CellfoundryError
from cellfoundry.models.baselines.refit import DEFAULT_REFIT_BELOW

ROOT = Path(__file__).resolve().parents[1]
TOP_K = (500, 1000, 2000, 5000)
RANDOM_SHARES = (0.10, 0.25, 0.50)
TARGET_GAP = 0.03  # with >= 1,000 genes kept: within 0.03 of the all-genes macro-F1


def panels(query: ad.AnnData, seed: int = 0) -> list[tuple[str, np.ndarray, str]]:
    """(name, kept gene indices, note) for every panel of ``query``."""
    x = query.X
    tot = np.asarray(x.sum(axis=0)).ravel() if sp.issparse(x) else np.asarray(x).sum(axis=0)
    order = np.argsort(-tot, kind="stable")
    n = query.n_vars
    out = []
    for k in TOP_K:
        note = f"panel larger than the data ({n:,} genes): all kept" if k >= n else ""
        out.append((f"top {k}", np.sort(order[: min(k, n)]), note))
    rng = np.random.default_rng(seed)
    for share in RANDOM_SHARES:
        keep = np.sort(rng.choice(n, size=round(share * n), replace=False))
        out.append((f"random {share:.0%}", keep, ""))
    return out


def macro_f1(truth: np.ndarray, labels: np.ndarray) -> float:
    return float(f1_score(truth, labels, labels=np.unique(truth), average="macro"))


def evaluate(
    ref: ad.AnnData, query: ad.AnnData, family: str, tmp: Path, key: str = "cell_type"
) -> dict[str, Any]:
    """All panels of one reference -> query pair."""
    model = tmp / family
    cf.train(ref, key, family, out=model)
    truth = query.obs[key].astype(str).to_numpy()
    full = cf.annotate(query, model)
    out: dict[str, Any] = {
        "n_query_genes": query.n_vars,
        "all_genes": {"macro_f1": macro_f1(truth, full.labels), "mode": full.gene_panel_mode},
        "panels": {},
    }
    for name, keep, note in panels(query):
        part = query[:, keep].copy()
        row: dict[str, Any] = {"n_genes_kept": len(keep), "note": note}
        for mode, kw in (
            ("unobserved", {"refit_below": 0.0}),
            ("refit", {"refit_below": 1.01, "reference": ref}),
        ):
            t0 = time.perf_counter()
            try:
                res = cf.annotate(part, model, **kw)  # type: ignore[arg-type]
            except CellfoundryError as err:  # a refusal is a result too
                row[mode] = {"macro_f1": None, "refused": err.message}
                continue
            panel = res.gene_panel
            assert panel is not None
            row[mode] = {
                "macro_f1": macro_f1(truth, res.labels),
                "mode": panel.mode,
                "seconds": time.perf_counter() - t0,
            }
            if panel.n_shared_genes is not None:
                row["n_shared_genes"] = panel.n_shared_genes
        n_model = int(full.gene_panel.n_model_genes) if full.gene_panel else 0
        model_genes = cf.load_model(model).genes  # type: ignore[attr-defined]
        present = np.isin(model_genes, part.var_names.astype(str))
        row["n_model_genes"] = n_model
        row["coverage"] = float(present.mean())
        row["default"] = "refit" if row["coverage"] < DEFAULT_REFIT_BELOW else "unobserved"
        out["panels"][name] = row
    return out


def mean_folds(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Fold means (and std) of every figure; panel notes and gene counts from the first fold."""
    first = folds[0]
    out: dict[str, Any] = {
        "n_folds": len(folds),
        "n_query_genes": first["n_query_genes"],
        "all_genes": {
            "macro_f1": float(np.mean([f["all_genes"]["macro_f1"] for f in folds])),
            "macro_f1_std": float(np.std([f["all_genes"]["macro_f1"] for f in folds])),
        },
        "panels": {},
        "folds": folds,
    }
    for name, row in first["panels"].items():
        rows = [f["panels"][name] for f in folds]
        agg: dict[str, Any] = {
            "n_genes_kept": int(np.mean([r["n_genes_kept"] for r in rows])),
            "note": row["note"],
            "coverage": float(np.mean([r["coverage"] for r in rows])),
            "n_model_genes": row["n_model_genes"],
            "default": row["default"],
        }
        for mode in ("unobserved", "refit"):
            vals = [r[mode]["macro_f1"] for r in rows]
            if any(v is None for v in vals):
                agg[mode] = {"macro_f1": None, "refused": rows[0][mode].get("refused", "")}
            else:
                agg[mode] = {"macro_f1": float(np.mean(vals)), "macro_f1_std": float(np.std(vals))}
        out["panels"][name] = agg
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--families", default="logreg")
    ap.add_argument(
        "--folds", default="0,1,2,3,4", help="pbmc3k folds to run (of 5), e.g. 0,1 for a part"
    )
    ap.add_argument("--tasks", default="pbmc3k,symphony,pancreas")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gene_panels.json"))
    ap.add_argument(
        "--merge",
        nargs="+",
        default=None,
        help="combine part files (e.g. folds run in separate processes) into --out",
    )
    args = ap.parse_args()
    if args.merge:
        merge(args.merge, Path(args.out))
        return
    fold_ids = [int(f) for f in args.folds.split(",")]
    data = Path(args.shared) / "data"
    tasks = args.tasks.split(",")
    results: dict[str, Any] = {}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for fam in args.families.split(","):
            if "pbmc3k" in tasks:
                pbmc = ad.read_h5ad(data / "pbmc3k_labeled_counts.h5ad")
                y = pbmc.obs["cell_type"].astype(str).to_numpy()
                folds = []
                split = StratifiedKFold(5, shuffle=True, random_state=0).split(y, y)
                for k, (tr, te) in enumerate(split):
                    if k not in fold_ids:
                        continue
                    folds.append(evaluate(pbmc[tr].copy(), pbmc[te].copy(), fam, tmp / f"p{k}"))
                    folds[-1]["fold"] = k
                    print(f"pbmc3k {fam} fold {k} done", flush=True)
                results[f"pbmc3k_5fold/{fam}"] = mean_folds(folds)
            if "symphony" in tasks:
                sym = ad.read_h5ad(data / "symphony_pbmcs_small_lognorm.h5ad")
                ref = sym[sym.obs["donor"].isin(["3pv1", "3pv2"])].copy()
                qry = sym[sym.obs["donor"] == "5p"].copy()
                results[f"symphony_3p_to_5p/{fam}"] = evaluate(ref, qry, fam, tmp / "sym")
                print(f"symphony {fam} done", flush=True)
            if "pancreas" in tasks:
                wang = ad.read_h5ad(data / "scClassify_wang_subset.h5ad")
                xin = ad.read_h5ad(data / "scClassify_xin_subset.h5ad")
                results[f"wang_to_xin/{fam}"] = evaluate(wang, xin, fam, tmp / "panc")
                print(f"wang->xin {fam} done", flush=True)
    print_table(results)
    results["_meta"] = {
        "seconds": time.perf_counter() - t_start,
        "target": f"with >= 1,000 genes kept: within {TARGET_GAP} of the all-genes macro-F1",
        "command": "python benchmarks/eval_gene_panels.py "
        + f"--families {args.families} --folds {args.folds} --tasks {args.tasks}",
        "folds": fold_ids,
    }
    dest = Path(args.out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(results, indent=2))
    print(f"written {dest}")


def merge(parts: list[str], dest: Path) -> None:
    """One result from part files: pbmc3k folds pooled (means recomputed), other tasks copied."""
    results: dict[str, Any] = {}
    folds: dict[str, list[dict[str, Any]]] = {}
    seconds = 0.0
    for part in parts:
        d = json.loads(Path(part).read_text())
        seconds = max(seconds, d.get("_meta", {}).get("seconds", 0.0))
        for task, r in d.items():
            if task.startswith("_"):
                continue
            if "folds" in r:
                folds.setdefault(task, []).extend(r["folds"])
            else:
                results[task] = r
    for task, fs in folds.items():
        results[task] = mean_folds(sorted(fs, key=lambda f: f.get("fold", 0)))
    print_table(results)
    results["_meta"] = {
        "seconds_longest_part": seconds,
        "target": f"with >= 1,000 genes kept: within {TARGET_GAP} of the all-genes macro-F1",
        "parts": [Path(p).name for p in parts],
    }
    dest.write_text(json.dumps(dict(sorted(results.items())), indent=2))
    print(f"written {dest}")


def fmt(v: float | None) -> str:
    return "refused" if v is None else f"{v:.3f}"


def print_table(results: dict[str, Any]) -> None:
    head = f"{'task':<26}{'panel':<12}{'genes':>7}{'coverage':>10}{'all genes':>11}"
    head += f"{'unobserved':>12}{'refit':>8}{'default':>12}  target"
    print("\n" + head)
    for task, r in results.items():
        if task.startswith("_"):
            continue
        base = r["all_genes"]["macro_f1"]
        for name, p in r["panels"].items():
            best = p[p["default"]]["macro_f1"]
            target = ""
            if p["n_genes_kept"] >= 1000 and best is not None:
                target = "ok" if base - best <= TARGET_GAP else f"MISSED by {base - best:.3f}"
            line = f"{task:<26}{name:<12}{p['n_genes_kept']:>7,}{p['coverage']:>10.1%}{base:>11.3f}"
            line += f"{fmt(p['unobserved']['macro_f1']):>12}{fmt(p['refit']['macro_f1']):>8}"
            line += f"{p['default']:>12}  {target}"
            if p["note"]:
                line += f"  ({p['note']})"
            print(line)
    print(
        "refused: under 5 % / 100 of the model's genes (unobserved) or < 100 shared genes (refit)"
    )


if __name__ == "__main__":
    main()
