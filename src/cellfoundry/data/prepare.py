"""The single preprocessing path shared by training, batch jobs and real-time prediction.

``plan_input`` decides which matrix to read and how the dataset's genes map onto a model's genes;
``transform`` turns any block of cells into the model's feature space, one cell at a time in
effect (normalisation is per cell, alignment is a column selection).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import anndata as ad
import numpy as np
import scipy.sparse as sp

from cellfoundry.data.genes import Alignment, align_genes, gene_keys
from cellfoundry.data.matrix import MatrixKind, iter_row_chunks, source_var
from cellfoundry.data.normalize import log1p_cp10k
from cellfoundry.data.report import Coverage, ValidationReport, coverage, validate
from cellfoundry.errors import CoverageError, DataError

Representation = Literal["lognorm", "counts"]
DEFAULT_MIN_COVERAGE = 0.3
DEFAULT_MIN_GENES = 50
WARN_COVERAGE = 0.7


@dataclass
class InputPlan:
    """How one dataset is read for one model."""

    source: str
    source_kind: MatrixKind
    representation: Representation
    alignment: Alignment
    coverage: Coverage
    report: ValidationReport
    selector: sp.csr_matrix  # n_source_genes x n_target_genes, 0/1

    @property
    def warnings(self) -> list[str]:
        out = []
        if self.coverage.fraction_present < WARN_COVERAGE:
            out.append(
                f"only {self.coverage.fraction_present:.1%} of the model's {self.coverage.n_target} genes are present; "
                "missing genes are treated as zero expression"
            )
        return out


def _selector(alignment: Alignment, n_source: int) -> sp.csr_matrix:
    keep = alignment.source_index >= 0
    rows = alignment.source_index[keep]
    cols = np.nonzero(keep)[0]
    return sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_source, len(alignment.target))
    )


def plan_input(
    adata: ad.AnnData,
    genes: Sequence[str],
    *,
    representation: Representation = "lognorm",
    key_kind: Literal["symbol", "ensembl"] | None = None,
    target_name: str = "model genes",
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    min_genes: int = DEFAULT_MIN_GENES,
    report: ValidationReport | None = None,
) -> InputPlan:
    """Choose the matrix and the gene alignment; refuse clearly when it cannot work."""
    rep = report or validate(adata)
    if rep.errors:
        first = rep.errors[0]
        raise DataError(first.message, first.hint, code=first.code)
    source = rep.chosen["counts"] if representation == "counts" else rep.chosen["lognorm"]
    if source is None:
        raise DataError(
            "this model needs raw counts and none were found"
            if representation == "counts"
            else "no raw counts or log-normalised matrix found",
            "store raw integer counts in layers['counts'] (or .raw / X)",
            code="no_raw_counts" if representation == "counts" else "no_usable_matrix",
        )
    info = rep.matrix(source)
    assert info is not None
    names, var = source_var(adata, source)
    keys = gene_keys(list(names), var)
    al = align_genes(keys, genes, key_kind)
    cov = coverage(adata, rep, genes, target_name, al.key_kind)
    need = min(min_genes, len(al.target))
    if cov.fraction_present < min_coverage or cov.n_present < need:
        raise CoverageError(
            f"only {cov.n_present} of the {cov.n_target} {target_name} ({cov.fraction_present:.1%}) are in the data "
            f"(matched by {al.key_kind}; missing e.g. {', '.join(cov.missing_examples[:5])})",
            f"provide {'Ensembl IDs' if al.key_kind == 'ensembl' else 'gene symbols'} in var_names or var "
            f"(e.g. var['gene_symbols']), or lower min_coverage (now {min_coverage:.0%}) if you accept the risk",
        )
    return InputPlan(
        source=source,
        source_kind=info.kind,
        representation=representation,
        alignment=al,
        coverage=cov,
        report=rep,
        selector=_selector(al, len(names)),
    )


def transform(rows: sp.spmatrix | np.ndarray, plan: InputPlan) -> sp.csr_matrix:
    """Cells (rows of the chosen matrix) -> model features, in the model's gene order."""
    x = sp.csr_matrix(rows, dtype=np.float32)
    if x.data.size and not np.isfinite(x.data).all():
        x.data = np.where(np.isfinite(x.data), x.data, 0).astype(np.float32)
    if plan.representation == "lognorm" and plan.source_kind in ("raw_counts", "noninteger_counts"):
        x = log1p_cp10k(x)
    out = (x @ plan.selector).tocsr()
    out.sort_indices()
    return out


def iter_features(
    adata: ad.AnnData, plan: InputPlan, chunk_size: int = 10_000
) -> Iterator[tuple[int, sp.csr_matrix]]:
    """Stream ``(start, features)`` chunks; works on backed AnnData."""
    for start, rows in iter_row_chunks(adata, plan.source, chunk_size):
        yield start, transform(rows, plan)


def features(adata: ad.AnnData, plan: InputPlan) -> sp.csr_matrix:
    """All cells at once (for training on an in-memory reference)."""
    return sp.vstack([f for _, f in iter_features(adata, plan)], format="csr")
