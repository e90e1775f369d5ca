"""Small data and models for the tuning tests."""

from __future__ import annotations

import anndata as ad
import numpy as np
import torch
from torch import nn

from cellfoundry.data.genes import gene_table
from tests.conftest import make_counts_adata


def real_gene_adata(
    n_cells: int = 240, n_genes: int = 200, n_types: int = 3, seed: int = 0
) -> ad.AnnData:
    """Synthetic counts on real gene symbols (var['gene_ids'] holds their Ensembl IDs)."""
    adata = make_counts_adata(n_cells, n_genes, n_types, seed)
    table = gene_table()
    syms = sorted(s for s in table.symbol_to_id if s.isalnum() and s.isupper())[:n_genes]
    adata.var_names = syms
    adata.var["gene_ids"] = [table.symbol_to_id[s] for s in syms]
    return adata


class TinyNet(nn.Module):
    """A custom module in the PEFT style: attention-like projections and a feed-forward block."""

    def __init__(self, d_in: int = 12, d: int = 16) -> None:
        super().__init__()
        self.proj = nn.Linear(d_in, d)
        self.query = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Linear(32, d))
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.proj(x))
        h = self.norm(h + torch.tanh(self.query(h)) * self.value(h))
        return h + self.ff(h)


def labelled_blobs(
    n: int = 64, d_in: int = 12, k: int = 3, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = np.random.default_rng(seed)
    y = np.arange(n) % k
    centers = g.normal(0, 3, (k, d_in))
    x = centers[y] + g.normal(0, 1, (n, d_in))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)
