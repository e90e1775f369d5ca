"""Consensus of several models over the same cells, combined up the Cell Ontology.

Each model's calibrated class probabilities are put on Cell Ontology terms (its classes' CL
terms; a class without a term stands for itself). The pooled *mass* of a term is the weighted
mean of the models' probabilities; its *support* is the pooled mass of the term and of every
term below it — so votes for "regulatory T cell" and "CD4-positive, alpha-beta T cell" both
count for "CD4-positive, alpha-beta T cell" and for "T cell".

Weights (``model_weights``, what ``annotate(model=[...])`` uses): fitted on reference cells that
every model predicted without having fit on them (``cellfoundry.artifacts.heldout``: out-of-fold
predictions when the models were trained with ``cv_folds``, else the held-out split's stop and
test parts), by maximising the class-balanced log-likelihood of the pooled probabilities
(``pool_weights``; every true class counts alike, as in macro-F1). A model that the reference
shows to add nothing gets ~0 weight. The calls of that pool and of each model alone are then
scored by macro-F1 on the same held-out cells, and the pool is used unless one model alone calls
them better (then that model's weight is 1; the others still count in the agreement) — the
log-likelihood scores probabilities, macro-F1 scores calls, and a pool that is likelier on the
truth can still flip a few cells of a rare class. Models without such predictions (older
artifacts, or trained on different references) are weighed by their held-out macro-F1
(``heldout_weights``).

The call of a cell: the class with the largest pooled mass when its support is larger than that
of every *rival* term (neither above nor below it); otherwise the most specific term whose
support is above ``min_support`` (0.5) among the classes and their *informative* ancestors
(terms at or below a broad compartment such as "T cell", "monocyte", "endocrine cell", plus
"lymphocyte" and "myeloid leukocyte") — the closest common term of the disagreeing calls;
otherwise ``Unknown``. So a broader term is called only when the evidence is split between
lineages (e.g. CD4 and CD8 T cell tie), never when one class leads.

A model without evidence for a cell (no counts on any gene it reads: uniform probabilities, see
``stats.labels``) abstains: the cell's mass is pooled over the other models, their weights
renormalised. A cell no model has evidence for is Unknown, its mass even over the classes —
an even spread would otherwise put a broad term above ``min_support`` when most classes lie
below it.

``consensus_agreement`` is the share of models whose own most probable class agrees with the
consensus call: the same term, a broader term above it ("T cell" agrees with "CD4 T cells"), or
a narrower term below it as long as the narrower calls lie on one lineage ("regulatory T cell"
agrees with "CD4-positive, alpha-beta T cell"; "CD4 T" and "CD8 T" rolled up to "T cell" do not
agree). Every model counts once, whatever its weight (an abstaining one agrees with nothing).
1.0 means every model made a compatible call; Unknown cells have 0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from cellfoundry.artifacts.heldout import HeldOutPredictions
from cellfoundry.models.base import Annotator
from cellfoundry.ontology import (
    GENERIC_LEVELS,
    LabelMapping,
    TermMatch,
    ancestors,
    resolve,
    roll_up,
    term_name,
)
from cellfoundry.result import PROBA_KEY, TERM_COLUMN, AnnotationResult, uns_safe
from cellfoundry.stats.labels import UNKNOWN, uniform_rows, uniform_where

DEFAULT_MIN_SUPPORT = 0.5
EXTRA_INFORMATIVE = ("lymphocyte", "myeloid leukocyte")
CONSENSUS_COLUMN = "consensus_cell_type"
CONSENSUS_TERM_COLUMN = "consensus_cell_type_ontology_term_id"
AGREEMENT_COLUMN = "consensus_agreement"
MEMBER_SEPARATOR = "__"  # per-model columns: predicted_cell_type__<model name>
_CHUNK = 50_000


def member_column(column: str, name: str) -> str:
    """The obs column of one model's own output, e.g. ``predicted_cell_type__logreg``."""
    return f"{column}{MEMBER_SEPARATOR}{name}"


