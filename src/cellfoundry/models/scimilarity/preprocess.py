"""SCimilarity preprocessing (spec §3.3): align to the gene order, then log1p(CP10k).

Raw counts are aligned to the model's gene symbols (genes the data lacks are zero, genes the model
does not know are dropped), then each cell is scaled to 10,000 over the *aligned genes only* and
log1p-transformed, exactly like ``align_dataset`` followed by ``lognorm_counts``. Cells stream in
row chunks, so memory does not grow with the number of cells.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import anndata as ad
import numpy as np
import scipy.sparse as sp

from cellfoundry.data.genes import gene_keys
from cellfoundry.data.matrix import source_var
from cellfoundry.data.normalize import log1p_cp10k
from cellfoundry.data.prepare import InputPlan, iter_features, plan_input
from cellfoundry.data.report import ValidationReport
from cellfoundry.errors import DataError

# The official align_dataset refuses fewer than 5,000 of the 28,231 model genes.
OFFICIAL_MIN_OVERLAP = 5000
OFFICIAL_N_GENES = 28231
DEFAULT_CHUNK = 1024


def min_overlap(n_genes: int) -> int:
    """Genes that must be present: the official 5,000 for v1.1, proportionally fewer for smaller models."""
    return max(
        1, min(OFFICIAL_MIN_OVERLAP, math.ceil(n_genes * OFFICIAL_MIN_OVERLAP / OFFICIAL_N_GENES))
    )


@dataclass
class SCimilarityPlan:
    """The shared input plan plus the model columns that matched only case-insensitively."""

    input: InputPlan
    drop_columns: np.ndarray  # model gene columns zeroed to keep the official exact-case match

    @property
    def n_present(self) -> int:
        return self.input.alignment.n_present - int(self.drop_columns.size)

    @property
    def warnings(self) -> list[str]:
        return self.input.warnings


def plan(
    adata: ad.AnnData, genes: Sequence[str], *, report: ValidationReport | None = None
) -> SCimilarityPlan:
    """Read raw counts and align them to ``genes`` by symbol; refuse clearly on too little overlap.

    Symbols match case-sensitively, as in the official ``align_dataset`` (columns the shared
    aligner matched only through its upper-case fallback are zeroed); a repeated symbol uses its
    first column.
    """
    p = plan_input(
        adata,
        list(genes),
        representation="counts",
        key_kind="symbol",
        target_name="SCimilarity genes",
        min_coverage=0.0,
        min_genes=min_overlap(len(genes)),
        report=report,
    )
    names, var = source_var(adata, p.source)
    symbols = gene_keys(list(names), var).symbols
    target = p.alignment.target
    loose = [
        j for j, i in enumerate(p.alignment.source_index) if i >= 0 and symbols[i] != target[j]
    ]
    return SCimilarityPlan(p, np.asarray(loose, dtype=np.int64))


def lognorm_aligned(counts: sp.spmatrix | np.ndarray) -> sp.csr_matrix:
    """Aligned raw counts -> log1p(counts / total over these genes * 1e4), float32 CSR."""
    x = sp.csr_matrix(counts, dtype=np.float32)
    if x.nnz and float(x.data.min()) < 0:
        raise DataError(
            "the raw counts contain negative values",
            "SCimilarity needs non-negative raw counts (layers['counts']); do not pass scaled data",
            code="negative_counts",
        )
    return log1p_cp10k(x)


def iter_lognorm(
    adata: ad.AnnData, input_plan: SCimilarityPlan, chunk_size: int = DEFAULT_CHUNK
) -> Iterator[tuple[int, sp.csr_matrix]]:
    """Stream ``(start, cells x model genes)`` log1p-CP10k chunks in the model's gene order."""
    drop = input_plan.drop_columns
    for start, aligned in iter_features(adata, input_plan.input, chunk_size):
        if drop.size:
            aligned = sp.csr_matrix(aligned, copy=True)
            aligned.data[np.isin(aligned.indices, drop)] = 0
            aligned.eliminate_zeros()
        yield start, lognorm_aligned(aligned)


def preprocess(
    adata: ad.AnnData, genes: Sequence[str], *, report: ValidationReport | None = None
) -> sp.csr_matrix:
    """All cells at once (cells x len(genes)), for small data and tests."""
    p = plan(adata, genes, report=report)
    parts = [x for _, x in iter_lognorm(adata, p)]
    return (
        sp.vstack(parts, format="csr")
        if parts
        else sp.csr_matrix((0, len(genes)), dtype=np.float32)
    )
