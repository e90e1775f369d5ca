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
predictions scored with scikit-learn's macro-F1 over the true labels (per-class F1 kept too).

Ceiling (panels with >= 1,000 genes kept, not all genes; pbmc3k: on --ceiling-folds): scikit-learn's
LogisticRegression trained directly on the reference cells restricted to the panel's genes
(log1p of counts per 10,000 over the panel genes, standardised and clipped at 10 as CellTypist
does; genes expressed in fewer than 3 reference cells dropped; balanced class weights), C chosen
from CEILING_C by 3-fold stratified CV macro-F1 on the reference. When the ceiling is itself more
than TARGET_GAP below the all-genes figure, no refit on that panel can meet the target.

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
TARGET_MIN_GENES = 1000
CEILING_C = (0.3, 1.0)  # the logreg baseline's default and CellTypist's


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


def per_class_f1(truth: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    classes = np.unique(truth)
    f = f1_score(truth, labels, labels=classes, average=None)
    return {str(c): float(v) for c, v in zip(classes, f, strict=True)}


def _lognorm(a: ad.AnnData, genes: list[str]) -> sp.csr_matrix:
    """log1p of counts per 10,000 over ``genes`` only; log-normalised data as given."""
    x = sp.csr_matrix(a[:, genes].X, dtype=np.float64)
    if not np.all(np.mod(x.data, 1) == 0):  # already log-normalised (symphony)
        return x
    tot = np.asarray(x.sum(axis=1)).ravel()
    tot[tot == 0] = 1.0
    return sp.csr_matrix(sp.diags(1e4 / tot) @ x).log1p()


def _lognorm_z(ref: ad.AnnData, query: ad.AnnData, genes: list[str]) -> tuple[Any, Any]:
    """Standardised (clipped at 10) log1p-CP10k of reference and query over ``genes`` only."""
    x_ref, x_q = _lognorm(ref, genes), _lognorm(query, genes)
    expressed = np.asarray((x_ref > 0).sum(axis=0)).ravel() >= 3
    d_ref, d_q = x_ref[:, expressed].toarray(), x_q[:, expressed].toarray()
    mean, sd = d_ref.mean(axis=0), d_ref.std(axis=0)
    sd[sd < 1e-8] = 1.0
    z_ref, z_q = (np.clip((x - mean) / sd, -10, 10).astype(np.float32) for x in (d_ref, d_q))
    return z_ref, z_q


def ceiling(ref: ad.AnnData, query: ad.AnnData, genes: list[str], key: str) -> dict[str, Any]:
    """Logistic regression trained directly on the reference restricted to ``genes``, C by CV."""
    from sklearn.linear_model import LogisticRegression

    z_ref, z_q = _lognorm_z(ref, query, genes)
    y = ref.obs[key].astype(str).to_numpy()
    inner = list(StratifiedKFold(3, shuffle=True, random_state=1).split(y, y))

    def clf(c: float) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=1000, class_weight="balanced")

    cv = {
        c: float(
            np.mean(
                [macro_f1(y[b], clf(c).fit(z_ref[a], y[a]).predict(z_ref[b])) for a, b in inner]
            )
        )
        for c in CEILING_C
    }
    best = max(cv, key=lambda c: (cv[c], -c))
    pred = clf(best).fit(z_ref, y).predict(z_q)
    truth = query.obs[key].astype(str).to_numpy()
    return {
        "macro_f1": macro_f1(truth, pred),
        "per_class_f1": per_class_f1(truth, pred),
        "C": best,
        "cv_macro_f1": {str(c): v for c, v in cv.items()},
        "n_genes_used": int(z_ref.shape[1]),
    }


