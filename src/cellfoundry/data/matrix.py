"""Candidate expression matrices of an AnnData (X, layers, raw.X): what each holds, row chunks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.abc import CSRDataset

from cellfoundry.data.normalize import LogScale, detect_log_scale
from cellfoundry.errors import DataError

MatrixKind = Literal[
    "raw_counts", "noninteger_counts", "log_normalized", "scaled", "empty", "invalid"
]
SAMPLE_ROWS = 2000
InvalidKind = Literal["negative", "non_finite"]
NON_FINITE_HINT = "replace NaN/Inf, e.g. with 0, or give the raw counts in layers['counts']"


@dataclass
class MatrixInfo:
    """What one candidate matrix holds, from a sample of its rows."""

    source: str  # "X", "layers/counts", "raw/X"
    kind: MatrixKind
    shape: tuple[int, int]
    sampled_rows: int
    nnz_fraction: float
    min_value: float
    max_value: float
    n_nan: int
    n_inf: int
    n_negative: int
    integer_fraction: float
    median_row_total: float
    log_target_sum: float | None  # for log-normalised: the detected per-cell total (target)
    # log-normalised input: detected base ("e", "2", "10"), target ("1e4", "1e6", "median",
    # "constant", "none", "unknown"), gene subset, evidence (see normalize.detect_log_scale)
    log_base: str | None = None
    log_target: str | None = None
    log_gene_subset: bool = False
    log_evidence: str | None = None
    negative_example: str | None = None  # the first negative value: "cell 'c', gene 'g': -0.42"
    non_finite_example: str | None = None  # the first NaN/Inf: "cell 'c', gene 'g': NaN"

    @property
    def log_scale(self) -> LogScale | None:
        if self.kind != "log_normalized" or self.log_target is None:
            return None
        return LogScale(
            self.log_base,
            self.log_target,
            self.log_target_sum,
            self.log_gene_subset,
            self.log_evidence or "",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def matrix_sources(adata: ad.AnnData) -> list[str]:
    """All candidate matrix sources, in the order they are considered."""
    out = ["X"] if adata.X is not None else []
    out += [f"layers/{k}" for k in adata.layers]
    if adata.raw is not None:
        out.append("raw/X")
    return out


def get_matrix(adata: ad.AnnData, source: str) -> Any:
    """The matrix object behind ``source`` (possibly a backed dataset)."""
    if source == "X":
        return adata.X
    if source == "raw/X":
        if adata.raw is None:
            raise KeyError(source)
        return adata.raw.X
    if source.startswith("layers/"):
        return adata.layers[source.split("/", 1)[1]]
    raise KeyError(source)


def source_var(adata: ad.AnnData, source: str) -> tuple[pd.Index, pd.DataFrame]:
    """The gene names and var table that go with ``source`` (raw has its own)."""
    if source == "raw/X" and adata.raw is not None:
        return adata.raw.var_names, adata.raw.var
    return adata.var_names, adata.var


def _sparse_dtype(dtype: np.dtype) -> np.dtype:
    """float16 (which scipy.sparse cannot hold) as float32; every other dtype as it is."""
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def _to_csr(block: Any) -> sp.csr_matrix:
    if not sp.issparse(block) and hasattr(block, "to_memory"):
        block = block.to_memory()
    if sp.issparse(block):
        return sp.csr_matrix(block, dtype=_sparse_dtype(block.dtype))
    block = np.asarray(block)
    return sp.csr_matrix(block.astype(_sparse_dtype(block.dtype), copy=False))


def _read_backed_csr(m: CSRDataset, start: int, stop: int) -> sp.csr_matrix:
    """Rows of a CSR matrix in an HDF5 file, read straight from its three datasets (no decoding
    of anything outside ``start:stop``; about 2x faster than anndata's backed slicing)."""
    group = m.group
    indptr = np.asarray(group["indptr"][start : stop + 1], dtype=np.int64)
    lo, hi = int(indptr[0]), int(indptr[-1])
    data_ds, index_ds = group["data"], group["indices"]
    data = np.empty(hi - lo, dtype=_sparse_dtype(data_ds.dtype))
    indices = np.empty(hi - lo, dtype=index_ds.dtype)
    if hi > lo:
        data_ds.read_direct(data, np.s_[lo:hi])
        index_ds.read_direct(indices, np.s_[lo:hi])
    indptr -= lo
    out = sp.csr_matrix((stop - start, int(m.shape[1])), dtype=data.dtype)
    # one index dtype for indices and indptr (a chunk's nnz fits int32 unless indices are int64)
    idx_dtype = np.int32 if indices.dtype == np.int32 and hi - lo < 2**31 else np.int64
    out.data, out.indices = data, indices.astype(idx_dtype, copy=False)
    out.indptr = indptr.astype(idx_dtype, copy=False)
    return out


def read_rows(adata: ad.AnnData, source: str, start: int, stop: int) -> sp.csr_matrix:
    """Rows ``start:stop`` of a matrix as CSR (works for in-memory and backed data).

    In-memory CSR rows are returned as a view (no copy; float16 is copied as float32, which
    scipy.sparse can compute with); callers must not modify them.
    Backed CSR rows are read directly from the file's datasets, one row range at a time.
    """
    m = get_matrix(adata, source)
    if isinstance(m, CSRDataset) and isinstance(getattr(m, "group", None), h5py.Group):
        return _read_backed_csr(m, start, stop)
    if isinstance(m, sp.csr_matrix | sp.csr_array):
        lo, hi = m.indptr[start], m.indptr[stop]
        dtype = _sparse_dtype(m.data.dtype)  # float16 (as anndata reads it) is copied as float32
        view = sp.csr_matrix((stop - start, m.shape[1]), dtype=dtype)
        # set the arrays directly: the constructor would copy views of a larger matrix
        view.data, view.indices = m.data[lo:hi].astype(dtype, copy=False), m.indices[lo:hi]
        view.indptr = (m.indptr[start : stop + 1] - lo).astype(m.indices.dtype, copy=False)
        return view
    return _to_csr(m[start:stop])


def iter_row_chunks(
    adata: ad.AnnData, source: str, chunk_size: int = 10_000
) -> Iterator[tuple[int, sp.csr_matrix]]:
    """Yield ``(start, rows)`` chunks; memory stays bounded by one chunk."""
    n = adata.n_obs
    for start in range(0, n, chunk_size):
        yield start, read_rows(adata, source, start, min(start + chunk_size, n))


def inspect_matrix(adata: ad.AnnData, source: str, sample_rows: int = SAMPLE_ROWS) -> MatrixInfo:
    """Classify a matrix from its first ``sample_rows`` rows."""
    m = get_matrix(adata, source)
    shape = (int(m.shape[0]), int(m.shape[1]))
    n = min(shape[0], sample_rows)
    block = read_rows(adata, source, 0, n) if n else sp.csr_matrix((0, shape[1]))
    data = block.data.astype(np.float64, copy=False)
    n_nan = int(np.isnan(data).sum())
    n_inf = int(np.isinf(data).sum())
    finite = data[np.isfinite(data)]
    n_neg = int((finite < 0).sum())
    negative_example = _example(adata, source, block, "negative") if n_neg else None
    non_finite_example = _example(adata, source, block, "non_finite") if n_nan or n_inf else None
    total = max(n * shape[1], 1)
    nnz_frac = float(block.nnz / total)
    mn = float(finite.min()) if finite.size else 0.0
    mx = float(finite.max()) if finite.size else 0.0
    int_frac = float(np.mean(np.abs(finite - np.round(finite)) < 1e-6)) if finite.size else 1.0
    clean = block.copy()
    clean.data = np.where(np.isfinite(clean.data), clean.data, 0)
    row_tot = np.asarray(clean.sum(axis=1)).ravel()
    med_tot = float(np.median(row_tot)) if row_tot.size else 0.0
    scale = None
    kind: MatrixKind
    if n_nan or n_inf:
        kind = "invalid"
    elif finite.size == 0:
        kind = "empty"
    elif n_neg > 0:
        kind = "scaled"
    elif int_frac > 0.999:
        kind = "raw_counts"
    elif mx > 30:  # beyond any log scale (log2 of 1e6 is 20)
        kind = "noninteger_counts"
    else:
        # log-normalised (of any base and total) or low-depth non-integer counts (ambient-RNA
        # corrected): decided by the log structure of the values themselves
        scale = detect_log_scale(clean)
        kind = "noninteger_counts" if scale is None else "log_normalized"
    return MatrixInfo(
        source=source,
        kind=kind,
        shape=shape,
        sampled_rows=n,
        nnz_fraction=nnz_frac,
        min_value=mn,
        max_value=mx,
        n_nan=n_nan,
        n_inf=n_inf,
        n_negative=n_neg,
        integer_fraction=int_frac,
        median_row_total=med_tot,
        log_target_sum=None if scale is None else scale.target_sum,
        log_base=None if scale is None else scale.base,
        log_target=None if scale is None else scale.target,
        log_gene_subset=False if scale is None else scale.gene_subset,
        log_evidence=None if scale is None else scale.evidence,
        negative_example=negative_example,
        non_finite_example=non_finite_example,
    )


@dataclass(frozen=True)
class InvalidValues:
    """Values of one invalid kind in some rows of a matrix: how many, and where the first one is."""

    kind: InvalidKind  # "negative": finite values below 0; "non_finite": NaN, +Inf or -Inf
    count: int
    row: int  # within the rows
    gene: str
    value: float

    @property
    def shown(self) -> str:
        """The first value as a person writes it: -0.42, NaN, Inf or -Inf."""
        v = self.value
        return "NaN" if v != v else ("Inf" if v == np.inf else "-Inf" if v == -np.inf else f"{v:g}")


def first_invalid(
    adata: ad.AnnData, source: str, rows: sp.csr_matrix, kind: InvalidKind
) -> InvalidValues | None:
    """The values of ``kind`` in ``rows`` (CSR rows of ``source``); None when there are none."""
    data = np.asarray(rows.data)
    # -Inf is below 0 but not a negative number: it counts as non-finite only
    bad = ~np.isfinite(data) if kind == "non_finite" else (data < 0) & (data != -np.inf)
    at_all = np.flatnonzero(bad)
    if not at_all.size:
        return None
    at = int(at_all[0])
    row = int(np.searchsorted(rows.indptr, at, side="right")) - 1
    gene = str(source_var(adata, source)[0][int(rows.indices[at])])
    return InvalidValues(kind, int(at_all.size), row, gene, float(data[at]))


def _example(adata: ad.AnnData, source: str, rows: sp.csr_matrix, kind: InvalidKind) -> str | None:
    """Where the first value of ``kind`` in the first rows of ``source`` is, with the value."""
    bad = first_invalid(adata, source, rows, kind)
    if bad is None:
        return None
    value = f"{bad.value:.4g}" if kind == "negative" else bad.shown
    return f"cell '{adata.obs_names[bad.row]}', gene '{bad.gene}': {value}"


def check_values(rows: sp.csr_matrix, adata: ad.AnnData, source: str, start: int) -> None:
    """Refuse rows ``start:`` of counts or log-normalised ``source`` that hold NaN, +/-Inf or a
    negative value, naming how many, the first one's cell (name and row) and gene.

    The validation classifies a matrix from its first ``SAMPLE_ROWS`` cells only; every stream
    that reads cells for training, prediction or embedding checks each chunk with this, so a value
    further down is refused instead of read as 0 (NaN/Inf) or logged into NaN (negative).
    """
    data = np.asarray(rows.data)
    if not data.size or (data.min() >= 0 and data.max() < np.inf):  # NaN fails both tests
        return  # two passes, no copies: the usual case
    for kind in ("non_finite", "negative"):
        bad = first_invalid(adata, source, rows, kind)  # type: ignore[arg-type]
        if bad is not None:
            raise _invalid_values_error(bad, rows, adata, source, start)


def _invalid_values_error(
    bad: InvalidValues, rows: sp.csr_matrix, adata: ad.AnnData, source: str, start: int
) -> DataError:
    row = start + bad.row
    if bad.kind == "non_finite":
        n_nan = int(np.isnan(np.asarray(rows.data, dtype=np.float64)).sum())
        what, of_which = "NaN or Inf values", f" ({n_nan:,} NaN, {bad.count - n_nan:,} Inf)"
        hint, code = NON_FINITE_HINT, "non_finite_values"
    else:
        what, of_which = "negative values", ""
        hint = (
            "counts and log-normalised values are never negative: fix or drop those cells, or give "
            "the raw counts (layers['counts']); scaled (z-scored) values cannot be turned back "
            "into counts"
        )
        code = "negative_values"
    return DataError(
        f"{source} holds {what} past the cells the validation sampled: {bad.count:,} in "
        f"cells {start + 1:,}-{start + rows.shape[0]:,}{of_which}, the first {bad.shown} at "
        f"cell '{adata.obs_names[row]}' (row {row:,}), gene '{bad.gene}'",
        hint,
        code=code,
    )


def iter_checked_chunks(
    adata: ad.AnnData, source: str, chunk_size: int = 10_000
) -> Iterator[tuple[int, sp.csr_matrix]]:
    """``iter_row_chunks`` of counts or log-normalised values, every chunk through ``check_values``."""
    for start, rows in iter_row_chunks(adata, source, chunk_size):
        check_values(rows, adata, source, start)
        yield start, rows
