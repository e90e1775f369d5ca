"""Beyond one label (issue 12): consensus across models, per-cell evidence, out-of-reference cells.

On the real ``../shared/data`` sets — PBMC 3k (stratified 5-fold CV), Symphony PBMCs 3pv1+3pv2 ->
5p, Wang -> Xin pancreas — three baselines are trained per split: ``logreg`` (2,000 most variable
genes), ``knn`` (same genes, PCA) and ``logreg_5000`` (5,000 most variable genes, C=0.1). Printed and written to
``benchmarks/results/beyond.json``:

1. consensus: macro-F1 (over the true labels) of every model and of their consensus
   (``cellfoundry.annotate(data, model=[...])``: held-out-weighted, combined up the Cell Ontology;
   the weights are the fitted pool's, or one model's alone where it calls the held-out reference
   cells better, per split in ``weighting_per_fold``),
   with the accuracy on cells where every model agrees with the consensus against the rest;
2. evidence: mean marker overlap of predicted types with the reference's markers, and on PBMC 3k
   the share of B-cell / CD14-monocyte / NK calls whose top genes name a canonical marker;
3. out of reference: share of query cells out of reference and the accuracy of those cells
   against the rest; a perturbation test on PBMC 3k (held-out cells with a 50-gene program
   switched on, at 1 / 2 / 5 % of each cell's counts) with the AUROC of ``reference_distance``
   (perturbed vs untouched); a leave-one-type-out AUROC (cells of a type the reference lacks vs
   the other held-out cells).

The models are trained with ``--cv-folds`` (5) folds of out-of-fold reference predictions, on
which the consensus weights are fitted; ``benchmarks/results/beyond_consensus_cv0.json`` is §1
with ``--cv-folds 0`` (weights fitted on the held-out split's stop and test parts, the default).

    .venv/bin/python benchmarks/eval_beyond.py [--folds 5] [--quick] [--cv-folds 5]
        [--consensus-only] [--jobs 7] [--models-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

import cellfoundry as cf
from cellfoundry.artifacts import load_genes
from cellfoundry.consensus import model_weights
from cellfoundry.models.registry import load_model
from cellfoundry.stats.metrics import macro_f1_true_labels

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results" / "beyond.json"
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "logreg": ("logreg", {}),
    "knn": ("knn", {}),
    "logreg_5000": ("logreg", {"n_features": 5000, "C": 0.1}),
}
KNOWN_MARKERS = {  # canonical PBMC markers (scanpy PBMC 3k tutorial, Azimuth PBMC)
    "B cells": {"CD79A", "CD79B", "MS4A1", "CD19", "CD22", "BLK", "BANK1", "TCL1A", "FCRLA"},
    "CD14+ Monocytes": {"LYZ", "S100A8", "S100A9", "S100A12", "CD14", "FCN1", "VCAN", "LGALS2"},
    "NK cells": {"GNLY", "NKG7", "GZMB", "PRF1", "KLRD1", "KLRF1", "FGFBP2", "SPON2"},
}


def splits(folds: int) -> list[tuple[str, ad.AnnData, ad.AnnData]]:
    out = []
    pbmc = ad.read_h5ad(DATA / "pbmc3k_labeled_counts.h5ad")
    y = pbmc.obs["cell_type"].astype(str).to_numpy()
    for i, (tr, te) in enumerate(
        StratifiedKFold(folds, shuffle=True, random_state=0).split(np.zeros(len(y)), y)
    ):
        out.append((f"pbmc3k_cv/fold{i}", pbmc[tr].copy(), pbmc[te].copy()))
    sym = ad.read_h5ad(DATA / "symphony_pbmcs_small_lognorm.h5ad")
    donor = sym.obs["donor"].astype(str)
    out.append(
        (
            "symphony_3p_to_5p",
            sym[donor.isin(["3pv1", "3pv2"]).to_numpy()].copy(),
            sym[(donor == "5p").to_numpy()].copy(),
        )
    )
    out.append(
        (
            "wang_to_xin",
            ad.read_h5ad(DATA / "scClassify_wang_subset.h5ad"),
            ad.read_h5ad(DATA / "scClassify_xin_subset.h5ad"),
        )
    )
    return out


SECTIONS = (
    "perturbation_pbmc3k_fold0",
    "evidence_pbmc3k_fold0",
    "leave_one_type_out_pbmc3k_fold0",
)
CONSENSUS = {"consensus": list(MODELS), "consensus_logreg_knn": ["logreg", "knn"]}


def train_all(ref: ad.AnnData, folder: Path, cv_folds: int) -> dict[str, Path]:
    """Train every model of ``MODELS`` into ``folder``; one already there (``--models-dir``,
    trained by an earlier run with the same ``--cv-folds``) is reused."""
    paths = {}
    for name, (family, params) in MODELS.items():
        if not (folder / name / "manifest.json").is_file():
            cf.train(
                ref, "cell_type", family, out=folder / name, name=name, cv_folds=cv_folds, **params
            )
        paths[name] = folder / name
    return paths


def per_split(ref: ad.AnnData, query: ad.AnnData, folder: Path, cv_folds: int) -> dict[str, Any]:
    """Everything measured on one reference -> query split (cell-level arrays kept for pooling)."""
    paths = train_all(ref, folder, cv_folds)
    truth = query.obs["cell_type"].astype(str).to_numpy()
    out: dict[str, Any] = {"truth": truth, "models": {}}
    single = {}
    for name, path in paths.items():
        res = single[name] = cf.annotate(query, path)
        out["models"][name] = {
            "labels": res.labels,
            "oor": res.obs_columns["out_of_reference"],
            "distance": res.obs_columns["reference_distance"],
            "marker_overlap": res.findings["marker_overlap"]["mean_overlap"],
            "chance_overlap": res.findings["marker_overlap"]["expected_by_chance"],
        }
    for key, members in CONSENSUS.items():
        # what annotate(query, model=[...]) does, on the single results computed above
        annotators = [load_model(paths[m]) for m in members]
        results = [single[m] for m in members]
        weighting = model_weights(annotators, results)
        res = cf.consensus(results, members, weights=weighting.weights, weighting=weighting)
        out[key] = {
            "labels": res.labels,
            "agreement": res.obs_columns["consensus_agreement"],
            "broader": np.asarray(
                [lab not in set(res.classes) and lab != "Unknown" for lab in res.labels]
            ),
            "unknown": res.unknown,
            "weights": res.summary()["consensus"]["weights"],
            "weighting": res.summary()["consensus"]["weighting"],
        }
    return out


def run_split(job: tuple[str, ad.AnnData, ad.AnnData, Path, int]) -> dict[str, Any]:
    name, ref, query, folder, cv_folds = job
    t0 = time.perf_counter()
    part = per_split(ref, query, folder, cv_folds)
    print(
        f"{name}: {ref.n_obs} -> {query.n_obs} cells ({time.perf_counter() - t0:.0f} s)", flush=True
    )
    return part


def pool(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate the per-fold cell-level arrays (every PBMC 3k cell is predicted once)."""
    out: dict[str, Any] = {"truth": np.concatenate([p["truth"] for p in parts]), "models": {}}
    for name in parts[0]["models"]:
        out["models"][name] = {
            k: np.concatenate([p["models"][name][k] for p in parts])
            for k in ("labels", "oor", "distance")
        } | {
            k: float(np.mean([p["models"][name][k] for p in parts]))
            for k in ("marker_overlap", "chance_overlap")
        }
    for key in CONSENSUS:
        out[key] = {
            k: np.concatenate([p[key][k] for p in parts])
            for k in ("labels", "agreement", "broader", "unknown")
        } | {
            "weights": {
                m: float(np.mean([p[key]["weights"][m] for p in parts]))
                for m in parts[0][key]["weights"]
            },
            "weights_per_fold": [p[key]["weights"] for p in parts],
            "weighting": parts[0][key]["weighting"],
            "weighting_per_fold": [p[key]["weighting"] for p in parts],
        }
    return out