def member_names(names: Sequence[str]) -> list[str]:
    """Model names made safe for column names and unique (``logreg``, ``logreg_2``, ...)."""
    out: list[str] = []
    for raw in names:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(raw)).strip("_") or "model"
        name, i = base, 2
        while name in out:
            name, i = f"{base}_{i}", i + 1
        out.append(name)
    return out


def _informative_roots() -> frozenset[str]:
    return frozenset(resolve(n) for n in (*GENERIC_LEVELS, *EXTRA_INFORMATIVE))


def _is_informative(term: str, roots: frozenset[str]) -> bool:
    return term in roots or any(a in roots for a in ancestors(term))


@dataclass
class Vocabulary:
    """The nodes votes can go to: the models' classes (leaves) and their informative ancestors."""

    keys: list[str]  # CL term id, or "label:<class>" for a class without a term
    names: list[str]  # what a call of that node is called
    strictly_below: np.ndarray  # (n_nodes, n_nodes) [n, m]: node m lies strictly below node n
    n_leaves: int  # the first n_leaves keys are the models' own classes
    below: np.ndarray  # (n_leaves, n_nodes) 1 where the node is the leaf or above it

    @property
    def is_term(self) -> np.ndarray:
        return np.array([not k.startswith("label:") for k in self.keys])


def _class_keys(result: AnnotationResult) -> list[str]:
    terms = result.class_terms.term_ids(result.classes)
    return [t if t else f"label:{c}" for t, c in zip(terms, result.classes, strict=True)]


def build_vocabulary(results: Sequence[AnnotationResult]) -> Vocabulary:
    leaves: dict[str, str] = {}
    for res in results:
        for key, cls in zip(_class_keys(res), res.classes, strict=True):
            leaves.setdefault(key, cls)  # the first model's name for a shared term
    roots = _informative_roots()
    keys, names = list(leaves), list(leaves.values())
    extra: list[str] = []
    for key in list(leaves):
        if key.startswith("label:"):
            continue
        for a in ancestors(key):
            if a not in leaves and a not in extra and _is_informative(a, roots):
                extra.append(a)
    keys += extra
    names += [term_name(a) for a in extra]
    index = {k: j for j, k in enumerate(keys)}
    # strictly_below[n, m]: node m lies strictly below node n (so m is the more specific call)
    strictly_below = np.zeros((len(keys), len(keys)), dtype=bool)
    for m, key in enumerate(keys):
        if not key.startswith("label:"):
            for a in ancestors(key):
                if a in index:
                    strictly_below[index[a], m] = True
    below = np.zeros((len(leaves), len(keys)), dtype=np.float32)
    for i in range(len(leaves)):
        below[i, i] = 1.0
        below[i] = np.maximum(below[i], strictly_below[:, i])
    return Vocabulary(keys, names, strictly_below, len(leaves), below)


@dataclass
class ConsensusCalls:
    node: np.ndarray  # (cells,) vocabulary index of the call, -1 for Unknown
    support: np.ndarray  # (cells,) support of the called node (0 for Unknown)
    agreement: np.ndarray  # (cells,) share of models agreeing with the call
    leaf_mass: np.ndarray  # (cells, n_leaves) probability mass per class, averaged over models


MIN_FIT_CELLS = 20  # held-out cells shared by every model below which weights are not fitted
_FLOOR = 1e-4  # probability floor of a model's mass on the true term (a model is never certain)


