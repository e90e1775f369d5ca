"""2-D layouts of any number of cells in bounded memory: fitted on a sample, applied to the rest.

:func:`fit_layout` fits a projection (TruncatedSVD of sparse features, PCA of dense ones) and, for
``"umap"``, a UMAP on a sample of the cells. :meth:`FittedLayout.transform` then places any chunk
of further cells: projected onto the same components, and for UMAP put at the distance-weighted
mean of the 2-D positions of their ``k`` nearest fitted cells in the projected space (the
initialisation ``umap.UMAP.transform`` starts from, without its optimisation epochs, which would
cost more than the fit itself at a million cells). Memory is one chunk plus the fitted sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

LayoutMethod = Literal["umap", "pca"]
#: nearest fitted cells a further cell is placed between
NEIGHBOURS = 10
#: cells projected and placed at once (the search holds ``chunk x NEIGHBOURS`` distances)
TRANSFORM_CHUNK = 20_000


@dataclass
class FittedLayout:
    """A projection and, for UMAP, the fitted cells' projected and 2-D positions."""

    method: LayoutMethod
    components: np.ndarray  # (k, genes)
    mean: np.ndarray | None  # (genes,) centred PCA of dense features; None: TruncatedSVD
    fit_xy: np.ndarray  # (n_fit, 2) positions of the fitted cells
    index: Any = None  # nearest-neighbour search over the fitted cells' projections (UMAP)

    def project(self, x: Any) -> np.ndarray:
        """``x`` (cells x genes, sparse or dense) on the fitted components."""
        import scipy.sparse as sp

        if sp.issparse(x):
            pcs = np.asarray(x @ self.components.T)
        else:
            pcs = np.asarray(x, dtype=np.float64) @ self.components.T
        if self.mean is not None:
            pcs = pcs - self.mean @ self.components.T
        return pcs.astype(np.float32, copy=False)

    def transform(self, x: Any) -> np.ndarray:
        """2-D positions of the cells of ``x`` (float32, cells x 2)."""
        pcs = self.project(x)
        if self.method == "pca" or self.index is None:
            return np.ascontiguousarray(pcs[:, :2], dtype=np.float32)
        out = np.empty((pcs.shape[0], 2), dtype=np.float32)
        for a in range(0, pcs.shape[0], TRANSFORM_CHUNK):
            out[a : a + TRANSFORM_CHUNK] = self._place(pcs[a : a + TRANSFORM_CHUNK])
        return out

    def _place(self, pcs: np.ndarray) -> np.ndarray:
        dist, nbr = self.index.kneighbors(pcs)
        # closer fitted cells weigh more; an exact duplicate of a fitted cell lands on it
        scale = np.maximum(dist[:, -1:], 1e-12)
        w = np.exp(-dist / scale)
        w /= w.sum(axis=1, keepdims=True)
        return np.einsum("nk,nkd->nd", w, self.fit_xy[nbr]).astype(np.float32)


def fit_layout(x: Any, method: LayoutMethod, n_components: int = 50, seed: int = 0) -> FittedLayout:
    """Fit the projection (and for ``"umap"`` the UMAP) on ``x``, the sampled cells' features."""
    import scipy.sparse as sp
    from sklearn.decomposition import PCA, TruncatedSVD

    n, g = x.shape
    k = max(2, min(n_components, g - 1, n - 1))
    mean: np.ndarray | None = None
    if sp.issparse(x):
        svd = TruncatedSVD(n_components=k, random_state=seed).fit(x)
        components = svd.components_.astype(np.float32)
    else:
        pca = PCA(n_components=k, random_state=seed).fit(np.asarray(x))
        components, mean = pca.components_.astype(np.float32), pca.mean_.astype(np.float32)
    fitted = FittedLayout(method, components, mean, np.empty((0, 2), np.float32))
    pcs = fitted.project(x)
    if method != "umap" or n <= 15:  # too few cells for a UMAP: the first two components
        fitted.fit_xy = np.ascontiguousarray(pcs[:, :2])
        return fitted
    import umap
    from sklearn.neighbors import NearestNeighbors

    xy = umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, n - 1)).fit_transform(pcs)
    fitted.fit_xy = np.asarray(xy, dtype=np.float32)
    fitted.index = NearestNeighbors(n_neighbors=min(NEIGHBOURS, n)).fit(pcs)
    return fitted


def layout_cells(
    n_cells: int,
    fit_rows: np.ndarray,
    features_of: Callable[[np.ndarray], Any],
    chunks: Iterable[tuple[int, Any]],
    method: LayoutMethod,
    n_components: int = 50,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """2-D positions of all ``n_cells`` cells (float32, cells x 2) in bounded memory.

    ``features_of(rows)`` gives the features of the (sorted) sample ``fit_rows`` the layout is
    fitted on; ``chunks`` yields ``(start, features)`` of consecutive rows covering every cell.
    The fitted cells keep their fitted positions; the others are placed by
    :meth:`FittedLayout.transform`.
    """
    fitted = fit_layout(features_of(fit_rows), method, n_components, seed)
    xy = np.empty((n_cells, 2), dtype=np.float32)
    done = np.zeros(n_cells, dtype=bool)
    for start, x in chunks:
        stop = start + x.shape[0]
        xy[start:stop] = fitted.transform(x)
        done[start:stop] = True
        if progress is not None:
            progress(stop)
    if not done.all():
        missing = int((~done).sum())
        raise ValueError(f"the chunks covered {n_cells - missing} of {n_cells} cells")
    xy[fit_rows] = fitted.fit_xy
    return xy


def row_chunks(n_cells: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive row ranges of at most ``size`` rows."""
    for a in range(0, n_cells, max(1, size)):
        yield a, min(a + size, n_cells)
