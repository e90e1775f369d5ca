"""Human models on mouse data (issue #13 measures): does the ortholog mapping keep the labels?

A human dataset is turned into mouse data through the Ensembl ortholog table (only genes with a
1:1 ortholog, named as mouse symbols or mouse Ensembl IDs; ``tests/species_data.py``). A model
trained on human cells annotates both the human and the mouse version of the same held-out
cells. The figure is the agreement between the two label sets, beside two references from the
same run: the majority-label share and chance agreement (same label frequencies, independent).
Accuracy and macro-F1 against the true labels are reported for both versions. The reverse
direction is measured too: a model trained on the mouse version of the reference annotates the
human query.

- pbmc3k: 5-fold stratified (train human on 4 folds, annotate the held-out fold).
- symphony: train on chemistries 3pv1 + 3pv2, annotate 5p.

Every figure is computed from the predictions of ``cellfoundry.annotate``. Results go to
benchmarks/results/orthologs.json. Usage: python benchmarks/eval_orthologs.py [--shared ../shared]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp
from sklearn.model_selection import StratifiedKFold

import cellfoundry as cf
from cellfoundry.stats.metrics import classification_metrics

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "orthologs.json"
sys.path.insert(0, str(ROOT))
from tests.species_data import mouseify  # noqa: E402


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Share of cells with the same label; majority-label share and chance agreement."""
    labels_a, n_a = np.unique(a, return_counts=True)
    p_a = dict(zip(labels_a, n_a / len(a), strict=True))
    labels_b, n_b = np.unique(b, return_counts=True)
    chance = sum(p_a.get(k, 0.0) * n / len(b) for k, n in zip(labels_b, n_b, strict=True))
    return {
        "agreement": float((a == b).mean()),
        "majority_share": float(max(p_a.values())),
        "chance_agreement": float(chance),
    }


def total_counts(x: object) -> np.ndarray:
    m = x if sp.issparse(x) else np.asarray(x)
    return np.asarray(m.sum(axis=1)).ravel()


def scores(truth: np.ndarray, res: cf.AnnotationResult) -> dict[str, float]:
    m = classification_metrics(truth, res.labels, res.probabilities, res.classes)
    return {"accuracy": float(m["accuracy"]), "macro_f1": float(m["macro_f1"])}


def one_task(
    ref: ad.AnnData,
    query: ad.AnnData,
    shared: Path,
    family: str,
    tmp: Path,
    symbol_column: str | None,
    lognorm: bool,
) -> dict:
    truth = query.obs["cell_type"].astype(str).to_numpy()
    t0 = time.perf_counter()
    cf.train(ref, "cell_type", family, out=tmp / "human")
    t_train = time.perf_counter() - t0
    human = cf.annotate(query, tmp / "human")
    out: dict = {"n_cells": int(query.n_obs), "train_seconds": t_train}
    out["human_query"] = scores(truth, human)
    out["human_query"]["gene_coverage"] = (
        human.coverage.fraction_present if human.coverage else None
    )
    variants = {"mouse_symbols": False} | ({} if lognorm else {"mouse_ensembl_ids": True})
    for name, ids in variants.items():
        mouse = mouseify(query, shared, symbol_column=symbol_column, ensembl_ids=ids)
        t0 = time.perf_counter()
        res = cf.annotate(mouse, tmp / "human")
        o = res.orthology
        assert o is not None and res.species == "mouse", "the mouse query was not mapped"
        row = scores(truth, res) | agreement(human.labels, res.labels)
        kept = None if lognorm else float(np.median(total_counts(mouse.X) / total_counts(query.X)))
        row |= {
            "annotate_seconds": time.perf_counter() - t0,
            "n_mouse_genes": int(mouse.n_vars),
            "n_genes_mapped": o.n_genes_mapped,
            "fraction_counts_mapped": o.fraction_counts_mapped,
            "human_counts_kept_by_1to1_orthologs": kept,
            "gene_coverage": res.coverage.fraction_present if res.coverage else None,
            "gene_route": o.gene_route,
        }
        out[name] = row
    # the other direction: a mouse reference, a human query
    mref = mouseify(ref, shared, symbol_column=symbol_column)
    cf.train(mref, "cell_type", family, out=tmp / "mouse")
    rev = cf.annotate(query, tmp / "mouse")
    out["mouse_reference_human_query"] = scores(truth, rev) | agreement(human.labels, rev.labels)
    return out


