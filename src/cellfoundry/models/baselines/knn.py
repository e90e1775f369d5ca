"""k-nearest neighbours on PCA of standardised log1p-CP10k expression."""

from __future__ import annotations

from typing import Any, ClassVar

import anndata as ad
import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from cellfoundry.models.baselines.common import StateAnnotator, prepare_reference
from cellfoundry.models.baselines.explain import (
    SEPARATION_KEY,
    knn_contributions,
    separation_coefficients,
)
from cellfoundry.models.baselines.standardise import standardise, standardised_product


def knn_vote(
    ref_emb: np.ndarray, ref_y: np.ndarray, n_classes: int, query: np.ndarray, k: int
) -> np.ndarray:
    """Distance-weighted vote shares of the k nearest reference cells (Euclidean)."""
    k = min(k, len(ref_emb))
    nn = NearestNeighbors(n_neighbors=k).fit(ref_emb)
    dist, idx = nn.kneighbors(query)
    w = 1.0 / np.maximum(dist, 1e-6)
    proba = np.zeros((len(query), n_classes), dtype=np.float64)
    np.add.at(proba, (np.repeat(np.arange(len(query)), k), ref_y[idx].ravel()), w.ravel())
    return (proba / proba.sum(axis=1, keepdims=True)).astype(np.float32)


def _fit(
    x: sp.csr_matrix, y: np.ndarray, n_classes: int, seed: int, n_pcs: int
) -> dict[str, np.ndarray]:
    dense = x.toarray()
    mean = dense.mean(axis=0)
    sd = dense.std(axis=0)
    sd[sd < 1e-8] = 1.0
    z = standardise(dense, mean, sd)
    n_comp = int(min(n_pcs, z.shape[0] - 1, z.shape[1]))
    pca = PCA(n_components=n_comp, random_state=seed, svd_solver="randomized").fit(z)
    comps = pca.components_.T.astype(np.float32)
    return {
        "mean": mean.astype(np.float32),
        "scale": sd.astype(np.float32),
        "components": comps,
        "ref_embedding": (z @ comps).astype(np.float32),
        "ref_labels": y.astype(np.int64),
    }


def _embed(
    state: dict[str, np.ndarray], x: sp.csr_matrix, present: np.ndarray | None = None
) -> np.ndarray:
    """PCA coordinates of the clipped standardised expression; absent genes count as z = 0."""
    out = standardised_product(x, state["mean"], state["scale"], state["components"], present)
    return out.astype(np.float32)


class KNNAnnotator(StateAnnotator):
    """kNN on a PCA fitted to the reference; probabilities are distance-weighted vote shares."""

    family: ClassVar[str] = "knn"

    def logits_or_proba(self, x: sp.csr_matrix, present: np.ndarray | None = None) -> np.ndarray:
        k = int(self.manifest.params.get("k", 15))
        return knn_vote(
            self.state["ref_embedding"],
            self.state["ref_labels"],
            len(self.classes),
            _embed(self.state, x, present),
            k,
        )

    @classmethod
    def explain_state(
        cls, x: sp.csr_matrix, y: np.ndarray, n_classes: int
    ) -> dict[str, np.ndarray]:
        return separation_coefficients(x, y, n_classes)

    def contributions(
        self, x: sp.csr_matrix, called: np.ndarray, present: np.ndarray
    ) -> np.ndarray:
        """Separation coefficient of the called (neighbours') class x standardised value."""
        if SEPARATION_KEY not in self.state:
            return super().contributions(x, called, present)
        return knn_contributions(self.state, x, called, present)

    @classmethod
    def train(
        cls,
        adata: ad.AnnData,
        label_key: str,
        *,
        name: str = "knn",
        n_features: int | None = 2000,
        n_pcs: int = 50,
        k: int = 15,
        seed: int = 0,
        holdout_fraction: float = 0.2,
        refit: bool = True,
        progress: bool = False,
        cv_folds: int = 0,
    ) -> KNNAnnotator:
        """Train on ``obs[label_key]`` of a labelled reference.

        ``cv_folds`` (≥ 2) keeps out-of-fold predictions of every reference cell with the
        artifact, which weigh the model in a consensus (``cv_folds`` more fits); by default the
        held-out cells' predictions are kept.
        """
        ref = prepare_reference(adata, label_key, n_features)
        params: dict[str, Any] = {"n_features": n_features, "n_pcs": n_pcs, "k": k}

        def fit(x: sp.csr_matrix, y: np.ndarray, n: int, s: int) -> dict[str, np.ndarray]:
            return _fit(x, y, n, s, n_pcs)

        def score(st: dict[str, np.ndarray], x: sp.csr_matrix) -> tuple[np.ndarray, bool]:
            return knn_vote(
                st["ref_embedding"], st["ref_labels"], len(ref.labels.classes), _embed(st, x), k
            ), False

        return cls._train(
            ref,
            fit,
            score,
            params,
            name=name,
            seed=seed,
            holdout_fraction=holdout_fraction,
            refit=refit,
            label_key=label_key,
            progress=progress,
            cv_folds=cv_folds,
        )