def pool_weights(support: np.ndarray, y: np.ndarray, iters: int = 2000) -> np.ndarray:
    """Class-balanced maximum-likelihood weights of the linear pool of several models.

    ``support`` (cells, models): each model's probability mass on the true term of the cell (the
    term and every term below it), on reference cells none of the models fit on; ``y`` the true
    term. The weights maximise ``sum_i c_i log(sum_m w_m s_im)`` over the simplex, with ``c_i``
    giving every true class the same total weight (as macro-F1 does). The objective is concave;
    the EM update ``w_m <- sum_i c_i w_m s_im / sum_k w_k s_ik`` climbs to its maximum.
    """
    s = np.maximum(np.asarray(support, dtype=np.float64), _FLOOR)
    y = np.asarray(y)
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    c = 1.0 / counts[inverse]
    c /= c.sum()
    w = np.full(s.shape[1], 1.0 / s.shape[1])
    for _ in range(iters):
        new = w * ((c / (s @ w)) @ s)
        new /= new.sum()
        if np.abs(new - w).max() < 1e-9:
            return new
        w = new
    return w


@dataclass
class Weighting:
    """The model weights of a consensus and where they come from."""

    weights: list[float]
    method: str  # "fitted_on_heldout_cells" | "heldout_macro_f1" | "equal" | "given"
    detail: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, **self.detail}


@dataclass
class HeldOutPool:
    """The models' predictions on reference cells none of them fit on, on the consensus's classes."""

    vocab: Vocabulary
    mass: list[np.ndarray]  # per model: (cells, n_leaves) probability mass on each class
    truth: np.ndarray  # (cells,) vocabulary index of each cell's true class
    kinds: list[str]  # how the predictions were made ("cross_validation", "held_out")

    def support(self) -> np.ndarray:
        """(cells, models) each model's mass on the true term and every term below it."""
        return np.stack([(m * self.vocab.below[:, self.truth].T).sum(axis=1) for m in self.mass], 1)

    def calls(
        self, weights: Sequence[float], min_support: float = DEFAULT_MIN_SUPPORT
    ) -> np.ndarray:
        """The consensus call (vocabulary index, -1 Unknown) of every cell with these weights."""
        w = np.asarray(weights, dtype=np.float64)
        w = (w / w.sum()).astype(np.float32)
        mass = sum(
            (wm * m for wm, m in zip(w, self.mass, strict=True)), np.zeros_like(self.mass[0])
        )
        return _call_nodes(mass, self.vocab, _rivals(self.vocab), min_support)[0]

    def macro_f1(self, weights: Sequence[float], min_support: float = DEFAULT_MIN_SUPPORT) -> float:
        """Macro-F1 over the true classes of the consensus calls (a broader term or Unknown is
        a miss), as the benchmarks score a query."""
        return _macro_f1(self.truth, self.calls(weights, min_support))


def _macro_f1(truth: np.ndarray, call: np.ndarray) -> float:
    scores = []
    for c in np.unique(truth):
        tp = np.sum((call == c) & (truth == c))
        fp = np.sum((call == c) & (truth != c))
        fn = np.sum((truth == c) & (call != c))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def heldout_pool(
    results: Sequence[AnnotationResult],
    heldout: Sequence[HeldOutPredictions | None],
    min_cells: int = MIN_FIT_CELLS,
) -> HeldOutPool | None:
    """The reference cells every model predicted without having fit on them
    (``cellfoundry.artifacts.heldout``) and the references label alike; None when a model has
    no such predictions or fewer than ``min_cells`` cells (of two or more classes) are shared."""
    if len(heldout) != len(results) or any(h is None for h in heldout):
        return None
    held = [h for h in heldout if h is not None]
    common = held[0].cells
    for h in held[1:]:
        common = np.intersect1d(common, h.cells)
    if len(common) < min_cells:
        return None
    vocab = build_vocabulary(results)
    key_index = {k: i for i, k in enumerate(vocab.keys)}
    truth, mass = [], []
    for res, h in zip(results, held, strict=True):
        order = np.argsort(h.cells, kind="stable")
        rows = order[np.searchsorted(h.cells[order], common)]  # each common cell's row
        leaf = np.asarray([key_index[k] for k in _class_keys(res)])
        truth.append(leaf[h.y[rows]])
        to_leaf = np.zeros((len(leaf), vocab.n_leaves), dtype=np.float32)
        to_leaf[np.arange(len(leaf)), leaf] = 1.0
        mass.append(h.probabilities[rows].astype(np.float32) @ to_leaf)
    t = truth[0]
    same = np.all([tr == t for tr in truth], axis=0)  # the models' references label them alike
    if same.sum() < min_cells or len(np.unique(t[same])) < 2:
        return None
    return HeldOutPool(vocab, [m[same] for m in mass], t[same], sorted({h.kind for h in held}))