def _acc(ok: np.ndarray, mask: np.ndarray) -> float | None:
    return float(ok[mask].mean()) if mask.any() else None


def paired_bootstrap(
    truth: np.ndarray, a: np.ndarray, b: np.ndarray, n: int = 300, seed: int = 0
) -> list[float]:
    """95% interval of macro-F1(a) - macro-F1(b) over cells resampled with replacement."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        i = rng.integers(0, len(truth), len(truth))
        diffs.append(macro_f1_true_labels(truth[i], a[i]) - macro_f1_true_labels(truth[i], b[i]))
    return [float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))]


def summarise(d: dict[str, Any]) -> dict[str, Any]:
    truth = d["truth"]
    rows: dict[str, Any] = {"n_cells": len(truth), "models": {}, "consensus": {}}
    for name, m in d["models"].items():
        ok = m["labels"] == truth
        rows["models"][name] = {
            "macro_f1": macro_f1_true_labels(truth, m["labels"]),
            "accuracy": float(ok.mean()),
            "out_of_reference_share": float(m["oor"].mean()),
            "accuracy_out_of_reference": _acc(ok, m["oor"]),
            "accuracy_in_reference": _acc(ok, ~m["oor"]),
            "median_reference_distance": float(np.median(m["distance"])),
            "mean_marker_overlap": m["marker_overlap"],
            "marker_overlap_by_chance": m["chance_overlap"],
        }
    for key in CONSENSUS:
        c = d[key]
        ok = c["labels"] == truth
        full = c["agreement"] >= 1.0
        rows["consensus"][key] = {
            "models": list(c["weights"]),
            "weights": c["weights"],
            "weighting": c["weighting"],
            "macro_f1": macro_f1_true_labels(truth, c["labels"]),
            "accuracy": float(ok.mean()),
            "share_full_agreement": float(full.mean()),
            "accuracy_full_agreement": _acc(ok, full),
            "accuracy_rest": _acc(ok, ~full),
            "share_broader_term": float(c["broader"].mean()),
            "share_unknown": float(c["unknown"].mean()),
        }
        for per_fold in ("weights_per_fold", "weighting_per_fold"):
            if per_fold in c:
                rows["consensus"][key][per_fold] = c[per_fold]
        best_name = max(c["weights"], key=lambda n: rows["models"][n]["macro_f1"])
        best = rows["models"][best_name]["macro_f1"]
        rows["consensus"][key]["best_single"] = best_name
        rows["consensus"][key]["best_single_macro_f1"] = best
        rows["consensus"][key]["consensus_minus_best"] = rows["consensus"][key]["macro_f1"] - best
        other = d["models"][best_name]["labels"]
        rows["consensus"][key]["cells_called_differently_from_best"] = int(
            (c["labels"] != other).sum()
        )
        rows["consensus"][key]["consensus_minus_best_95ci"] = paired_bootstrap(
            truth, c["labels"], other
        )
    return rows


def add_program(adata: ad.AnnData, genes: list[str], share: float, seed: int) -> ad.AnnData:
    """Each cell gains Poisson counts on 50 random model genes, ``share`` of its depth in all."""
    rng = np.random.default_rng(seed)
    program = rng.choice(genes, 50, replace=False)
    cols = adata.var_names.get_indexer(program)
    counts = sp.csr_matrix(adata.X).toarray()
    depth = counts.sum(axis=1, keepdims=True)
    counts[:, cols] += rng.poisson(np.broadcast_to(depth * share / 50, (len(depth), 50)))
    out = adata.copy()
    out.X = sp.csr_matrix(counts)
    out.obs_names = [f"{n}-program" for n in adata.obs_names]
    return out


def perturbation(ref: ad.AnnData, query: ad.AnnData, paths: dict[str, Path]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("logreg", "knn"):
        genes = load_genes(paths[name])
        base = cf.annotate(query, paths[name]).obs_columns
        rows = {}
        for share in (0.01, 0.02, 0.05):
            aucs, oor = [], []
            for seed in range(3):
                pert = cf.annotate(add_program(query, genes, share, seed), paths[name]).obs_columns
                y = np.r_[np.zeros(query.n_obs), np.ones(query.n_obs)]
                aucs.append(
                    roc_auc_score(y, np.r_[base["reference_distance"], pert["reference_distance"]])
                )
                oor.append(float(pert["out_of_reference"].mean()))
            rows[f"{share:.0%}"] = {
                "auroc_mean": float(np.mean(aucs)),
                "auroc_min": float(np.min(aucs)),
                "perturbed_out_of_reference_share": float(np.mean(oor)),
            }
        rows["untouched_out_of_reference_share"] = float(base["out_of_reference"].mean())
        rows["untouched_median_distance"] = float(np.median(base["reference_distance"]))
        out[name] = rows
    return out


def leave_one_type_out(ref: ad.AnnData, query: ad.AnnData, folder: Path) -> dict[str, Any]:
    out = {}
    truth = query.obs["cell_type"].astype(str).to_numpy()
    for held in ("B cells", "CD14+ Monocytes", "NK cells"):
        keep = (ref.obs["cell_type"].astype(str) != held).to_numpy()
        cf.train(ref[keep].copy(), "cell_type", "logreg", out=folder / f"lo_{held}")
        res = cf.annotate(query, folder / f"lo_{held}")
        novel = truth == held
        out[held] = {
            "auroc": float(roc_auc_score(novel, res.obs_columns["reference_distance"])),
            "out_of_reference_share_novel": float(
                res.obs_columns["out_of_reference"][novel].mean()
            ),
            "out_of_reference_share_others": float(
                res.obs_columns["out_of_reference"][~novel].mean()
            ),
        }
    return out


def evidence_hits(query: ad.AnnData, paths: dict[str, Path]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("logreg", "knn"):
        res = cf.annotate(query, paths[name], explain=True)
        top = res.obs_columns["prediction_top_genes"]
        out[name] = {}
        for label, markers in KNOWN_MARKERS.items():
            calls = [set(t.split(";")) for t in top[res.labels == label]]
            out[name][label] = {
                "n_calls": len(calls),
                "share_with_known_marker_in_top10": float(
                    np.mean([bool(g & markers) for g in calls])
                )
                if calls
                else None,
            }
    return out


def fmt(v: Any) -> str:
    return "  -  " if v is None else f"{v:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="skip leave-one-type-out")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument(
        "--cv-folds",
        type=int,
        default=5,
        help="train the models with this many folds of out-of-fold reference predictions "
        "(the consensus weights are fitted on them); 0: held-out predictions only",
    )
    ap.add_argument(
        "--consensus-only",
        action="store_true",
        help="only §1 and the per-model rows; the other sections are kept from --out",
    )
    ap.add_argument("--jobs", type=int, default=1, help="splits run in parallel processes")
    ap.add_argument(
        "--models-dir",
        help="keep the trained models here (a folder per split and model) and reuse those "
        "already there, e.g. to re-measure the consensus rule without retraining; use one "
        "folder per --cv-folds value",
    )
    a = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"needs the real data folder {DATA}")
    t0, c0 = time.perf_counter(), time.process_time()
    results: dict[str, Any] = {"datasets": {}}
    pbmc_parts = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = a.models_dir or tmp_dir
        jobs = [
            (name, ref, query, Path(tmp) / name, a.cv_folds) for name, ref, query in splits(a.folds)
        ]
        if a.jobs > 1:  # one process per split (each trains its own models)
            with ProcessPoolExecutor(a.jobs) as ex:
                parts = list(ex.map(run_split, jobs))
        else:
            parts = [run_split(j) for j in jobs]
        for (name, ref, query, folder, _), part in zip(jobs, parts, strict=True):
            if name.startswith("pbmc3k_cv"):
                pbmc_parts.append(part)
                if name.endswith("fold0") and not a.consensus_only:
                    paths = {m: folder / m for m in MODELS}
                    results["perturbation_pbmc3k_fold0"] = perturbation(ref, query, paths)
                    results["evidence_pbmc3k_fold0"] = evidence_hits(query, paths)
                    if not a.quick:
                        results["leave_one_type_out_pbmc3k_fold0"] = leave_one_type_out(
                            ref, query, folder
                        )
            else:
                results["datasets"][name] = summarise(part)
        results["datasets"] = {"pbmc3k_cv": summarise(pool(pbmc_parts))} | results["datasets"]
    results["seconds"] = time.perf_counter() - t0
    children = os.times()
    results["cpu_seconds"] = (
        time.process_time() - c0 + children.children_user + children.children_system
    )
    results["command"] = (
        "python benchmarks/eval_beyond.py"
        + (" --quick" if a.quick else "")
        + f" --cv-folds {a.cv_folds}"
        + (" --consensus-only" if a.consensus_only else "")
        + (" --models-dir DIR" if a.models_dir else "")
    )
    if a.models_dir:  # models found there were reused: seconds leave out their training
        results["models_dir"] = a.models_dir
    if a.consensus_only and Path(a.out).is_file():
        kept = json.loads(Path(a.out).read_text())
        for key in SECTIONS:
            if key in kept:
                results[key] = kept[key]
        # where those sections were measured (kept across --consensus-only runs)
        results["sections_kept_from"] = kept.get("sections_kept_from") or kept.get("command")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2, default=float))

    print("\n§1 consensus (macro-F1 over true labels; accuracy where every model agrees vs rest)")
    print(
        f"{'dataset':20s} {'model':22s} {'macro-F1':>8s} {'acc':>6s}  agree=1 share/acc  rest acc"
    )
    for dname, d in results["datasets"].items():
        for mname, m in d["models"].items():
            print(f"{dname:20s} {mname:22s} {m['macro_f1']:8.4f} {fmt(m['accuracy']):>6s}")
        for cname, c in d["consensus"].items():
            ci = c["consensus_minus_best_95ci"]
            print(
                f"{dname:20s} {cname:22s} {c['macro_f1']:8.4f} {fmt(c['accuracy']):>6s}  "
                f"{fmt(c['share_full_agreement'])} / {fmt(c['accuracy_full_agreement'])}  "
                f"{fmt(c['accuracy_rest'])}   (best single {c['best_single_macro_f1']:.4f}: "
                f"{c['consensus_minus_best']:+.4f}, 95% CI {ci[0]:+.4f} .. {ci[1]:+.4f}, "
                f"{c['cells_called_differently_from_best']} cells called differently)"
            )
            w = ", ".join(f"{k} {v:.3f}" for k, v in c["weights"].items())
            how = c["weighting"]
            chosen = [h.get("chosen") for h in c.get("weighting_per_fold", [how])]
            if any(chosen):  # the fitted pool, or one model alone (better on held-out cells)
                w += "; used: " + ", ".join(str(x) for x in chosen)
            print(
                f"{'':20s}   weights {w} ({how['method']}"
                + (
                    f", {how['n_cells']} cells, {'/'.join(how['predictions'])}"
                    if "n_cells" in how
                    else ""
                )
                + ")"
            )
    print("\n§3 out of reference (share; accuracy out of reference vs in reference)")
    for dname, d in results["datasets"].items():
        for mname, m in d["models"].items():
            print(
                f"{dname:20s} {mname:12s} share {fmt(m['out_of_reference_share'])}  "
                f"acc out {fmt(m['accuracy_out_of_reference'])}  in {fmt(m['accuracy_in_reference'])}  "
                f"median distance {fmt(m['median_reference_distance'])}"
            )
    print("\nperturbation (PBMC 3k fold 0 held-out cells + 50-gene program): AUROC mean / min of 3")
    for mname, rows in results.get("perturbation_pbmc3k_fold0", {}).items():
        for share, r in rows.items():
            if isinstance(r, dict):
                print(
                    f"  {mname:8s} program {share:>3s}: AUROC {r['auroc_mean']:.3f} / {r['auroc_min']:.3f}, "
                    f"perturbed out of reference {r['perturbed_out_of_reference_share']:.3f}"
                )
        print(
            f"  {mname:8s} untouched: out of reference {rows['untouched_out_of_reference_share']:.3f}, "
            f"median distance {rows['untouched_median_distance']:.3f}"
        )
    for held, r in results.get("leave_one_type_out_pbmc3k_fold0", {}).items():
        print(
            f"  leave out {held:16s}: AUROC {r['auroc']:.3f}; out of reference "
            f"{r['out_of_reference_share_novel']:.3f} (novel) vs {r['out_of_reference_share_others']:.3f}"
        )
    print("\n§2 evidence: mean marker overlap (top-50 query vs reference markers; chance)")
    for dname, d in results["datasets"].items():
        m = d["models"]["logreg"]
        print(
            f"  {dname:20s} {fmt(m['mean_marker_overlap'])} ({fmt(m['marker_overlap_by_chance'])})"
        )
    for mname, rows in results.get("evidence_pbmc3k_fold0", {}).items():
        for label, r in rows.items():
            print(
                f"  {mname:8s} {label:16s}: {fmt(r['share_with_known_marker_in_top10'])} of "
                f"{r['n_calls']} calls name a canonical marker in their top genes"
            )
    print(f"\nwrote {a.out} ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
