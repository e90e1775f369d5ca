"""Evidence for the baselines' calls: per-cell top genes and marker overlap with the reference.

Per cell (``explain=True``): the genes whose ``coefficient × standardised value`` adds most to
the score of the called class, strongest first. For logistic regression the coefficients are
the model's own (on standardised features). For kNN, whose vote has no coefficients, they are
*separation coefficients* stored at training time: for each class, the mean standardised
expression of its reference cells minus that of all other reference cells, i.e. the genes that
best separate the neighbours' type from the others.

Per predicted type: Welch t-tests (cells of the type against the rest, log1p-CP10k, the test of
``scanpy.tl.rank_genes_groups(method="t-test")``) from streamed sums, so any number of cells works
in one pass. The query's top markers of each predicted type are compared with the reference's top
markers of the same class (computed the same way at training time and stored in the artifact).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from cellfoundry.data.genes import gene_table, is_ensembl
from cellfoundry.models.baselines.standardise import standardise_cells

N_TOP_GENES = 10
N_MARKERS = 50
N_STORED_MARKERS = 200
MIN_GROUP_CELLS = 10
MARKERS_KEY = "markers.reference"
SEPARATION_KEY = "explain.separation"
SEPARATION_SCALING = ("explain.mean", "explain.scale")


def display_names(genes: Sequence[str]) -> list[str]:
    """Gene symbols for display (Ensembl IDs are mapped with the shipped GENCODE table)."""
    if not any(is_ensembl(g) for g in genes):
        return list(genes)
    mapped = gene_table().to_symbol(genes)
    return [m or g for m, g in zip(mapped, genes, strict=True)]


def top_genes(contributions: np.ndarray, names: Sequence[str], n: int = N_TOP_GENES) -> np.ndarray:
    """``;``-joined names of each row's ``n`` largest positive contributions, strongest first."""
    return top_genes_and_scores(contributions, names, n)[0]