def fitted_weights(
    results: Sequence[AnnotationResult],
    heldout: Sequence[HeldOutPredictions | None],
    min_cells: int = MIN_FIT_CELLS,
    select: bool = True,
) -> Weighting | None:
    """Weights fitted on the reference cells every model predicted without having fit on them
    (``heldout_pool``); None when there are too few such cells.

    ``pool_weights`` fits the weights of the pooled probabilities (class-balanced
    log-likelihood). That objective scores probabilities, not calls: a pool that is likelier
    on the truth can still flip a few cells of a rare class to a common one, which costs
    macro-F1 more than it gains. So (``select``) the calls of the fitted pool and of each model
    alone are scored by macro-F1 on the same held-out cells, and the best is used: the pool
    unless one model alone calls the held-out cells better (a tie keeps the pool). The
    consensus is then never worse than any one of its models on the held-out reference cells.
    """
    pool = heldout_pool(results, heldout, min_cells)
    if pool is None:
        return None
    fitted = [float(v) for v in pool_weights(pool.support(), pool.truth)]
    detail: dict[str, Any] = {
        "n_cells": len(pool.truth),
        "n_classes": len(np.unique(pool.truth)),
        "predictions": pool.kinds,
        "objective": "class-balanced log-likelihood of the weighted mean of the models' "
        "probabilities on reference cells none of them fit on",
    }
    if not select:
        return Weighting(fitted, "fitted_on_heldout_cells", detail)
    pooled_f1 = pool.macro_f1(fitted)
    single_f1 = [pool.macro_f1(np.eye(len(results))[m]) for m in range(len(results))]
    best = int(np.argmax(single_f1))
    alone = single_f1[best] > pooled_f1
    chosen = [float(v) for v in np.eye(len(results))[best]] if alone else fitted
    detail |= {
        "selection": "macro-F1 of the calls on the same held-out cells: the fitted pool, "
        "unless one model alone is better (a tie keeps the pool)",
        "heldout_macro_f1": {
            "pooled": pooled_f1,
            "single": dict(zip(_names(results), single_f1, strict=True)),
        },
        "fitted_weights": fitted,
        "chosen": _names(results)[best] if alone else "pooled",
    }
    return Weighting(chosen, "fitted_on_heldout_cells", detail)


def _names(results: Sequence[AnnotationResult]) -> list[str]:
    return member_names([r.model_name for r in results])


def model_weights(
    annotators: Sequence[Annotator], results: Sequence[AnnotationResult]
) -> Weighting:
    """The weights ``annotate(model=[...])`` uses: fitted on the models' held-out predictions
    (``fitted_weights``) when every model kept them for shared reference cells, else from each
    model's held-out macro-F1 (``heldout_weights``)."""
    fitted = fitted_weights(results, [a.heldout_predictions for a in annotators])
    if fitted is not None:
        return fitted
    f1 = [a.manifest.metrics.get("macro_f1") for a in annotators]
    w = heldout_weights(f1)
    if any(f is None or not np.isfinite(f) for f in f1):
        return Weighting(w, "equal", {"why": "a model has no held-out macro-F1"})
    return Weighting(
        w,
        "heldout_macro_f1",
        {"why": "the models kept no predictions on shared held-out reference cells"},
    )


def heldout_weights(macro_f1: Sequence[float | None]) -> list[float]:
    """Model weights from each model's macro-F1 on its own held-out reference cells.

    ``log(f / (1 - f))`` (the optimal weight of an independent voter that is right with
    probability f), with f clipped to [0.55, 0.99]; equal weights when any score is missing.
    """
    if any(f is None or not np.isfinite(f) for f in macro_f1):
        return [1.0] * len(macro_f1)
    f = np.clip(np.asarray(macro_f1, dtype=np.float64), 0.55, 0.99)
    return [float(v) for v in np.log(f / (1 - f))]


