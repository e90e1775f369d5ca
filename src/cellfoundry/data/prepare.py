"""The single preprocessing path shared by training, batch jobs and real-time prediction.

``plan_input`` decides which matrix to read and how the dataset's genes map onto a model's genes;
``transform`` turns any block of cells into the model's feature space, one cell at a time in
effect (normalisation is per cell, alignment is a column selection).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Literal

import anndata as ad
import numpy as np
import scipy.sparse as sp

from cellfoundry.data.genes import Alignment, align_genes, gene_keys
from cellfoundry.data.matrix import MatrixKind, iter_checked_chunks, source_var
from cellfoundry.data.normalize import (
    LogScale,
    log1p_cp10k_given_totals,
    log_back_totals,
    row_totals,
    size_factor,
    to_log1p_cp10k,
)
from cellfoundry.data.report import (
    Coverage,
    ValidationReport,
    coverage,
    dataset_gene_keys,
    validate,
)
from cellfoundry.errors import CoverageError, DataError

Representation = Literal["lognorm", "counts"]
DEFAULT_MIN_COVERAGE = 0.3
DEFAULT_MIN_GENES = 50
_FIRST = np.zeros(1, dtype=np.intp)  # reduceat's one segment: a cell's values from the first
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
    column_map: np.ndarray  # per source gene: target column, -1 unused, -2 shared
    log_scale: LogScale | None = None  # log-normalised input of another scale: converted
    # counts: source columns whose sum is each cell's total (None: all its genes); a refit on the
    # genes shared with a reference normalises the query over those genes, as the reference was
    totals_columns: np.ndarray | None = None

    @property
    def converts_log_scale(self) -> bool:
        s = self.log_scale
        return (
            self.representation == "lognorm"
            and self.source_kind == "log_normalized"
            and s is not None
            and s.determined
            and not s.is_model_convention
        )

    @property
    def present(self) -> np.ndarray:
        """Per model gene: whether the data has it (absent genes are unobserved, not zero)."""
        return np.asarray(self.alignment.source_index) >= 0

    @property
    def unobserved_mask(self) -> np.ndarray | None:
        """``present`` for a model's ``logits_or_proba``, or ``None`` when every gene is present."""
        present = self.present
        return None if present.all() else present

    @property
    def warnings(self) -> list[str]:
        # the report's findings about the cells themselves, repeated where predictions are read
        out = [m.message for m in self.report.messages if m.code == "duplicate_cells"]
        if self.coverage.fraction_present < WARN_COVERAGE:
            out.append(
                f"only {self.coverage.fraction_present:.1%} of the model's {self.coverage.n_target} genes are present; "
                "predictions rest on fewer genes than the model was trained with"
            )
        return out

    @property
    def gene_mapping(self) -> str:
        """How the data's genes were matched to the model's (said plainly)."""
        rep = self.report
        kind = self.alignment.key_kind
        data_kind = "Ensembl IDs" if rep.gene_id_kind.startswith("ensembl") else "symbols"
        if kind == "symbol":
            src = rep.symbol_source
        else:
            src = rep.ensembl_source
        same = (kind == "ensembl") == rep.gene_id_kind.startswith("ensembl")
        how = (
            "directly"
            if same
            else (
                "through the shipped GENCODE table" if src == "mapping table" else f"through {src}"
            )
        )
        mapped = f"{rep.orthology.describe()}; then " if rep.orthology else ""
        return mapped + (
            f"model genes are {'Ensembl IDs' if kind == 'ensembl' else 'symbols'}; the data has "
            f"{data_kind} and was matched {how}: {self.coverage.n_present:,} of "
            f"{self.coverage.n_target:,} model genes found"
        )


def _column_map(alignment: Alignment, n_source: int) -> np.ndarray:
    """For every source column, its target column (-1 = not used); -2 marks a shared source column."""
    col_map = np.full(n_source, -1, dtype=np.int64)
    for j, i in enumerate(alignment.source_index):
        if i >= 0:
            col_map[i] = j if col_map[i] == -1 else -2
    return col_map


def _selector(alignment: Alignment, n_source: int) -> sp.csr_matrix:
    keep = alignment.source_index >= 0
    rows = alignment.source_index[keep]
    cols = np.nonzero(keep)[0]
    return sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)),
        shape=(n_source, len(alignment.target)),
    )


