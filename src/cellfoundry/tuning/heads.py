"""Classification heads on the cell embedding: linear or a small MLP."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ClassifierHead(nn.Module):
    """Linear layer (``hidden=0``) or ``Linear -> ReLU -> Dropout -> Linear`` on the cell embedding.

    The embedding is first standardised per dimension with the mean / standard deviation of the
    training cells' base embeddings (``fit_standardisation``, stored as buffers), so one learning
    rate suits L2-normalised (SCimilarity, scGPT) and unnormalised (Geneformer) embeddings alike and
    small differences between cells of a random-weight encoder are not drowned by a shared offset.
    """

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 0, dropout: float = 0.1) -> None:
        super().__init__()
        if in_dim < 1 or n_classes < 2:
            raise ValueError(
                f"a head needs in_dim >= 1 and n_classes >= 2 (got {in_dim}, {n_classes})"
            )
        self.config: dict[str, Any] = {
            "in_dim": int(in_dim),
            "n_classes": int(n_classes),
            "hidden": int(hidden),
            "dropout": float(dropout),
        }
        self.mean: torch.Tensor
        self.scale: torch.Tensor
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(in_dim))
        if hidden:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(in_dim, hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, n_classes),
            )
        else:
            self.net = nn.Linear(in_dim, n_classes)

    @torch.no_grad()
    def fit_standardisation(self, emb: torch.Tensor) -> None:
        """Set the per-dimension mean and scale from (training) embeddings."""
        e = emb.detach().to(torch.float32)
        self.mean.copy_(e.mean(dim=0))
        sd = e.std(dim=0, unbiased=False) if len(e) > 1 else torch.ones_like(self.scale)
        self.scale.copy_(torch.where(sd > 1e-8, sd, torch.ones_like(sd)))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.net((emb - self.mean) / self.scale)  # type: ignore[no-any-return]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ClassifierHead:
        """Rebuild an (untrained) head from its ``config``."""
        return cls(
            int(config["in_dim"]),
            int(config["n_classes"]),
            int(config.get("hidden", 0)),
            float(config.get("dropout", 0.1)),
        )