def _rivals(vocab: Vocabulary) -> np.ndarray:
    """rivals[l, n]: node n is neither the class l, nor above it, nor below it."""
    return ~(vocab.below.astype(bool) | vocab.strictly_below[: vocab.n_leaves])


def _call_nodes(
    mass: np.ndarray, vocab: Vocabulary, rivals: np.ndarray, min_support: float
) -> tuple[np.ndarray, np.ndarray]:
    """The call (vocabulary index, -1 for Unknown) and its support for pooled class masses."""
    sup = mass @ vocab.below
    ok = sup > min_support
    # the most specific supported nodes: none of the nodes below them is supported
    finest = ok & ~((ok.astype(np.float32) @ vocab.strictly_below.T.astype(np.float32)) > 0)
    best = np.where(finest, sup, -np.inf).argmax(axis=1)
    has = ok.any(axis=1)
    # the top class is called outright when it has more support than every rival term
    top = mass.argmax(axis=1)
    rows = np.arange(len(mass))
    rival = np.full(len(mass), -np.inf, dtype=np.float32)
    for leaf in np.unique(top):
        at = np.nonzero(top == leaf)[0]
        if rivals[leaf].any():
            rival[at] = sup[np.ix_(at, np.nonzero(rivals[leaf])[0])].max(axis=1)
    wins = sup[rows, top] > rival
    node = np.where(wins, top, np.where(has, best, -1))
    support = np.where(node >= 0, sup[rows, np.maximum(node, 0)], 0.0).astype(np.float32)
    return node, support


def combine(
    results: Sequence[AnnotationResult],
    vocab: Vocabulary,
    min_support: float = DEFAULT_MIN_SUPPORT,
    weights: Sequence[float] | None = None,
) -> ConsensusCalls:
    """The consensus call, its support and the models' agreement for every cell."""
    n = results[0].n_cells
    w = np.ones(len(results)) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(w) != len(results) or (w < 0).any() or w.sum() <= 0:
        raise ValueError("give one non-negative weight per model (not all zero)")
    w = (w / w.sum()).astype(np.float32)
    key_index = {k: i for i, k in enumerate(vocab.keys)}
    to_leaf = []
    for res in results:
        m = np.zeros((len(res.classes), vocab.n_leaves), dtype=np.float32)
        for c, key in enumerate(_class_keys(res)):
            m[c, key_index[key]] = 1.0
        to_leaf.append(m)
    leaf_calls = [np.asarray([key_index[k] for k in _class_keys(res)]) for res in results]
    rivals = _rivals(vocab)
    node = np.full(n, -1, dtype=np.int64)
    support = np.zeros(n, dtype=np.float32)
    leaf_mass = np.zeros((n, vocab.n_leaves), dtype=np.float32)
    for s in range(0, n, _CHUNK):
        e = min(n, s + _CHUNK)
        mass = np.zeros((e - s, vocab.n_leaves), dtype=np.float32)
        voting = np.zeros(e - s, dtype=np.float32)  # weight of the models with evidence
        for r, m, wm in zip(results, to_leaf, w, strict=True):
            p = r.probabilities[s:e].astype(np.float32)
            has = wm * ~uniform_rows(p)  # no evidence for a cell (uniform): the model abstains
            mass += has[:, None] * (p @ m)
            voting += has
        none = voting == 0  # no model has evidence: Unknown, the mass even over the classes
        mass /= np.where(none, 1.0, voting)[:, None]
        node[s:e], support[s:e] = _call_nodes(mass, vocab, rivals, min_support)
        node[s:e][none], support[s:e][none] = -1, 0.0
        leaf_mass[s:e] = uniform_where(mass, none)
    # agreement per distinct (call, each model's call) combination: few, however many cells;
    # a model without evidence for a cell (-1) agrees with nothing
    own = np.stack(
        [
            np.where(uniform_rows(r.probabilities), -1, lc[r.probabilities.argmax(axis=1)])
            for r, lc in zip(results, leaf_calls, strict=True)
        ],
        axis=1,
    )
    combos, inverse = np.unique(np.c_[node, own], axis=0, return_inverse=True)
    values = np.array([_agreement(int(row[0]), row[1:], vocab) for row in combos])
    agreement = values[np.asarray(inverse).ravel()].astype(np.float32)
    return ConsensusCalls(node, support, agreement, leaf_mass)


