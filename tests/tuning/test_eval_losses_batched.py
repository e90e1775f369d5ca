"""Evaluation losses run in mini-batches and still equal the whole-set loss."""

from __future__ import annotations

import math

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.decomposition import PCA

from cellfoundry.tuning.losses import mse_batched, triplet_loss, triplet_loss_batched


@pytest.fixture(scope="module")
def real_embeddings(pbmc3k: ad.AnnData) -> tuple[np.ndarray, np.ndarray]:
    """A 10-d PCA of log1p-CP10k pbmc3k counts for 160 cells of the labelled types."""
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(pbmc3k.n_obs, 160, replace=False))
    x = sp.csr_matrix(pbmc3k.X[idx]).astype(np.float64)
    x = sp.diags(1e4 / np.asarray(x.sum(axis=1)).ravel()) @ x
    emb = PCA(10, random_state=0).fit_transform(np.log1p(x.toarray()))
    labels = pbmc3k.obs["cell_type"].astype(str).to_numpy()[idx]
    y = np.unique(labels, return_inverse=True)[1]
    return emb.astype(np.float32), y


def simple_semi_hard_triplet(emb: np.ndarray, y: np.ndarray, margin: float) -> float:
    """The definition, loop by loop: every (anchor, positive) pair, its semi-hard negative."""
    z = emb.astype(np.float64) / np.linalg.norm(emb, axis=1, keepdims=True)
    n = len(y)
    d = np.sqrt(np.clip(2 - 2 * z @ z.T, 0, None))
    terms = []
    for a in range(n):
        negs = [k for k in range(n) if y[k] != y[a]]
        if not negs:
            continue
        for p in range(n):
            if p == a or y[p] != y[a]:
                continue
            farther = [d[a, k] for k in negs if d[a, k] > d[a, p]]
            d_an = min(farther) if farther else max(d[a, k] for k in negs)
            terms.append(max(0.0, d[a, p] - d_an + margin))
    return sum(terms) / len(terms) if terms else 0.0


@pytest.mark.parametrize("margin", [0.1, 0.5])
def test_batched_triplet_equals_the_full_loss(real_embeddings, margin: float) -> None:
    emb, y = real_embeddings
    expected = simple_semi_hard_triplet(emb, y, margin)
    assert expected > 0
    full = float(triplet_loss(torch.from_numpy(emb), torch.from_numpy(y), margin))
    # a tiny chunk forces many anchor chunks (160 cells: 4 anchors per chunk)
    batched = triplet_loss_batched(emb, y, margin, chunk_elements=4 * len(y))
    assert math.isclose(full, expected, rel_tol=1e-4)
    assert math.isclose(batched, expected, rel_tol=1e-4)


def test_batched_mse_equals_numpy(real_embeddings) -> None:
    emb, _ = real_embeddings
    other = emb[::-1].copy()
    assert math.isclose(
        mse_batched(emb, other, batch_size=7), float(np.mean((emb - other) ** 2)), rel_tol=1e-6
    )