def mean_std(rows: list[dict], path: tuple[str, str]) -> tuple[float, float]:
    v = [r[path[0]][path[1]] for r in rows]
    return float(np.mean(v)), float(np.std(v))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--family", default="logreg")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    shared = Path(args.shared)
    data = shared / "data"
    out: dict = {"family": args.family, "cellfoundry": cf.__version__}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        pbmc = ad.read_h5ad(data / "pbmc3k_labeled_counts.h5ad")
        y = pbmc.obs["cell_type"].astype(str).to_numpy()
        folds = []
        skf = StratifiedKFold(args.folds, shuffle=True, random_state=0)
        for k, (tr, te) in enumerate(skf.split(y, y)):
            r = one_task(
                pbmc[tr].copy(),
                pbmc[te].copy(),
                shared,
                args.family,
                tmp / f"f{k}",
                "gene_symbols",
                lognorm=False,
            )
            folds.append(r)
            print(
                f"pbmc3k fold {k}: agreement {r['mouse_symbols']['agreement']:.4f} (IDs "
                f"{r['mouse_ensembl_ids']['agreement']:.4f}), reverse "
                f"{r['mouse_reference_human_query']['agreement']:.4f}",
                flush=True,
            )
        out["pbmc3k_5fold"] = {"folds": folds}
        sym = ad.read_h5ad(data / "symphony_pbmcs_small_lognorm.h5ad")
        ref = sym[sym.obs["donor"].isin(["3pv1", "3pv2"])].copy()
        qry = sym[sym.obs["donor"] == "5p"].copy()
        out["symphony_3p_to_5p"] = one_task(
            ref, qry, shared, args.family, tmp / "sym", None, lognorm=True
        )
    rows = [
        ("pbmc3k 5-fold", "mouse symbols", "mouse_symbols"),
        ("pbmc3k 5-fold", "mouse Ensembl IDs", "mouse_ensembl_ids"),
        ("pbmc3k 5-fold", "mouse ref -> human", "mouse_reference_human_query"),
        ("symphony 3p->5p", "mouse symbols", "mouse_symbols"),
        ("symphony 3p->5p", "mouse ref -> human", "mouse_reference_human_query"),
    ]
    head = f"{'data':<17}{'variant':<21}{'agreement':>18}{'majority':>10}{'chance':>8}"
    head += f"{'acc human':>11}{'acc mouse':>11}{'F1 human':>10}{'F1 mouse':>10}{'coverage':>10}"
    print("\n" + head)
    for task, label, key in rows:
        res = [*folds] if task.startswith("pbmc") else [out["symphony_3p_to_5p"]]
        ag, sd = mean_std(res, (key, "agreement"))
        maj = mean_std(res, (key, "majority_share"))[0]
        ch = mean_std(res, (key, "chance_agreement"))[0]
        ah, am = mean_std(res, ("human_query", "accuracy"))[0], mean_std(res, (key, "accuracy"))[0]
        fh, fm = mean_std(res, ("human_query", "macro_f1"))[0], mean_std(res, (key, "macro_f1"))[0]
        cov = [r[key].get("gene_coverage") for r in res]
        cov_s = f"{np.mean(cov):.1%}" if None not in cov else "-"
        print(
            f"{task:<17}{label:<21}{ag:>10.4f} ± {sd:.4f}{maj:>10.3f}{ch:>8.3f}"
            f"{ah:>11.4f}{am:>11.4f}{fh:>10.4f}{fm:>10.4f}{cov_s:>10}"
        )
    RESULT.write_text(json.dumps(out, indent=2))
    print(f"written {RESULT}")


if __name__ == "__main__":
    main()
