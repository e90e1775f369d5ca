"""What a baseline computes beside its probabilities while the query streams past.

- ``reference_distance`` / ``out_of_reference`` for every cell (when the artifact stores the
  reference geometry; see ``cellfoundry.models.baselines.distance``);
- the overlap of each predicted type's markers with the reference's (``uns["marker_overlap"]``);
- with ``explain=True``, ``prediction_top_genes``: the genes contributing most to each call, and
  ``prediction_top_gene_contributions``: their contributions, aligned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from cellfoundry.models.baselines.distance import ReferenceDistance
from cellfoundry.models.baselines.explain import GroupStats, MarkerCounts, top_genes_and_scores

# contributions(x, called class per cell, genes present) -> (cells, genes)
ContributionFn = Callable[[sp.csr_matrix, np.ndarray, np.ndarray], np.ndarray]

DISTANCE_COLUMN = "reference_distance"
OUT_OF_REFERENCE_COLUMN = "out_of_reference"
TOP_GENES_COLUMN = "prediction_top_genes"
TOP_SCORES_COLUMN = "prediction_top_gene_contributions"  # aligned with TOP_GENES_COLUMN


class DistanceObserver:
    def __init__(self, dist: ReferenceDistance, n_cells: int, present: np.ndarray) -> None:
        self.dist = dist
        self.present = present
        self.values = np.zeros(n_cells, dtype=np.float32)

    def observe(self, start: int, x: sp.csr_matrix, proba: np.ndarray) -> None:
        self.values[start : start + x.shape[0]] = self.dist.scaled(x, self.present)

    def finish(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        info: dict[str, Any] = self.dist.describe()
        if not self.present.all():
            info["note"] = (
                f"{int((~self.present).sum())} of the model's genes are absent from the query; "
                "they are set to the reference mean (standardised 0) in the query's profile"
            )
        return (
            {
                DISTANCE_COLUMN: self.values,
                OUT_OF_REFERENCE_COLUMN: self.values > self.dist.threshold,
            },
            {"reference_distance": info},
        )


class MarkerObserver:
    def __init__(
        self,
        reference_markers: np.ndarray,
        classes: Sequence[str],
        names: Sequence[str],
        present: np.ndarray,
    ) -> None:
        self.counts = MarkerCounts(
            GroupStats(len(names), len(classes)),
            reference_markers,
            list(classes),
            list(names),
            present,
        )

    def observe(self, start: int, x: sp.csr_matrix, proba: np.ndarray) -> None:
        self.counts.stats.add(x, proba.argmax(axis=1))

    def finish(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {}, {"marker_overlap": self.counts.overlap()}

    def parts(self) -> dict[str, Any]:
        """The additive counts behind ``marker_overlap`` (to combine parts of a dataset)."""
        return {"marker_overlap": self.counts}


class TopGenesObserver:
    def __init__(
        self,
        contributions: ContributionFn,
        names: Sequence[str],
        n_cells: int,
        present: np.ndarray,
        n_top: int,
    ) -> None:
        self.contributions = contributions
        self.names = list(names)
        self.present = present
        self.n_top = n_top
        self.values = np.full(n_cells, "", dtype=object)
        self.scores = np.full(n_cells, "", dtype=object)

    def observe(self, start: int, x: sp.csr_matrix, proba: np.ndarray) -> None:
        contrib = self.contributions(x, proba.argmax(axis=1), self.present)
        genes, scores = top_genes_and_scores(contrib, self.names, self.n_top)
        self.values[start : start + x.shape[0]] = genes
        self.scores[start : start + x.shape[0]] = scores

    def finish(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {TOP_GENES_COLUMN: self.values, TOP_SCORES_COLUMN: self.scores}, {}
