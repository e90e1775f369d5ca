"""Layouts fitted on a sample and applied to every cell in chunks (cellfoundry.stats.layout)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cellfoundry.stats.layout import fit_layout, layout_cells, row_chunks


def _blobs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` cells of 3 well-separated groups in 30 dimensions, and their group."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (3, 30))
    group = rng.integers(0, 3, n)
    return centres[group] + rng.normal(0, 0.5, (n, 30)), group


def _lay(x: np.ndarray, fit_rows: np.ndarray, method: str, chunk: int, k: int) -> np.ndarray:
    n = x.shape[0]
    chunks = ((a, x[a:b]) for a, b in row_chunks(n, chunk))
    return layout_cells(n, fit_rows, lambda rows: x[rows], chunks, method, n_components=k)  # type: ignore[arg-type]


def test_pca_layout_of_every_cell_is_the_projection_on_the_fitted_components() -> None:
    x, _ = _blobs(1000)
    fit_rows = np.arange(0, 1000, 7)
    xy = _lay(x, fit_rows, "pca", 128, 5)
    # independent reference: PCA of the sample by SVD, every cell projected
    sample = x[fit_rows]
    mean = sample.mean(axis=0)
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    ref = (x - mean) @ vt[:2].T
    # components are defined up to sign
    signs = np.sign((xy[fit_rows] * ref[fit_rows]).sum(axis=0))
    assert np.allclose(xy, ref * signs, atol=1e-3)


def test_sparse_features_use_the_same_components_in_every_chunk() -> None:
    x, _ = _blobs(600)
    x = sp.csr_matrix(np.abs(x))
    fitted = fit_layout(x[:200], "pca", n_components=4)
    whole = fitted.transform(x)
    parts = np.vstack([fitted.transform(x[a:b]) for a, b in row_chunks(600, 50)])
    assert np.allclose(whole, parts, atol=1e-4)
    assert np.allclose(whole, (x @ fitted.components.T)[:, :2], atol=1e-3)


@pytest.mark.slow
def test_umap_places_further_cells_with_their_group_and_keeps_the_fitted_positions() -> None:
    x, group = _blobs(900)
    fit_rows = np.sort(np.random.default_rng(1).choice(900, 200, replace=False))
    fitted = fit_layout(x[fit_rows], "umap", n_components=10)
    xy = _lay(x, fit_rows, "umap", 100, 10)
    assert xy.shape == (900, 2) and np.isfinite(xy).all()
    # the fitted cells keep the positions of the UMAP fitted on them (same seed: same fit)
    assert np.allclose(xy[fit_rows], fitted.fit_xy, atol=1e-5)
    # every placed cell is nearer the centre of its own group's fitted cells than any other's
    centres = np.array([fitted.fit_xy[group[fit_rows] == g].mean(axis=0) for g in range(3)])
    placed = np.setdiff1d(np.arange(900), fit_rows)
    dist = np.linalg.norm(xy[placed, None, :] - centres[None], axis=2)
    assert (dist.argmin(axis=1) == group[placed]).all()


def test_chunks_must_cover_every_cell() -> None:
    x, _ = _blobs(100)
    with pytest.raises(ValueError, match="covered 50 of 100"):
        layout_cells(100, np.arange(10), lambda r: x[r], [(0, x[:50])], "pca", n_components=3)