def _agreement(node: int, own: np.ndarray, vocab: Vocabulary) -> float:
    """Share of models agreeing with the call ``node`` (see the module doc); 0 for Unknown."""
    if node < 0:
        return 0.0
    n_models = len(own)
    own = own[own >= 0]  # the models with evidence for the cell
    sb = vocab.strictly_below
    same_or_broader = [m for m in own if m == node or sb[m, node]]
    narrower = sorted({int(m) for m in own if sb[node, m]})
    one_lineage = all(
        sb[a, b] or sb[b, a] for i, a in enumerate(narrower) for b in narrower[i + 1 :]
    )
    n_narrower = sum(1 for m in own if sb[node, m]) if one_lineage else 0
    return (len(same_or_broader) + n_narrower) / n_models


@dataclass
class ConsensusResult(AnnotationResult):
    """The consensus of several models; ``members`` keeps each model's own result.

    ``classes`` / ``probabilities`` are the models' classes (one per CL term) and their
    probability mass averaged over the models; ``labels`` is the consensus call (a class, a
    broader common term, or Unknown).
    """

    members: list[AnnotationResult] = field(default_factory=list)
    member_names: list[str] = field(default_factory=list)
    calls: ConsensusCalls | None = None
    vocabulary: Vocabulary | None = None
    min_support: float = DEFAULT_MIN_SUPPORT
    weights: list[float] = field(default_factory=list)
    weighting: dict[str, Any] = field(default_factory=dict)

    def _parts(self) -> tuple[ConsensusCalls, Vocabulary]:
        assert self.calls is not None and self.vocabulary is not None
        return self.calls, self.vocabulary

    @property
    def labels(self) -> np.ndarray:
        calls, vocab = self._parts()
        names = np.asarray([*vocab.names, UNKNOWN], dtype=object)
        return names[calls.node]  # -1 -> Unknown

    @property
    def term_ids(self) -> np.ndarray:
        calls, vocab = self._parts()
        keys = np.asarray(
            [("" if k.startswith("label:") else k) for k in vocab.keys] + [""], dtype=object
        )
        return keys[calls.node]

    @property
    def confidence(self) -> np.ndarray:
        return self._parts()[0].support

    @property
    def unknown(self) -> np.ndarray:
        return self._parts()[0].node < 0

    def _rolled_up(self) -> tuple[np.ndarray, np.ndarray]:
        assert self.level is not None
        terms = np.asarray([roll_up(t, self.level) if t else "" for t in self.term_ids])
        names = np.asarray(
            [term_name(t) if t else lab for t, lab in zip(terms, self.labels, strict=True)],
            dtype=object,
        )
        return names, terms

    def to_frame(self) -> pd.DataFrame:
        df = super().to_frame()
        df["predicted_cell_type"] = pd.Categorical(self.labels)
        return df

    def to_adata(self, adata: ad.AnnData | None = None) -> ad.AnnData:
        target = super().to_adata(adata)
        for name, res in zip(self.member_names, self.members, strict=True):
            target.obsm[member_column(PROBA_KEY, name)] = res.probabilities.astype(np.float32)
        uns = target.uns["cellfoundry"]
        uns["consensus"] = uns_safe(self.consensus_summary())
        uns["members"] = {
            name: uns_safe(
                {
                    "model": res.model_name,
                    "family": res.model_family,
                    "classes": list(res.classes),
                    "class_ontology_term_ids": res.class_terms.term_ids(res.classes),
                    "unknown_threshold": float(res.threshold),
                    "probability_key": member_column(PROBA_KEY, name),
                    **res.findings,
                }
            )
            for name, res in zip(self.member_names, self.members, strict=True)
        }
        return target

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["consensus"] = self.consensus_summary()
        out["members"] = {
            name: {
                k: v
                for k, v in res.summary().items()
                if k not in ("ontology", "label_counts", "orthology")
            }
            for name, res in zip(self.member_names, self.members, strict=True)
        }
        return out

    def consensus_summary(self) -> dict[str, Any]:
        calls, vocab = self._parts()
        agree = calls.agreement
        return {
            "models": list(self.member_names),
            "rule": (
                "the class with the largest weighted mean probability when its support (mass "
                "of the term and its descendants) exceeds that of every term neither above nor "
                "below it; else the most specific informative Cell Ontology term with support "
                f"above {self.min_support:g}; else Unknown"
            ),
            "min_support": self.min_support,
            "weights": dict(zip(self.member_names, self.weights, strict=True)),
            "weighting": self.weighting,
            "mean_agreement": float(agree.mean()) if self.n_cells else 0.0,
            "share_full_agreement": float((agree >= 1.0).mean()) if self.n_cells else 0.0,
            "share_unknown": float(self.unknown.mean()) if self.n_cells else 0.0,
            "share_broader_term": float((calls.node >= vocab.n_leaves).mean())
            if self.n_cells
            else 0.0,
            "columns": {
                "consensus": [CONSENSUS_COLUMN, CONSENSUS_TERM_COLUMN, AGREEMENT_COLUMN],
                "per_model": f"<column>{MEMBER_SEPARATOR}<model name>",
            },
        }