def select_columns(x: sp.csr_matrix, plan: InputPlan) -> sp.csr_matrix:
    """Cells x source genes -> cells x model genes (absent genes are zero columns). New matrix."""
    if (plan.column_map == -2).any():  # a source gene serves two model genes: general path
        return (x @ plan.selector).tocsr()
    # a byte mask gathered per stored value, the int64 map only for the kept ones (less traffic)
    kept = np.flatnonzero((plan.column_map >= 0)[x.indices])
    indptr = np.searchsorted(kept, x.indptr)  # kept entries before each row start
    # indices stay in source order within a row (unsorted in target order; valid CSR)
    return sp.csr_matrix(
        (x.data[kept], plan.column_map[x.indices[kept]], indptr),
        shape=(x.shape[0], len(plan.alignment.target)),
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
    scale = info.log_scale
    if representation == "lognorm" and scale is not None and not scale.determined:
        raise DataError(
            f"{source} looks log-normalised but its scale cannot be determined: {scale.evidence}",
            "provide raw counts (layers['counts'] or .raw), or natural-log log1p values of counts "
            "per 10,000 (scanpy: sc.pp.normalize_total(adata, target_sum=1e4); sc.pp.log1p(adata))",
            code="unknown_normalisation",
        )
    names, _ = source_var(adata, source)
    keys = dataset_gene_keys(adata, rep, source)
    al = align_genes(keys, genes, key_kind)
    cov = coverage(adata, rep, genes, target_name, al.key_kind)
    # an absolute floor too (never predict from a handful of genes), relaxed for tiny gene lists
    need = min(min_genes, math.ceil(0.9 * len(al.target)))
    if cov.fraction_present < min_coverage or cov.n_present < need:
        raise CoverageError(
            (
                f"after mapping to human orthologs ({rep.orthology.describe()}), "
                if rep.orthology
                else ""
            )
            + f"only {cov.n_present} of the {cov.n_target} {target_name} ({cov.fraction_present:.1%}) are in the data "
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
        column_map=_column_map(al, len(names)),
        log_scale=scale,
    )


def normalise_over(
    plan: InputPlan, adata: ad.AnnData, genes: Sequence[str], key_kind: str
) -> InputPlan:
    """``plan`` with each cell's count total taken over ``genes`` only (those the data has).

    Log-normalised input is used as given, so its plan is returned unchanged.
    """
    if plan.source_kind not in ("raw_counts", "noninteger_counts"):
        return plan
    keys = dataset_gene_keys(adata, plan.report, plan.source)
    idx = np.asarray(align_genes(keys, list(genes), key_kind).source_index)  # type: ignore[arg-type]
    plan.totals_columns = np.unique(idx[idx >= 0])
    return plan


def transform(rows: sp.spmatrix | np.ndarray, plan: InputPlan) -> sp.csr_matrix:
    """Cells (rows of the chosen matrix) -> model features, in the model's gene order.

    Counts are normalised with each cell's total over *all* its genes (as ``log1p_cp10k`` does),
    then only the model's genes are kept; log-normalised input of another base or total is
    converted to natural log1p CP10k (``plan.log_scale``), otherwise only aligned.
    """
    if isinstance(rows, sp.csr_matrix) and rows.dtype == np.float32:
        x = rows  # read-only use below; no copy
    else:
        x = sp.csr_matrix(rows, dtype=np.float32)
    if x.data.size and not np.isfinite(x.data).all():
        x = x.copy()
        x.data = np.where(np.isfinite(x.data), x.data, 0).astype(np.float32)
    selected = select_columns(x, plan)
    if plan.representation == "lognorm" and plan.source_kind in ("raw_counts", "noninteger_counts"):
        cols = plan.totals_columns
        return log1p_cp10k_given_totals(selected, row_totals(x if cols is None else x[:, cols]))
    if plan.converts_log_scale:  # another log scale: back-transform, then natural log1p CP10k
        scale = plan.log_scale
        assert scale is not None
        fixed = scale.gene_subset and scale.target_sum is not None
        return to_log1p_cp10k(selected, scale, None if fixed else log_back_totals(x, scale))
    return selected


@dataclass(frozen=True)
class CellPlan:
    """The part of ``cell_features`` that depends only on the plan (made once per gene list by
    /predict): the kept source genes, their model columns and whether counts are normalised."""

    kept: np.ndarray
    columns: np.ndarray
    normalise: bool


def cell_plan(plan: InputPlan) -> CellPlan | None:
    """``plan``'s ``CellPlan``; None when the plan needs the general path (``transform``)."""
    cmap = plan.column_map
    if (
        plan.converts_log_scale
        or plan.totals_columns is not None  # totals over some genes only: the general path
        or (cmap == -2).any()
    ):
        return None
    kept = np.flatnonzero(cmap >= 0)
    normalise = plan.representation == "lognorm" and plan.source_kind in (
        "raw_counts",
        "noninteger_counts",
    )
    # int32 columns (as scipy keeps them): a matrix of them is built without index copies
    columns = cmap[kept].astype(np.int32 if len(plan.alignment.target) < 2**31 else np.int64)
    return CellPlan(kept, columns, normalise)


def cell_features(
    values: np.ndarray, plan: InputPlan, made: CellPlan | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The stored values and model columns of ``transform`` of one cell given as its float32
    values over the plan's source genes, in order: the same arithmetic, bit for bit, without
    building matrices. ``made``: ``cell_plan(plan)`` made before (else made here). None when the
    plan needs the general path (``transform``)."""
    if (
        values.dtype != np.float32
        or len(plan.column_map) != len(values)
        or not np.isfinite(values).all()
    ):
        return None
    cp = cell_plan(plan) if made is None else made
    if cp is None:
        return None
    data = values[cp.kept]
    if cp.normalise:  # log1p_cp10k_given_totals with row_totals' float64 total of the cell
        total = np.add.reduceat(values, _FIRST, dtype=np.float64)
        data = np.log1p(data * size_factor(float(total[0])))
    return data, cp.columns


def stack_cells(cells: Sequence[tuple[np.ndarray, np.ndarray]], n_target: int) -> sp.csr_matrix:
    """Cells given as ``cell_features`` parts -> one cells x model genes matrix (rows in order)."""
    indptr = np.fromiter(
        accumulate((len(d) for d, _ in cells), initial=0), dtype=np.int64, count=len(cells) + 1
    )
    if indptr[-1] < 2**31 and all(c.dtype == np.int32 for _, c in cells):
        indptr = indptr.astype(np.int32)  # scipy's own index type: no checks of the contents
    if len(cells) == 1:
        data, cols = cells[0]
    else:
        data = np.concatenate([d for d, _ in cells])
        cols = np.concatenate([c for _, c in cells])
    return sp.csr_matrix((data, cols, indptr), shape=(len(cells), n_target))


def iter_features(
    adata: ad.AnnData, plan: InputPlan, chunk_size: int = 10_000
) -> Iterator[tuple[int, sp.csr_matrix]]:
    """Stream ``(start, features)`` chunks; works on backed AnnData. NaN, Inf or a negative value
    anywhere (the validation samples only the first cells) is refused, naming its cell and gene."""
    for start, rows in iter_checked_chunks(adata, plan.source, chunk_size):
        yield start, transform(rows, plan)


def features(adata: ad.AnnData, plan: InputPlan) -> sp.csr_matrix:
    """All cells at once (for training on an in-memory reference)."""
    return sp.vstack([f for _, f in iter_features(adata, plan)], format="csr")


def plan_from_genes(
    genes: Sequence[str],
    target: Sequence[str],
    *,
    values: Representation = "counts",
    representation: Representation = "lognorm",
    key_kind: Literal["symbol", "ensembl"] | None = None,
    target_name: str = "model genes",
) -> InputPlan:
    """An InputPlan for cells given as values over ``genes`` (no AnnData), e.g. a real-time request.

    ``values`` says what the numbers are: raw ``counts`` (normalised by ``transform`` exactly as in a
    batch run) or ``lognorm`` (used as given). Never refuses on coverage; the caller decides.
    """
    from cellfoundry.data.matrix import MatrixInfo

    names = [str(g) for g in genes]
    keys = gene_keys(names, None)
    al = align_genes(keys, target, key_kind)
    kind: MatrixKind = "raw_counts" if values == "counts" else "log_normalized"
    source = "X"
    info = MatrixInfo(
        source=source,
        kind=kind,
        shape=(0, len(names)),
        sampled_rows=0,
        nnz_fraction=0.0,
        min_value=0.0,
        max_value=0.0,
        n_nan=0,
        n_inf=0,
        n_negative=0,
        integer_fraction=0.0,
        median_row_total=0.0,
        log_target_sum=None,
    )
    cov = Coverage(
        target=target_name,
        n_target=len(al.target),
        n_present=al.n_present,
        fraction_present=al.fraction_present,
        fraction_counts_mapped=None,
        key_kind=al.key_kind,
        missing_examples=al.missing(10),
    )
    report = ValidationReport(
        n_cells=0,
        n_genes=len(names),
        sparsity=0.0,
        matrices=[info],
        chosen={"counts": source if values == "counts" else None, "lognorm": source},
        gene_id_kind=keys.id_kind,
        species="unknown",
        symbol_source=keys.symbol_source,
        ensembl_source=keys.ensembl_source,
        n_duplicate_genes=len(names) - len(set(names)),
        duplicate_examples=[],
        coverage=[cov],
    )
    if representation == "counts" and values != "counts":
        raise DataError(
            "this model needs raw counts", "send raw counts (values='counts')", code="no_raw_counts"
        )
    return InputPlan(
        source=source,
        source_kind=kind,
        representation=representation,
        alignment=al,
        coverage=cov,
        report=report,
        selector=_selector(al, len(names)),
        column_map=_column_map(al, len(names)),
    )