def evaluate(
    ref: ad.AnnData,
    query: ad.AnnData,
    family: str,
    tmp: Path,
    key: str = "cell_type",
    with_ceiling: bool = True,
) -> dict[str, Any]:
    """All panels of one reference -> query pair."""
    model = tmp / family
    cf.train(ref, key, family, out=model)
    truth = query.obs[key].astype(str).to_numpy()
    full = cf.annotate(query, model)
    base = macro_f1(truth, full.labels)
    out: dict[str, Any] = {
        "n_query_genes": query.n_vars,
        "all_genes": {
            "macro_f1": base,
            "mode": full.gene_panel_mode,
            "per_class_f1": per_class_f1(truth, full.labels),
        },
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
                "per_class_f1": per_class_f1(truth, res.labels),
            }
            if panel.n_shared_genes is not None:
                row["n_shared_genes"] = panel.n_shared_genes
        n_model = int(full.gene_panel.n_model_genes) if full.gene_panel else 0
        model_genes = cf.load_model(model).genes  # type: ignore[attr-defined]
        present = np.isin(model_genes, part.var_names.astype(str))
        row["n_model_genes"] = n_model
        row["coverage"] = float(present.mean())
        row["default"] = "refit" if row["coverage"] < DEFAULT_REFIT_BELOW else "unobserved"
        if with_ceiling and len(keep) >= TARGET_MIN_GENES and not note:
            row["ceiling"] = ceiling(ref, part, list(part.var_names.astype(str)), key)
        out["panels"][name] = row
    return out


def ceilings_only(
    pbmc: ad.AnnData, folds: set[int], names: str, key: str = "cell_type"
) -> dict[str, dict[str, Any]]:
    """Per fold (as a string) and panel: the ceiling alone (no model trained or annotated)."""
    wanted = {n for n in names.split(",") if n}
    y = pbmc.obs[key].astype(str).to_numpy()
    out: dict[str, dict[str, Any]] = {}
    split = StratifiedKFold(5, shuffle=True, random_state=0).split(y, y)
    for k, (tr, te) in enumerate(split):
        if k not in folds:
            continue
        ref, query = pbmc[tr].copy(), pbmc[te].copy()
        out[str(k)] = {}
        order = [n for n in names.split(",") if n]  # the given order (the most wanted first)
        ps = sorted(panels(query), key=lambda q: order.index(q[0]) if q[0] in order else 0)
        for name, keep, note in ps:
            if len(keep) < TARGET_MIN_GENES or note or (wanted and name not in wanted):
                continue
            part = query[:, keep].copy()
            out[str(k)][name] = ceiling(ref, part, list(part.var_names.astype(str)), key)
            print(f"pbmc3k fold {k} {name} ceiling {out[str(k)][name]['macro_f1']:.3f}", flush=True)
    return out


def attach_ceilings(r: dict[str, Any], ceilings: dict[str, dict[str, Any]]) -> None:
    """Ceilings run on their own, beside the all-genes and refit figures of the same folds."""
    by_fold = {str(f.get("fold", 0)): f for f in r["folds"]}
    for name, p in r["panels"].items():
        runs = [(k, c[name]) for k, c in sorted(ceilings.items()) if name in c and k in by_fold]
        if not runs:
            continue
        p["ceiling"] = {
            "macro_f1": float(np.mean([c["macro_f1"] for _, c in runs])),
            "folds": [int(k) for k, _ in runs],
            "all_genes_same_folds": float(
                np.mean([by_fold[k]["all_genes"]["macro_f1"] for k, _ in runs])
            ),
            "refit_same_folds": float(
                np.mean([by_fold[k]["panels"][name]["refit"]["macro_f1"] for k, _ in runs])
            ),
            "C": [c["C"] for _, c in runs],
            "cv_macro_f1": [c["cv_macro_f1"] for _, c in runs],
            "n_genes_used": [c["n_genes_used"] for _, c in runs],
            "per_class_f1": mean_per_class([c["per_class_f1"] for _, c in runs]),
        }


def mean_per_class(rows: list[dict[str, float] | None]) -> dict[str, float] | None:
    """Class means over the folds that recorded per-class F1 (older parts did not)."""
    have = [r for r in rows if r]
    return {c: float(np.mean([r[c] for r in have])) for c in have[0]} if have else None


