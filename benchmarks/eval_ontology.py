"""Cell Ontology terms across vocabularies (issue #9 §3 measure).

A logreg model trained on scanpy's pbmc68k_reduced (``bulk_labels``, sorted populations) annotates
pbmc3k (marker-named clusters). The two label sets share no name, so exact-name agreement is the
reference figure; with both mapped to CL terms, a call is consistent when its term is the true
class's term or a descendant of it. Figures:

- ``consistent``: share of all cells whose ``obs["predicted_cell_type_ontology_term_id"]`` (the
  term of ``predicted_cell_type``, the most probable class) is consistent;
- ``consistent_on_called``: the same on the cells not called Unknown, beside ``unknown_share``;
- ``exact_name_agreement``: predicted class name == true class name (no ontology).

Every figure is computed from the predictions of ``cellfoundry.annotate``; results go to
benchmarks/results/ontology.json. Usage: python benchmarks/eval_ontology.py [--shared ../shared]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

import cellfoundry as cf
from cellfoundry.ontology import consistent_calls, map_labels, ontology_version
from cellfoundry.result import TERM_COLUMN

ROOT = Path(__file__).resolve().parents[1]


def read(path: Path) -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pbmc68k_reduced is an old-format file
        return ad.read_h5ad(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ontology.json"))
    args = ap.parse_args()
    data = Path(args.shared) / "data"
    ref = read(data / "10x_pbmc68k_reduced.h5ad")
    query = read(data / "pbmc3k_labeled_counts.h5ad")
    with tempfile.TemporaryDirectory() as d:
        model = cf.train(ref, "bulk_labels", "logreg", out=Path(d) / "m", seed=0)
        res = cf.annotate(query, Path(d) / "m")
        written = res.to_adata(query.copy()).obs[TERM_COLUMN].astype(str).to_numpy()

    truth_names = query.obs["cell_type"].astype(str).to_numpy()
    truth_map = map_labels(sorted(set(truth_names)))
    truth = np.array([truth_map.term(c) for c in truth_names], dtype=object)
    model_map = model.ontology
    ok = np.array(consistent_calls(written, truth))
    called = ~res.unknown
    exact = float((res.labels == truth_names).mean())

    rows = [
        {"dataset": ds, **m}
        for ds, mapping in (("pbmc68k_reduced (model)", model_map), ("pbmc3k (query)", truth_map))
        for m in mapping.table()
    ]
    table = pd.DataFrame(rows)[["dataset", "label", "term_id", "term_name", "method"]]
    per_class = (
        pd.DataFrame({"true class": truth_names, "consistent": ok})
        .groupby("true class")["consistent"]
        .agg(["mean", "size"])
        .rename(columns={"mean": "consistent", "size": "cells"})
    )
    summary = {
        "ontology_version": ontology_version(),
        "n_cells": len(truth),
        "consistent": float(ok.mean()),
        "consistent_on_called": float(ok[called].mean()),
        "unknown_share": float(res.unknown.mean()),
        "exact_name_agreement": exact,
        "per_true_class": per_class["consistent"].round(4).to_dict(),
        "mapping": table.to_dict(orient="records"),
    }
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(table.to_string(index=False))
        print()
        print(per_class.round(3).to_string())
    print()
    print(
        f"CL {summary['ontology_version']}, pbmc68k_reduced logreg -> pbmc3k ({len(truth)} cells)"
    )
    print(f"consistent (same term or a descendant), all cells: {summary['consistent']:.4f}")
    print(
        f"consistent on the cells not called Unknown ({1 - summary['unknown_share']:.1%} "
        f"of cells): {summary['consistent_on_called']:.4f}"
    )
    print(f"exact class-name agreement without the ontology: {exact:.4f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
