"""scGPT cell tokenisation for the zero-shot embedding path (spec §2.7 A).

Per cell: the expressed (non-zero) vocabulary genes in the data's column order, their raw counts
binned per cell, ``<cls>`` prepended with its configured value, and a random subset kept when
the cell is longer than ``max_length`` (``<cls>`` always kept, order shuffled like the official
collator). Randomness comes from a per-cell generator seeded by ``(seed, the cell's content)``,
so a cell gets the same tokens wherever it sits in a dataset or batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from cellfoundry.models.scgpt.binning import bin_values


def cell_seed(seed: int, gene_ids: np.ndarray, values: np.ndarray) -> int:
    """A 32-bit seed from the user's seed and one cell's (gene id, value) content."""
    h = hashlib.blake2b(digest_size=4)
    h.update(np.int64(seed).tobytes())
    h.update(np.ascontiguousarray(gene_ids, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(values, dtype=np.float32).tobytes())
    return int.from_bytes(h.digest(), "little")


@dataclass
class ScGPTTokenizer:
    """Turns rows of raw counts (columns = ``column_ids`` vocab ids) into per-cell model inputs."""

    column_ids: np.ndarray  # vocab id of each input column
    cls_id: int
    pad_id: int
    cls_value: float = -2.0
    pad_value: float = -2.0
    n_bins: int = 51
    max_length: int = 1200

    def tokenize_cell(
        self,
        genes: np.ndarray,
        values: np.ndarray,
        seed: int = 0,
        rng: np.random.RandomState | None = None,
    ) -> dict[str, np.ndarray]:
        """One cell from its expressed vocab ids and raw values (data column order).

        ``rng``: a generator to reseed for this cell (reseeding gives the numbers of a new
        ``RandomState(cell seed)`` at a fraction of its construction cost).
        """
        values = np.asarray(values, dtype=np.float32)
        genes = np.asarray(genes, dtype=np.int64)
        keep = values != 0
        if not keep.all():
            genes, values = genes[keep], values[keep]
        cell = cell_seed(seed, genes, values)
        if rng is None:
            rng = np.random.RandomState(cell)
        else:
            rng.seed(cell)
        bins = bin_values(values, self.n_bins, rng).astype(np.float32)
        ids = np.concatenate([np.array([self.cls_id], dtype=np.int64), genes])
        vals = np.concatenate([np.array([self.cls_value], dtype=np.float32), bins])
        if len(ids) > self.max_length:
            pick = rng.permutation(len(ids) - 1)[: self.max_length - 1] + 1
            pick = np.concatenate([[0], pick])
            ids, vals = ids[pick], vals[pick]
        return {"gene_ids": ids, "values": vals}

    def tokenize_rows(
        self, rows: sp.spmatrix | np.ndarray, seed: int = 0
    ) -> list[dict[str, np.ndarray]]:
        """Each row (one cell, columns in data order) -> ``{"gene_ids", "values"}``."""
        x = sp.csr_matrix(rows)
        x.sort_indices()
        rng = np.random.RandomState(0)  # reseeded for each cell
        ids = self.column_ids[x.indices]
        out = []
        for i in range(x.shape[0]):
            lo, hi = x.indptr[i], x.indptr[i + 1]
            out.append(self.tokenize_cell(ids[lo:hi], x.data[lo:hi], seed, rng))
        return out

    def collate(self, cells: list[dict[str, np.ndarray]]) -> dict[str, Any]:
        """Right-pad to the longest cell with ``<pad>``/pad_value; mask True marks padding."""
        if not cells:
            raise ValueError("collate needs at least one cell")
        n = max(len(c["gene_ids"]) for c in cells)
        ids = np.full((len(cells), n), self.pad_id, dtype=np.int64)
        vals = np.full((len(cells), n), self.pad_value, dtype=np.float32)
        for i, c in enumerate(cells):
            m = len(c["gene_ids"])
            ids[i, :m] = c["gene_ids"]
            vals[i, :m] = c["values"]
        gene_ids = torch.from_numpy(ids)
        return {
            "gene_ids": gene_ids,
            "values": torch.from_numpy(vals),
            "padding_mask": gene_ids.eq(self.pad_id),
        }