def mean_folds(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Fold means (and std) of every figure; panel notes and gene counts from the first fold."""
    first = folds[0]
    out: dict[str, Any] = {
        "n_folds": len(folds),
        "n_query_genes": first["n_query_genes"],
        "all_genes": {
            "macro_f1": float(np.mean([f["all_genes"]["macro_f1"] for f in folds])),
            "macro_f1_std": float(np.std([f["all_genes"]["macro_f1"] for f in folds])),
            "per_class_f1": mean_per_class([f["all_genes"].get("per_class_f1") for f in folds]),
            "per_class_folds": [
                f.get("fold", 0) for f in folds if "per_class_f1" in f["all_genes"]
            ],
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
                agg[mode] = {
                    "macro_f1": float(np.mean(vals)),
                    "macro_f1_std": float(np.std(vals)),
                    "per_class_f1": mean_per_class([r[mode].get("per_class_f1") for r in rows]),
                }
        with_c = [(f, r) for f, r in zip(folds, rows, strict=True) if "ceiling" in r]
        if with_c:  # beside the all-genes and refit figures of the same folds
            agg["ceiling"] = {
                "macro_f1": float(np.mean([r["ceiling"]["macro_f1"] for _, r in with_c])),
                "folds": [f.get("fold", 0) for f, _ in with_c],
                "all_genes_same_folds": float(
                    np.mean([f["all_genes"]["macro_f1"] for f, _ in with_c])
                ),
                "refit_same_folds": float(np.mean([r["refit"]["macro_f1"] for _, r in with_c])),
                "C": [r["ceiling"]["C"] for _, r in with_c],
                "per_class_f1": mean_per_class([r["ceiling"]["per_class_f1"] for _, r in with_c]),
            }
        out["panels"][name] = agg
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--families", default="logreg")
    ap.add_argument(
        "--folds", default="0,1,2,3,4", help="pbmc3k folds to run (of 5), e.g. 0,1 for a part"
    )
    ap.add_argument(
        "--ceiling-folds",
        default="0,3",
        help="pbmc3k folds on which the ceiling (logistic regression on the panel genes) is run",
    )
    ap.add_argument(
        "--ceiling-only",
        action="store_true",
        help="pbmc3k: only the ceiling on --ceiling-folds (for --ceiling-panels); merged beside "
        "the all-genes and refit figures of the same folds from the other parts",
    )
    ap.add_argument(
        "--ceiling-panels",
        default="",
        help="comma-separated panel names for the ceiling (default: every panel with >= 1,000 "
        "genes kept that is not all genes)",
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
    ceiling_folds = {int(f) for f in args.ceiling_folds.split(",") if f}
    data = Path(args.shared) / "data"
    tasks = args.tasks.split(",")
    results: dict[str, Any] = {}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for fam in args.families.split(","):
            if "pbmc3k" in tasks and args.ceiling_only:
                pbmc = ad.read_h5ad(data / "pbmc3k_labeled_counts.h5ad")
                results[f"pbmc3k_5fold/{fam}"] = {
                    "ceilings": ceilings_only(pbmc, ceiling_folds, args.ceiling_panels)
                }
            elif "pbmc3k" in tasks:
                pbmc = ad.read_h5ad(data / "pbmc3k_labeled_counts.h5ad")
                y = pbmc.obs["cell_type"].astype(str).to_numpy()
                folds = []
                split = StratifiedKFold(5, shuffle=True, random_state=0).split(y, y)
                for k, (tr, te) in enumerate(split):
                    if k not in fold_ids:
                        continue
                    folds.append(
                        evaluate(
                            pbmc[tr].copy(),
                            pbmc[te].copy(),
                            fam,
                            tmp / f"p{k}",
                            with_ceiling=k in ceiling_folds,
                        )
                    )
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
    results["_meta"] = {
        "seconds": time.perf_counter() - t_start,
        "target": f"with >= 1,000 genes kept: within {TARGET_GAP} of the all-genes macro-F1",
        "command": "python benchmarks/eval_gene_panels.py "
        + f"--families {args.families} --folds {args.folds} --tasks {args.tasks} "
        + f"--ceiling-folds {args.ceiling_folds}"
        + (
            f" --ceiling-only --ceiling-panels '{args.ceiling_panels}'" if args.ceiling_only else ""
        ),
        "folds": fold_ids,
    }
    dest = Path(args.out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"written {dest}")


def merge(parts: list[str], dest: Path) -> None:
    """One result from part files: pbmc3k folds pooled (means recomputed), other tasks copied."""
    results: dict[str, Any] = {}
    folds: dict[str, list[dict[str, Any]]] = {}
    ceilings: dict[str, dict[str, dict[str, Any]]] = {}
    seconds = 0.0
    for part in parts:
        d = json.loads(Path(part).read_text())
        seconds = max(seconds, d.get("_meta", {}).get("seconds", 0.0))
        for task, r in d.items():
            if task.startswith("_"):
                continue
            if "ceilings" in r:
                ceilings.setdefault(task, {}).update(r["ceilings"])
            elif "folds" in r:
                folds.setdefault(task, []).extend(r["folds"])
            else:
                results[task] = r
    for task, fs in folds.items():
        results[task] = mean_folds(sorted(fs, key=lambda f: f.get("fold", 0)))
        attach_ceilings(results[task], ceilings.get(task, {}))
    results["_meta"] = {
        "seconds_longest_part": seconds,
        "target": f"with >= 1,000 genes kept: within {TARGET_GAP} of the all-genes macro-F1",
        "parts": [Path(p).name for p in parts],
    }
    dest.write_text(json.dumps(dict(sorted(results.items())), indent=2))
    print_table(results)
    print(f"written {dest}")


def fmt(v: float | None) -> str:
    return "refused" if v is None else f"{v:.3f}"


def ceiling_note(p: dict[str, Any], base: float) -> str:
    """The ceiling beside the all-genes and refit figures of the folds it was run on."""
    c = p.get("ceiling")
    if not c:
        return ""
    all_genes = c.get("all_genes_same_folds", base)
    refit = c.get("refit_same_folds", p["refit"]["macro_f1"])
    folds = f" on folds {c['folds']}" if "folds" in c else ""
    gap = all_genes - c["macro_f1"]
    verdict = "target unreachable on this panel" if gap > TARGET_GAP else "target reachable"
    return (
        f"  [ceiling {c['macro_f1']:.3f} vs all genes {all_genes:.3f}, refit "
        f"{fmt(refit)}{folds}: {verdict}]"
    )


def print_table(results: dict[str, Any]) -> None:
    head = f"{'task':<26}{'panel':<12}{'genes':>7}{'coverage':>10}{'all genes':>11}"
    head += f"{'unobserved':>12}{'refit':>8}{'default':>12}  target"
    print("\n" + head)
    for task, r in results.items():
        if task.startswith("_") or "all_genes" not in r:
            continue
        base = r["all_genes"]["macro_f1"]
        for name, p in r["panels"].items():
            best = p[p["default"]]["macro_f1"]
            target = ""
            if p["n_genes_kept"] >= TARGET_MIN_GENES and best is not None:
                target = "met" if base - best <= TARGET_GAP else f"MISSED by {base - best:.3f}"
            elif p["n_genes_kept"] < TARGET_MIN_GENES:
                target = f"(< {TARGET_MIN_GENES:,} genes: no target)"
            line = f"{task:<26}{name:<12}{p['n_genes_kept']:>7,}{p['coverage']:>10.1%}{base:>11.3f}"
            line += f"{fmt(p['unobserved']['macro_f1']):>12}{fmt(p['refit']['macro_f1']):>8}"
            line += f"{p['default']:>12}  {target}{ceiling_note(p, base)}"
            if p["note"]:
                line += f"  ({p['note']})"
            print(line)
    print(
        "refused: under 5 % / 100 of the model's genes (unobserved) or < 100 shared genes (refit)"
    )
    print_per_class(results)


def print_per_class(results: dict[str, Any]) -> None:
    """Per-class F1 of the all-genes model beside each panel's default mode (and ceiling)."""
    for task, r in results.items():
        if task.startswith("_") or not r.get("all_genes", {}).get("per_class_f1"):
            continue
        classes = list(r["all_genes"]["per_class_f1"])
        pc_folds = r["all_genes"].get("per_class_folds")
        print(
            f"\nper-class F1, {task}"
            + (f" (folds {pc_folds}; ceiling rows: their folds)" if pc_folds else "")
        )
        print(f"{'':<30}" + "".join(f"{c[:11]:>12}" for c in classes))
        rows = [("all genes", r["all_genes"]["per_class_f1"])]
        for name, p in r["panels"].items():
            mode = p[p["default"]]
            if mode.get("per_class_f1"):
                rows.append((f"{name} {p['default']}", mode["per_class_f1"]))
            if "ceiling" in p:
                folds = p["ceiling"].get("folds")
                rows.append(
                    (
                        f"{name} ceiling" + (f" f{folds}" if folds else ""),
                        p["ceiling"]["per_class_f1"],
                    )
                )
        for label, f in rows:
            print(f"{label:<30}" + "".join(f"{f.get(c, float('nan')):>12.3f}" for c in classes))


if __name__ == "__main__":
    main()