def agreement_figures(res: AnnotationResult, model_ids: Sequence[str]) -> dict[str, Any]:
    """The consensus's agreement distribution and each model's agreement with the consensus.

    A model agrees on a cell when its own most probable class is the consensus call, or lies
    above or below it in the Cell Ontology (one lineage); an Unknown consensus has no agreement.
    """
    n = res.n_cells
    agree = np.asarray(res.obs_columns[AGREEMENT_COLUMN], dtype=np.float64)
    values, counts = np.unique(np.round(agree, 4), return_counts=True)
    distribution = [
        {"agreement": float(v), "n_cells": int(c), "share": float(c / n)}
        for v, c in zip(values, counts, strict=True)
    ]
    call_label = np.asarray(res.obs_columns[CONSENSUS_COLUMN], dtype=object)
    call_term = np.asarray(res.term_ids, dtype=object)
    unknown = np.asarray(res.unknown, dtype=bool)
    per_model: dict[str, Any] = {}
    for mid in model_ids:
        own_label = np.asarray(res.obs_columns[member_column("predicted_cell_type", mid)], object)
        own_term = np.asarray(res.obs_columns[member_column(TERM_COLUMN, mid)], dtype=object)
        keys = pd.DataFrame({"ct": call_term, "cl": call_label, "mt": own_term, "ml": own_label})
        # one verdict per distinct (call, model's call) pair: few, however many cells
        codes = keys.groupby(list(keys.columns), sort=False).ngroup().to_numpy()
        verdicts = []
        for ct, cl, mt, ml in keys.drop_duplicates().itertuples(index=False):
            if ct and mt:
                verdicts.append((ct == mt, ct == mt or ct in ancestors(mt) or mt in ancestors(ct)))
            else:  # a class without a term agrees with itself only
                same = not ct and not mt and cl == ml
                verdicts.append((same, same))
        flags = np.asarray(verdicts, dtype=bool).reshape(-1, 2)[codes] & ~unknown[:, None]
        per_model[mid] = {
            "agreement": float(flags[:, 1].mean()) if n else 0.0,
            "same_call": float(flags[:, 0].mean()) if n else 0.0,
        }
    return {
        "model_ids": list(model_ids),
        "agreement_distribution": distribution,
        "per_model": per_model,
    }


