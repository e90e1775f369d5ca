"""Triplet loss with semi-hard mining on a hand-checkable example; cross-entropy weights."""

from __future__ import annotations

import math

import numpy as np
import torch

from cellfoundry.tuning.losses import (
    class_weights,
    embedding_anchor_loss,
    mine_semi_hard,
    pairwise_distances,
    triplet_loss,
)


def _circle(degrees: list[float]) -> torch.Tensor:
    r = [math.radians(d) for d in degrees]
    # scaled: the loss L2-normalises, so the norm must not matter
    return torch.tensor([[3 * math.cos(a), 3 * math.sin(a)] for a in r], dtype=torch.float64)


def chord(deg: float) -> float:
    return 2 * math.sin(math.radians(deg) / 2)


def test_semi_hard_mining_hand_example() -> None:
    # class 0 at 0° and 30°, class 1 at 40° and 180° on the unit circle
    emb = _circle([0, 30, 40, 180])
    labels = torch.tensor([0, 0, 1, 1])
    dist = pairwise_distances(emb)
    assert math.isclose(float(dist[0, 1]), chord(30), rel_tol=1e-6)
    t = mine_semi_hard(dist, labels, margin=0.1)
    chosen = {
        (int(a), int(p)): int(n) for a, p, n in zip(t.anchor, t.positive, t.negative, strict=True)
    }
    # (0,1): negatives at 40° (d=chord 40 > chord 30) and 180°: the closest farther one is 2
    # (1,0): negative 2 is closer than the positive (hard), so the closest farther is 3
    # (2,3): both negatives are closer than the positive: fall back to the farthest, 0
    # (3,2): both negatives are farther: the closest of them is 1 (150° away)
    assert chosen == {(0, 1): 2, (1, 0): 3, (2, 3): 0, (3, 2): 1}
    assert t.semi_hard.tolist() == [
        False,
        False,
        False,
        True,
    ]  # only (3,2,1) lies inside the margin band
    expected = (
        max(0, chord(30) - chord(40) + 0.1)
        + max(0, chord(30) - chord(150) + 0.1)
        + max(0, chord(140) - chord(40) + 0.1)
        + max(0, chord(140) - chord(150) + 0.1)
    ) / 4
    assert math.isclose(float(triplet_loss(emb, labels, margin=0.1)), expected, rel_tol=1e-6)
    assert math.isclose(
        expected, (chord(140) - chord(40) + 0.1 + chord(140) - chord(150) + 0.1) / 4
    )


def test_triplet_loss_zero_when_classes_are_far_apart_and_gradient_flows() -> None:
    emb = _circle([0, 1, 180, 181]).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1])
    assert float(triplet_loss(emb, labels, margin=0.1)) == 0.0
    mixed = _circle([0, 90, 10, 100]).requires_grad_(True)
    loss = triplet_loss(mixed, labels, margin=0.1)
    assert float(loss) > 0
    loss.backward()
    assert mixed.grad is not None and mixed.grad.abs().sum() > 0


def test_triplet_loss_without_triplets_is_zero_with_gradient_path() -> None:
    emb = torch.randn(3, 4, requires_grad=True)
    loss = triplet_loss(emb, torch.tensor([0, 1, 2]))
    assert float(loss) == 0.0
    loss.backward()  # no error: the zero is connected to the graph


def test_class_weights_balance_counts() -> None:
    w = class_weights(np.array([0, 0, 0, 1]), 3)
    assert np.allclose(w.numpy(), [4 / 9, 4 / 3, 0.0])


def test_embedding_anchor_loss_is_zero_for_identical() -> None:
    a = torch.randn(5, 3)
    assert float(embedding_anchor_loss(a, a.clone())) == 0.0
    assert float(embedding_anchor_loss(a, a + 1)) == 1.0
