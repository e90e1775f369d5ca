"""Training losses: cross-entropy, triplet loss with online semi-hard mining, reconstruction.

Reconstruction, per family (documented choice):

* SCimilarity architecture: the decoder reconstructs the log-normalised input from the cell
  embedding (mean squared error), exactly SCimilarity's own training objective.
* Transformers (Geneformer, scGPT) and any encoder without a decoder: mean squared error between
  the adapted cell embedding and the *frozen base model's* embedding of the same cell. It is the
  cheapest anchor that keeps the adapted model close to what it knew (one forward pass of the base
  model per cell, cached before training), works identically for every family, and unlike a
  masked-gene objective it needs no family-specific pretraining head — which random-weight and
  classification checkpoints do not carry. It is zero for an untouched model, so a large value
  also shows how far the adaptation moved the embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cellfoundry.stats.metrics import BASE_EMBEDDING, INPUT_RECONSTRUCTION

__all__ = [
    "BASE_EMBEDDING",
    "INPUT_RECONSTRUCTION",
    "class_weights",
    "cross_entropy",
    "embedding_anchor_loss",
    "input_reconstruction_loss",
    "mine_semi_hard",
    "mse_batched",
    "pairwise_distances",
    "triplet_loss",
    "triplet_loss_batched",
]

DEFAULT_MARGIN = 0.1


def class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """Balanced class weights ``n / (n_classes * count)`` (classes absent from ``y`` get weight 0)."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def cross_entropy(
    logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of class logits, optionally class-weighted."""
    return F.cross_entropy(logits, y, weight=weights)


def pairwise_distances(emb: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of L2-normalised ``emb`` (``sqrt(2 - 2 cos)``)."""
    z = F.normalize(emb, p=2, dim=1)
    sq = (2.0 - 2.0 * (z @ z.T)).clamp_min(0.0)
    # keep the gradient finite at zero distance
    return torch.sqrt(sq + 1e-12) * (sq > 0)


@dataclass
class Triplets:
    """Mined triplets as index tensors (anchor, positive, negative)."""

    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor
    semi_hard: (
        torch.Tensor
    )  # bool: the negative lies in the margin band d_ap < d_an < d_ap + margin


def mine_semi_hard(
    dist: torch.Tensor, labels: torch.Tensor, margin: float = DEFAULT_MARGIN
) -> Triplets:
    """For every anchor-positive pair choose the semi-hard negative.

    The negative is the closest one *farther* than the positive (``d_an > d_ap``); when no negative
    is farther, the farthest negative (the easiest) is used, as in FaceNet's online mining.
    """
    with torch.no_grad():
        n = len(labels)
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(n, dtype=torch.bool, device=dist.device)
        a_idx, p_idx = torch.nonzero(same & ~eye, as_tuple=True)
        if len(a_idx) == 0:
            empty = torch.zeros(0, dtype=torch.long)
            return Triplets(empty, empty, empty, torch.zeros(0, dtype=torch.bool))
        d_ap = dist[a_idx, p_idx][:, None]
        d_an = dist[a_idx]  # (pairs, n)
        neg = ~same[a_idx]
        inf = torch.finfo(dist.dtype).max
        farther = neg & (d_an > d_ap)
        closest_farther = torch.where(farther, d_an, torch.full_like(d_an, inf)).argmin(dim=1)
        farthest = torch.where(neg, d_an, torch.full_like(d_an, -inf)).argmax(dim=1)
        has_farther = farther.any(dim=1)
        n_idx = torch.where(has_farther, closest_farther, farthest)
        has_neg = neg.any(dim=1)
        a_idx, p_idx, n_idx = a_idx[has_neg], p_idx[has_neg], n_idx[has_neg]
        d_ap1 = dist[a_idx, p_idx]
        d_an1 = dist[a_idx, n_idx]
        semi = (d_an1 > d_ap1) & (d_an1 < d_ap1 + margin)
    return Triplets(a_idx, p_idx, n_idx, semi)


def triplet_loss(
    emb: torch.Tensor, labels: torch.Tensor, margin: float = DEFAULT_MARGIN
) -> torch.Tensor:
    """Mean ``max(0, d_ap - d_an + margin)`` over semi-hard mined triplets on L2-normalised embeddings.

    Zero (with a gradient path) when the batch holds no anchor-positive-negative triplet.
    """
    dist = pairwise_distances(emb)
    t = mine_semi_hard(dist, labels, margin)
    if len(t.anchor) == 0:
        return emb.sum() * 0.0
    return F.relu(dist[t.anchor, t.positive] - dist[t.anchor, t.negative] + margin).mean()


def embedding_anchor_loss(emb: torch.Tensor, base_emb: torch.Tensor) -> torch.Tensor:
    """Reconstruction of the frozen base embedding: mean squared error per dimension."""
    return F.mse_loss(emb, base_emb)


def input_reconstruction_loss(reconstruction: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Decoder reconstruction of the log-normalised input: mean squared error per gene."""
    return F.mse_loss(reconstruction, x)


@torch.no_grad()
def triplet_loss_batched(
    emb: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    margin: float = DEFAULT_MARGIN,
    chunk_elements: int = 4_000_000,
) -> float:
    """:func:`triplet_loss` over a whole set without its ``pairs x n`` memory (evaluation only).

    The same semi-hard mining, anchor chunk by anchor chunk: for each anchor the negatives'
    distances are sorted once, and each positive's negative is found by binary search (the
    closest negative strictly farther than the positive, else the farthest). Memory is
    ``O(chunk x n)`` with ``chunk x n <= chunk_elements``; the value equals the full loss.
    """
    e = torch.as_tensor(np.asarray(emb) if not isinstance(emb, torch.Tensor) else emb).float()
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    n = len(y)
    if n < 3:
        return 0.0
    z = F.normalize(e, p=2, dim=1)
    step = max(1, chunk_elements // n)
    total, count = 0.0, 0
    cols = torch.arange(n)
    for s in range(0, n, step):
        rows = torch.arange(s, min(s + step, n))
        sq = (2.0 - 2.0 * (z[rows] @ z.T)).clamp_min(0.0)
        d = torch.sqrt(sq + 1e-12) * (sq > 0)
        same = y[rows][:, None] == y[None, :]
        pos = same & (rows[:, None] != cols[None, :])
        neg_sorted, _ = torch.sort(torch.where(same, torch.full_like(d, float("inf")), d), dim=1)
        n_neg = (~same).sum(dim=1)
        ok = n_neg > 0
        if not ok.any():
            continue
        d, pos, neg_sorted, n_neg = d[ok], pos[ok], neg_sorted[ok], n_neg[ok]
        first_farther = torch.searchsorted(neg_sorted.contiguous(), d.contiguous(), right=True)
        farthest = (n_neg - 1)[:, None].expand_as(first_farther)
        pick = torch.where(first_farther < n_neg[:, None], first_farther, farthest)
        d_an = torch.gather(neg_sorted, 1, pick)
        terms = F.relu(d - d_an + margin)[pos]
        total += float(terms.double().sum())
        count += int(pos.sum())
    return total / count if count else 0.0


@torch.no_grad()
def mse_batched(
    a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, batch_size: int = 4096
) -> float:
    """Mean squared error per element of two equally shaped arrays, in row batches."""
    ta, tb = torch.as_tensor(a), torch.as_tensor(b)
    if len(ta) == 0:
        return float("nan")
    total = 0.0
    for s in range(0, len(ta), batch_size):
        total += float(
            ((ta[s : s + batch_size].double() - tb[s : s + batch_size].double()) ** 2).sum()
        )
    return total / ta.numel()