def _mean_distance(members: Sequence[AnnotationResult]) -> dict[str, np.ndarray]:
    """reference_distance: mean over the models that have one; out_of_reference: half of them."""
    have = [m for m in members if "reference_distance" in m.obs_columns]
    if not have:
        return {}
    dist = np.mean([m.obs_columns["reference_distance"] for m in have], axis=0)
    flags = np.mean([m.obs_columns["out_of_reference"] for m in have], axis=0)
    return {
        "reference_distance": dist.astype(np.float32),
        "out_of_reference": flags >= 0.5,
    }


def consensus(
    results: Sequence[AnnotationResult],
    names: Sequence[str] | None = None,
    *,
    min_support: float = DEFAULT_MIN_SUPPORT,
    weights: Sequence[float] | None = None,
    weighting: Weighting | None = None,
) -> ConsensusResult:
    """Combine the results of several models over the same cells (see the module doc).

    ``weights`` (one per model, e.g. from ``model_weights``, ``fitted_weights`` or
    ``heldout_weights``) weigh the models' probability mass; equal by default. ``weighting``
    records where they come from (in the summary).
    """
    if len(results) < 2:
        raise ValueError("a consensus needs at least two results")
    first = results[0]
    for r in results[1:]:
        if r.n_cells != first.n_cells or not r.obs_names.equals(first.obs_names):
            raise ValueError("every result must cover the same cells in the same order")
    model_names = member_names(names if names is not None else [r.model_name for r in results])
    vocab = build_vocabulary(results)
    w = [1.0] * len(results) if weights is None else [float(v) for v in weights]
    if weighting is None:
        weighting = Weighting(w, "equal" if weights is None else "given")
    calls = combine(results, vocab, min_support, w)
    leaf_names = vocab.names[: vocab.n_leaves]
    matches: dict[str, TermMatch] = {}
    for res in results:
        for cls, key in zip(res.classes, _class_keys(res), strict=True):
            name = leaf_names[vocab.keys.index(key)]
            if name not in matches:
                m = res.class_terms.matches.get(cls)
                matches[name] = TermMatch(
                    name,
                    m.term_id if m else "",
                    m.term_name if m else "",
                    m.method if m else "unmapped",
                    m.source if m else "",
                )
    mapping = LabelMapping(matches=matches, ontology_version=first.class_terms.ontology_version)
    obs: dict[str, np.ndarray] = {}
    out = ConsensusResult(
        obs_names=first.obs_names,
        classes=list(leaf_names),
        probabilities=calls.leaf_mass,
        threshold=min_support,
        model_name="consensus(" + ", ".join(model_names) + ")",
        model_family="consensus",
        coverage=None,
        warnings=[
            f"{n}: {w}" for n, r in zip(model_names, results, strict=True) for w in r.warnings
        ],
        species=first.species,
        adata=first.adata,
        ontology=mapping,
        level=first.level,
        obs_columns=obs,
        members=list(results),
        member_names=model_names,
        calls=calls,
        vocabulary=vocab,
        min_support=min_support,
        weights=[v / sum(w) for v in w],
        weighting=weighting.describe(),
    )
    obs[CONSENSUS_COLUMN] = out.labels
    obs[CONSENSUS_TERM_COLUMN] = out.term_ids
    obs[AGREEMENT_COLUMN] = calls.agreement
    obs.update(_mean_distance(results))
    for name, res in zip(model_names, results, strict=True):
        obs[member_column("predicted_cell_type", name)] = res.labels
        obs[member_column(TERM_COLUMN, name)] = res.term_ids
        obs[member_column("prediction_confidence", name)] = res.confidence.astype(np.float32)
        obs[member_column("prediction_unknown", name)] = res.unknown
        for col, values in res.obs_columns.items():
            obs[member_column(col, name)] = values
    return out
