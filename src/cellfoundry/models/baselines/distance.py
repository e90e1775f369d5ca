"""How far a cell lies from the reference a model was trained on (out-of-reference detection).

The space is the one the baselines classify in: log1p-CP10k of the model's genes, standardised
with the reference mean and standard deviation and clipped at ±``CLIP``. The Euclidean distance
between a query cell ``q`` and a reference cell ``r`` there is split into the part along the
reference's top principal components (kept exactly) and the part orthogonal to them, whose
square is approximated by ``|res(q)|² + |res(r)|²`` (residuals of unrelated cells are nearly
orthogonal in thousands of dimensions). So the artifact keeps only the PCA loadings, a subsample
of reference cells as PCA coordinates and their residual norms — not the expression matrix —
and a program the principal components never saw (genes switched on together) still counts.

``raw distance`` = mean distance to the ``k`` nearest stored reference cells. It is divided by
the median raw distance of *held-out* reference cells (cells not stored and not used to fit the
PCA), so ~1 is typical of the reference, and a cell is *out of reference* above the
``quantile`` (99th percentile by default) of the held-out scaled distances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from cellfoundry.models.baselines.standardise import standardise_cells

N_PCS = 50
K = 10
MAX_REFERENCE_CELLS = 2000
QUANTILE = 0.99
STATE_PREFIX = "reference_distance."
_KEYS = ("mean", "scale", "components", "embedding", "residual", "calibration")


@dataclass
class ReferenceDistance:
    """The stored reference geometry and its calibration on held-out reference cells."""

    mean: np.ndarray  # (n_genes,)
    scale: np.ndarray  # (n_genes,)
    components: np.ndarray  # (n_genes, n_pcs), orthonormal columns
    embedding: np.ndarray  # (n_ref, n_pcs): stored reference cells
    residual: np.ndarray  # (n_ref,): their norm orthogonal to the components
    typical: float  # median raw distance of held-out reference cells
    threshold: float  # out of reference above this scaled distance
    k: int = K
    quantile: float = QUANTILE
    n_heldout: int = 0

    def _project(
        self, x: sp.csr_matrix | np.ndarray, present: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        z = standardise_cells(x, self.mean, self.scale, present)
        emb = z @ self.components
        res2 = np.maximum(np.einsum("ij,ij->i", z, z) - np.einsum("ij,ij->i", emb, emb), 0.0)
        return emb, res2

    def raw(self, x: sp.csr_matrix | np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
        """Mean distance of each cell to its ``k`` nearest stored reference cells (unscaled).

        ``present`` (bool per model gene) marks genes the query has; the others are unobserved
        and set to the reference mean (standardised 0).
        """
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        emb, res2 = self._project(x, present)
        k = min(self.k, len(self.embedding))
        # |[e_q, 0] - [e_r, res_r]|² = |e_q - e_r|² + res_r²; then + res_q² (same for every r)
        ref = np.c_[self.embedding, self.residual]
        nn = NearestNeighbors(n_neighbors=k).fit(ref)
        d, _ = nn.kneighbors(np.c_[emb, np.zeros(len(emb), dtype=emb.dtype)])
        return np.sqrt(d.astype(np.float64) ** 2 + res2[:, None]).mean(axis=1).astype(np.float32)

    def scaled(
        self, x: sp.csr_matrix | np.ndarray, present: np.ndarray | None = None
    ) -> np.ndarray:
        """``raw / typical``: ~1 for cells like the held-out reference cells, higher = farther."""
        return (self.raw(x, present) / self.typical).astype(np.float32)

    def to_state(self) -> dict[str, np.ndarray]:
        cal = np.array(
            [self.typical, self.threshold, self.k, self.quantile, self.n_heldout], dtype=np.float64
        )
        arrays = {
            "mean": self.mean,
            "scale": self.scale,
            "components": self.components,
            "embedding": self.embedding,
            "residual": self.residual,
            "calibration": cal,
        }
        return {STATE_PREFIX + k: v for k, v in arrays.items()}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> ReferenceDistance | None:
        """The stored distance, or None for an artifact written before it existed."""
        if not all(STATE_PREFIX + k in state for k in _KEYS):
            return None
        a = {k: state[STATE_PREFIX + k] for k in _KEYS}
        typical, threshold, k, quantile, n_heldout = (float(v) for v in a["calibration"])
        return cls(
            mean=a["mean"],
            scale=a["scale"],
            components=a["components"],
            embedding=a["embedding"],
            residual=a["residual"],
            typical=typical,
            threshold=threshold,
            k=int(k),
            quantile=quantile,
            n_heldout=int(n_heldout),
        )

    def describe(self) -> dict[str, float | int]:
        return {
            "k": self.k,
            "n_pcs": int(self.components.shape[1]),
            "n_reference_cells": len(self.embedding),
            "n_heldout_cells": self.n_heldout,
            "typical_raw_distance": self.typical,
            "threshold": self.threshold,
            "threshold_quantile": self.quantile,
        }


def fit_reference_distance(
    x_train: sp.csr_matrix,
    x_heldout: sp.csr_matrix,
    *,
    seed: int = 0,
    n_pcs: int = N_PCS,
    k: int = K,
    max_reference_cells: int = MAX_REFERENCE_CELLS,
    quantile: float = QUANTILE,
) -> ReferenceDistance:
    """Fit on training cells (standardisation, PCA, stored subsample); calibrate on held-out cells."""
    rng = np.random.default_rng(seed)
    mean = np.asarray(x_train.mean(axis=0), dtype=np.float64).ravel()
    sq = x_train.copy()
    sq.data = sq.data.astype(np.float64) ** 2
    sd = np.sqrt(np.maximum(np.asarray(sq.mean(axis=0)).ravel() - mean**2, 0.0))
    sd[sd < 1e-8] = 1.0
    mean32, sd32 = mean.astype(np.float32), sd.astype(np.float32)
    keep = np.sort(rng.permutation(x_train.shape[0])[:max_reference_cells])
    z = standardise_cells(x_train[keep], mean32, sd32)
    n_comp = int(max(1, min(n_pcs, z.shape[0] - 1, z.shape[1])))
    comps = (
        PCA(n_components=n_comp, random_state=seed, svd_solver="randomized")
        .fit(z)
        .components_.T.astype(np.float32)
    )
    emb = z @ comps
    res = np.sqrt(np.maximum(np.einsum("ij,ij->i", z, z) - np.einsum("ij,ij->i", emb, emb), 0.0))
    dist = ReferenceDistance(
        mean=mean32,
        scale=sd32,
        components=comps,
        embedding=emb.astype(np.float32),
        residual=res.astype(np.float32),
        typical=1.0,
        threshold=np.inf,
        k=k,
        quantile=quantile,
        n_heldout=int(x_heldout.shape[0]),
    )
    raw = dist.raw(x_heldout)
    dist.typical = float(max(np.median(raw), 1e-6))
    dist.threshold = float(np.quantile(raw / dist.typical, quantile))
    return dist