def top_genes_and_scores(
    contributions: np.ndarray, names: Sequence[str], n: int = N_TOP_GENES
) -> tuple[np.ndarray, np.ndarray]:
    """``top_genes`` and, aligned with them, their contributions (``;``-joined, 4 significant
    digits)."""
    n = min(n, contributions.shape[1])
    if n == 0:
        empty = np.full(contributions.shape[0], "", dtype=object)
        return empty, empty.copy()
    part = np.argpartition(-contributions, n - 1, axis=1)[:, :n]
    vals = np.take_along_axis(contributions, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    arr = np.asarray(names, dtype=object)
    genes, scores = [], []
    for i, v in zip(idx, vals, strict=True):
        keep = v > 0
        genes.append(";".join(arr[i][keep]))
        scores.append(";".join(f"{float(c):.4g}" for c in v[keep]))
    return np.array(genes, dtype=object), np.array(scores, dtype=object)


def class_contributions(
    z: np.ndarray, coefficients: np.ndarray, called: np.ndarray, present: np.ndarray | None = None
) -> np.ndarray:
    """``coefficients[called class] × z`` per cell and gene; genes absent from the query give 0."""
    contrib = coefficients[called] * z
    if present is not None:
        contrib[:, ~present] = 0.0
    return contrib


def separation_coefficients(
    x: sp.csr_matrix, y: np.ndarray, n_classes: int
) -> dict[str, np.ndarray]:
    """Per class: mean standardised expression of its cells minus that of all other cells."""
    stats = GroupStats(x.shape[1], n_classes)
    stats.add(x, y)
    mean, sd = stats.overall_mean_sd()
    sd = np.where(sd < 1e-8, 1.0, sd)
    gm = stats.sums / np.maximum(stats.n, 1)[:, None]
    rest = (stats.sums.sum(axis=0) - stats.sums) / np.maximum(stats.n.sum() - stats.n, 1)[:, None]
    return {
        SEPARATION_KEY: ((gm - rest) / sd).astype(np.float32),
        SEPARATION_SCALING[0]: mean.astype(np.float32),
        SEPARATION_SCALING[1]: sd.astype(np.float32),
    }


def knn_contributions(
    state: dict[str, np.ndarray],
    x: sp.csr_matrix,
    called: np.ndarray,
    present: np.ndarray | None = None,
) -> np.ndarray:
    z = standardise_cells(x, state[SEPARATION_SCALING[0]], state[SEPARATION_SCALING[1]])
    return class_contributions(z, state[SEPARATION_KEY], called, present)


class GroupStats:
    """Streamed per-group count, sum and sum of squares of every gene (for Welch t-tests)."""

    def __init__(self, n_genes: int, n_groups: int) -> None:
        self.n = np.zeros(n_groups, dtype=np.int64)
        self.sums = np.zeros((n_groups, n_genes), dtype=np.float64)
        self.sumsq = np.zeros((n_groups, n_genes), dtype=np.float64)

    def add(self, x: sp.csr_matrix, groups: np.ndarray) -> None:
        g = len(self.n)
        onehot = sp.csr_matrix(
            (np.ones(len(groups)), (groups, np.arange(len(groups)))), shape=(g, len(groups))
        )
        xs = sp.csr_matrix(x, dtype=np.float64)
        self.n += np.bincount(groups, minlength=g)
        self.sums += np.asarray((onehot @ xs).todense())
        sq = xs.copy()
        sq.data **= 2
        self.sumsq += np.asarray((onehot @ sq).todense())

    def overall_mean_sd(self) -> tuple[np.ndarray, np.ndarray]:
        n = max(int(self.n.sum()), 1)
        mean = self.sums.sum(axis=0) / n
        var = np.maximum(self.sumsq.sum(axis=0) / n - mean**2, 0.0)
        return mean, np.sqrt(var)

    def welch_t(self) -> np.ndarray:
        """(n_groups, n_genes) t statistics of each group against all other cells (NaN if < 2 cells)."""
        n_all = self.n.sum()
        s_all, q_all = self.sums.sum(axis=0), self.sumsq.sum(axis=0)
        n_g = self.n[:, None].astype(np.float64)
        n_r = n_all - n_g
        with np.errstate(divide="ignore", invalid="ignore"):
            m_g = self.sums / n_g
            m_r = (s_all - self.sums) / n_r
            v_g = (self.sumsq - n_g * m_g**2) / (n_g - 1)
            v_r = ((q_all - self.sumsq) - n_r * m_r**2) / (n_r - 1)
            se = np.sqrt(np.maximum(v_g, 0) / n_g + np.maximum(v_r, 0) / n_r)
            t = (m_g - m_r) / se
        t[np.isnan(t) & (se == 0)] = 0.0  # constant gene: no evidence either way
        t[(n_g < 2).ravel() | (n_r < 2).ravel()] = np.nan
        return t


def ranked_markers(t: np.ndarray, n: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """(n_groups, n) gene indices with the highest t (up in the group), best first; -1 pads."""
    scores = np.where(np.isnan(t), -np.inf, t)
    if allowed is not None:
        scores = np.where(allowed[None, :], scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :n]
    ok = np.take_along_axis(scores, order, axis=1) > 0
    return np.where(ok, order, -1).astype(np.int64)


def reference_markers(x: sp.csr_matrix, y: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """The reference's ranked marker genes of every class (stored in the artifact)."""
    stats = GroupStats(x.shape[1], n_classes)
    stats.add(x, y)
    return {MARKERS_KEY: ranked_markers(stats.welch_t(), min(N_STORED_MARKERS, x.shape[1]))}


def marker_overlap(
    query: GroupStats,
    reference: np.ndarray,
    classes: Sequence[str],
    names: Sequence[str],
    present: np.ndarray,
    n: int = N_MARKERS,
    min_cells: int = MIN_GROUP_CELLS,
) -> dict[str, Any]:
    """Overlap of each predicted type's top-``n`` query markers with the reference's top ``n``.

    Both lists are restricted to genes present in the query. ``overlap`` = shared / ``n``;
    ``expected_by_chance`` = ``n`` / genes present. Types with fewer than ``min_cells`` cells
    (or fewer than ``min_cells`` other cells) are listed with ``overlap`` None.
    """
    t = query.welch_t()
    n_present = int(present.sum())
    n_eff = min(n, n_present)
    q_markers = ranked_markers(t, n_eff, present)
    arr = np.asarray(names, dtype=object)
    per_type: dict[str, Any] = {}
    n_total = int(query.n.sum())
    for c, name in enumerate(classes):
        n_cells = int(query.n[c])
        if n_cells == 0:
            continue
        if n_cells < min_cells or n_total - n_cells < min_cells:
            per_type[name] = {"n_cells": n_cells, "overlap": None, "shared_markers": []}
            continue
        ref = [int(g) for g in reference[c] if g >= 0 and present[g]][:n_eff]
        qry = [int(g) for g in q_markers[c] if g >= 0]
        shared = [g for g in qry if g in set(ref)]
        per_type[name] = {
            "n_cells": n_cells,
            "overlap": len(shared) / n_eff if n_eff else None,
            "shared_markers": [str(arr[g]) for g in shared[:10]],
            "query_markers": [str(arr[g]) for g in qry[:10]],
            "reference_markers": [str(arr[g]) for g in ref[:10]],
        }
    scored = [v for v in per_type.values() if v["overlap"] is not None]
    weights = np.array([v["n_cells"] for v in scored], dtype=np.float64)
    return {
        "n_markers": n_eff,
        "test": "Welch t-test, cells of the predicted type vs all other cells (log1p-CP10k)",
        "expected_by_chance": n_eff / n_present if n_present else None,
        "mean_overlap": float(np.average([v["overlap"] for v in scored], weights=weights))
        if scored
        else None,
        "by_predicted_type": per_type,
    }


@dataclass
class MarkerCounts:
    """What ``marker_overlap`` needs from a set of cells, additive across parts of a dataset.

    The per-type sums of a dataset's cells are the sums of its parts' (shards of a run, chunks),
    so the overlap of the whole is computed from the parts' counts without the cells.
    """

    stats: GroupStats
    reference: np.ndarray  # the reference's ranked markers of every class (from the artifact)
    classes: list[str]
    names: list[str]
    present: np.ndarray  # per model gene: in the query

    def overlap(self) -> dict[str, Any]:
        return marker_overlap(self.stats, self.reference, self.classes, self.names, self.present)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (``np.savez`` / ``np.load`` without pickle)."""
        return {
            "n": self.stats.n,
            "sums": self.stats.sums,
            "sumsq": self.stats.sumsq,
            "reference": self.reference,
            "classes": np.asarray(self.classes, dtype=str),
            "names": np.asarray(self.names, dtype=str),
            "present": self.present,
        }

    @classmethod
    def from_arrays(cls, arrays: Any) -> MarkerCounts:
        classes, names = [str(c) for c in arrays["classes"]], [str(g) for g in arrays["names"]]
        stats = GroupStats(len(names), len(classes))
        stats.n[:] = arrays["n"]
        stats.sums[:] = arrays["sums"]
        stats.sumsq[:] = arrays["sumsq"]
        return cls(stats, np.asarray(arrays["reference"]), classes, names, arrays["present"])

    @classmethod
    def combine(cls, parts: Sequence[MarkerCounts]) -> MarkerCounts:
        """The counts of the union of ``parts`` (same model and query genes in every part)."""
        first = parts[0]
        for p in parts[1:]:
            if (
                p.classes != first.classes
                or p.names != first.names
                or not np.array_equal(p.present, first.present)
                or not np.array_equal(p.reference, first.reference)
            ):
                raise ValueError("marker counts of different models or gene panels do not add up")
        stats = GroupStats(len(first.names), len(first.classes))
        for p in parts:
            stats.n += p.stats.n
            stats.sums += p.stats.sums
            stats.sumsq += p.stats.sumsq
        return cls(stats, first.reference, first.classes, first.names, first.present)
