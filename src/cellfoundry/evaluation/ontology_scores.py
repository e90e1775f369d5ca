"""Scores that speak across label vocabularies, through Cell Ontology (CL) terms.

Both label sets (the model's classes and the data's true labels) are mapped to CL terms
(:func:`cellfoundry.ontology.map_labels`; a user's label map wins). Per cell, the credit is:

* **1** when the called term is the true term or a descendant of it (finer is right);
* **depth(call) / depth(true)** when the call is a strict ancestor of the true term (coarser:
  partial credit; depth = ``is_a`` distance from the root term "cell", so "cell" itself earns 0
  and "T cell" for a CD4-positive alpha-beta T cell earns about two thirds);
* **0** otherwise: a different lineage, an Unknown call, or a class/label without a term.

Reported, forced choice (the most probable class of every cell): ``ontology_accuracy`` (share
with credit 1), ``ontology_score`` (mean credit),
``ontology_macro_score`` (mean credit per true term, then averaged over true terms),
``coarser_share``, and ``expressible_share``: the share of cells whose true term the model can
express at all (some model class maps to that term or a descendant of it); and, on the cells not
called Unknown, ``called_ontology_accuracy`` / ``called_ontology_score`` beside ``coverage``.
Cells whose true label has no term are counted in ``n_cells``, earn 0 and are never expressible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cellfoundry.ontology import LabelMapping, depth, is_descendant, map_labels
from cellfoundry.stats.labels import UNKNOWN, labelled_mask

CREDIT_RULE = (
    "1 if the call is the true CL term or a descendant; depth(call)/depth(true) if the call is "
    "an ancestor of the true term (coarser); 0 otherwise (other lineage, Unknown, no term)"
)


def call_credit(call: str, true: str) -> tuple[float, bool]:
    """(credit, coarser) of one call (CL term ids; empty = no term), by :data:`CREDIT_RULE`."""
    if not call or not true:
        return 0.0, False
    if is_descendant(call, true):
        return 1.0, False
    if is_descendant(true, call, strict=True):
        d = depth(true)
        return (depth(call) / d if d else 0.0), True
    return 0.0, False


def ontology_metrics(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    model_classes: Sequence[str],
    *,
    model_mapping: LabelMapping | None = None,
    label_map: str | Path | Mapping[str, str] | None = None,
    called: npt.ArrayLike | None = None,
) -> dict[str, Any]:
    """Ontology-aware scores of predictions ``y_pred`` (model class names) against ``y_true``.

    ``model_mapping``: the model's stored class -> term mapping (``Annotator.ontology``);
    ``label_map``: a user's ``label -> CL id`` table (CSV or dict) for either vocabulary, which
    wins. Forced choice: every cell's ``y_pred`` is scored (an "Unknown" entry earns 0).
    ``called``: bool mask of cells not turned into Unknown; ``called_ontology_*`` score those
    only, ``coverage`` is their share. Unlabelled cells are dropped first.
    """
    yt_all = np.asarray(y_true, dtype=object)
    keep = labelled_mask(yt_all)
    yt = yt_all[keep].astype(str)
    yp = np.asarray(y_pred, dtype=object)[keep].astype(str)
    call = np.ones(len(yt), bool) if called is None else np.asarray(called, bool)[keep]
    call &= yp != UNKNOWN
    classes = [str(c) for c in model_classes]
    mmap = map_labels(classes, label_map, base=model_mapping)
    tmap = map_labels(sorted(set(yt.tolist())), label_map)
    class_terms = {c: mmap.term(c) for c in classes}
    true_terms = {t: tmap.term(t) for t in set(yt.tolist())}
    expressible_terms = {
        t: any(is_descendant(ct, t) for ct in class_terms.values() if ct)
        for t in set(true_terms.values())
        if t
    }
    cache: dict[tuple[str, str], tuple[float, bool]] = {}
    credit = np.zeros(len(yt))
    exact = np.zeros(len(yt), bool)
    coarser = np.zeros(len(yt), bool)
    for i, (t_lab, p_lab) in enumerate(zip(yt, yp, strict=True)):
        t, p = true_terms[t_lab], class_terms.get(p_lab, "")
        key = (p, t)
        if key not in cache:
            cache[key] = call_credit(p, t)
        credit[i], coarser[i] = cache[key]
        exact[i] = credit[i] == 1.0
    cell_true_terms = np.array([true_terms[t] for t in yt], dtype=object)
    expressible = np.array([expressible_terms.get(t, False) for t in cell_true_terms], bool)
    n = len(yt)
    per_term = {t: float(credit[cell_true_terms == t].mean()) for t in sorted(expressible_terms)}
    nan = float("nan")
    return {
        "n_cells": n,
        "ontology_accuracy": float(exact.mean()) if n else nan,
        "ontology_score": float(credit.mean()) if n else nan,
        "ontology_macro_score": float(np.mean(list(per_term.values()))) if per_term else nan,
        "coverage": float(call.mean()) if n else nan,
        "called_ontology_accuracy": float(exact[call].mean()) if call.any() else nan,
        "called_ontology_score": float(credit[call].mean()) if call.any() else nan,
        "coarser_share": float(coarser.mean()) if n else nan,
        "expressible_share": float(expressible.mean()) if n else nan,
        "truth_unmapped_share": float((cell_true_terms == "").mean()) if n else nan,
        "credit_rule": CREDIT_RULE,
        "truth_terms": {k: v for k, v in sorted(true_terms.items())},
        "model_terms": class_terms,
        "truth_unmapped": sorted(k for k, v in true_terms.items() if not v),
        "model_unmapped": [c for c, v in class_terms.items() if not v],
        "per_true_term_score": per_term,
    }
