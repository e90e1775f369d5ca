"""Reading single-cell data: .h5ad (in memory or backed), 10x HDF5, 10x MEX folder, CSV/TSV.

A backed .h5ad keeps every cell- or gene-sized matrix on disk: anndata's own backed reader
streams X (and raw/X) but reads layers, obsp, varm and varp into memory, so a million-cell file
with ``layers['counts']`` beside log-normalised X, or a kNN graph in ``obsp``, cost gigabytes
before the first cell was annotated. ``read_data(backed=True)`` leaves those as backed datasets
(CSR ones as anndata's ``CSRDataset``, dense ones as ``h5py.Dataset``; CSC is loaded); rows
are read from them only when a matrix is used (``data.matrix.read_rows``) or a subset is taken
into memory (``adata[rows].to_memory()`` reads just those rows). Close with ``close_backed``.
"""

from __future__ import annotations

import gzip
import warnings
import zlib
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellfoundry.errors import CellfoundryWarning, DataError

SUPPORTED = ".h5ad, 10x .h5, a 10x MEX folder (matrix.mtx[.gz], features/genes.tsv[.gz], barcodes.tsv[.gz]), .csv/.tsv[.gz]"


def detect_format(path: Path) -> str:
    """Return one of h5ad, 10x_h5, 10x_mex, csv, tsv."""
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if any(n.startswith("matrix.mtx") for n in names):
            return "10x_mex"
        raise DataError(
            f"{path} is a folder without matrix.mtx[.gz]",
            "point to a 10x MEX folder (matrix.mtx, features.tsv/genes.tsv, barcodes.tsv) or a file",
        )
    name = path.name.lower()
    fmt = None
    if name.endswith(".h5ad"):
        fmt = "h5ad"
    elif name.endswith(".h5") or name.endswith(".hdf5"):
        fmt = "10x_h5"
    for ext, table in ((".csv", "csv"), (".tsv", "tsv"), (".txt", "tsv")):
        if fmt is None and (name.endswith(ext) or name.endswith(ext + ".gz")):
            fmt = table
    if fmt is None:
        raise DataError(f"unsupported file type: {path.name}", f"use one of: {SUPPORTED}")
    _check_content(path, fmt)
    return fmt


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
GZIP_SIGNATURE = b"\x1f\x8b"
ZIP_SIGNATURE = b"PK\x03\x04"


def _is_hdf5(path: Path) -> bool:
    import h5py

    return bool(h5py.is_hdf5(path))


def _hdf5_kind(path: Path) -> str | None:
    """'h5ad' or '10x_h5' from the names at the root of an HDF5 file (no link is followed and
    no data is read), None when neither writer's layout shows."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            keys = set(f.keys())
    except OSError:
        return None
    if keys & {"X", "obs", "var"}:
        return "h5ad"
    return "10x_h5" if "matrix" in keys else None


def _check_content(path: Path, fmt: str) -> None:
    """Refuse a file whose first bytes show it is not what its name says (HDF5, gzip, zip or
    text), saying what it is and the name that fits; reads nothing more when the content fits."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return  # unreadable: the reader says why
    name = path.name
    if not head:
        raise DataError(f"{name} is empty (0 bytes)", "write or download the file again")
    ending = name[len(_stem(name)) :]
    gz = ending.lower().endswith(".gz")
    expected = "a gzip-compressed text table" if gz else FORMAT_NAMES[fmt]
    what = _describe(head, path)
    if what == "HDF5":
        kind = _hdf5_kind(path)
        if kind == fmt or (kind is None and fmt in ("h5ad", "10x_h5")):
            return
        what = FORMAT_NAMES[kind] if kind else "an HDF5 file (an .h5ad or a 10x .h5?)"
        fix = f"rename it to {_stem(name)}.{'h5' if kind == '10x_h5' else 'h5ad'}"
        raise DataError(
            f"{name} is {what}, but its name ends in {ending} (for {expected})",
            fix if kind else f"{fix} if anndata wrote it, {_stem(name)}.h5 if Cell Ranger did",
        )
    if what == "a text table" and gz:
        what = "a text table, not gzip-compressed"
    if what != expected and not (what == "text" and fmt in ("csv", "tsv") and not gz):
        raise DataError(
            f"{name} is {what}, but its name ends in {ending} (for {expected})",
            _fix_hint(what, name),
        )


FORMAT_NAMES = {
    "h5ad": "an HDF5 file written by anndata (an .h5ad)",
    "10x_h5": "an HDF5 file written by Cell Ranger (a 10x .h5)",
    "csv": "a text table",
    "tsv": "a text table",
}


def _stem(name: str) -> str:
    """``name`` without its data-format ending (``x.csv.gz`` -> ``x``)."""
    if name.lower().endswith(".gz"):
        name = name[:-3]
    ext = next(
        (e for e in (".h5ad", ".hdf5", ".h5", ".csv", ".tsv", ".txt") if name.lower().endswith(e)),
        "",
    )
    return name[: len(name) - len(ext)] or name


def _describe(head: bytes, path: Path | None) -> str:
    """What a file is, from its first bytes (gzip at ``path``: from its first decompressed bytes)."""
    if head.startswith(GZIP_SIGNATURE):
        inner = b""
        try:
            if path is None:  # gzip inside gzip
                raise EOFError
            with gzip.open(path, "rb") as fh:
                inner = fh.read(len(head))
        except (OSError, EOFError, zlib.error):
            pass
        if inner.startswith(HDF5_SIGNATURE):
            return "a gzip-compressed HDF5 file"
        if inner and _describe(inner, None) in ("a text table", "text"):
            return "a gzip-compressed text table"
        return "gzip-compressed"
    if head.startswith(ZIP_SIGNATURE):
        return "a zip archive"
    if head.startswith(HDF5_SIGNATURE) or (path is not None and b"\x00" in head and _is_hdf5(path)):
        return "HDF5"  # (the signature may follow a user block)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16 text"
    if b"\x00" in head:
        return "binary data"
    first = head.split(b"\n", 1)[0]
    return "a text table" if any(s.encode() in first for s in TABLE_SEPARATORS) else "text"


def _fix_hint(what: str, name: str) -> str:
    """How to fix a file that is ``what`` (from ``_describe``) but named ``name``."""
    stem = _stem(name)
    if what in ("a text table", "text", "a text table, not gzip-compressed"):
        return f"rename it to {stem}.csv (or {stem}.tsv if tab-separated)"
    if what == "a gzip-compressed text table":
        return f"rename it to {stem}.csv.gz (or {stem}.tsv.gz if tab-separated)"
    if what == "a gzip-compressed HDF5 file":
        return f"decompress it (gunzip) and name it {stem}.h5ad (or {stem}.h5 for Cell Ranger's)"
    if what == "a zip archive":
        return f"unzip it and give the file inside ({SUPPORTED})"
    if what == "UTF-16 text":
        return "save the table as UTF-8 text (e.g. CSV UTF-8 in Excel)"
    return f"give one of: {SUPPORTED}"


def read_data(
    path: str | Path,
    *,
    backed: bool = False,
    genes_by_cells: bool | None = None,
) -> ad.AnnData:
    """Read a dataset into AnnData. ``backed=True`` streams .h5ad rows from disk.

    ``genes_by_cells`` is for CSV/TSV tables: True when genes are the rows, False when cells
    are, None to detect it (genes are rows when most row names and almost no column names are
    gene IDs or known gene symbols).
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"no such file or folder: {p}", "check the path")
    fmt = detect_format(p)
    if fmt in ("h5ad", "10x_h5"):
        _refuse_outside_references(p)
    with warnings.catch_warnings():  # repeated cell names are made unique and reported below
        warnings.filterwarnings("ignore", "Observation names are not unique", UserWarning)
        adata = _read(p, fmt, backed, genes_by_cells)
        renamed = _unique_cell_names(adata)
    adata.uns.setdefault("cellfoundry", {})
    if not backed:
        adata.uns["cellfoundry"] = {"source_format": fmt}
        orientation = adata.uns.pop("table_orientation", None)
        if orientation:
            adata.uns["cellfoundry"]["table_orientation"] = orientation
    if renamed:
        adata.uns["cellfoundry"][DUPLICATE_CELLS_KEY] = renamed
    return adata


DUPLICATE_CELLS_KEY = "duplicate_cell_names"  # uns["cellfoundry"][...]: what read_data renamed


def _unique_cell_names(adata: ad.AnnData) -> dict[str, Any] | None:
    """Make repeated cell names unique as anndata's ``obs_names_make_unique`` does: the first
    'x' keeps its name, the later ones become 'x-1', 'x-2', ...; rows keep their order, so
    output row i is input row i. Returns what was renamed (None when every name was unique)."""
    before = adata.obs_names
    if before.is_unique:
        return None
    adata.obs_names_make_unique()
    changed = np.flatnonzero(np.asarray(before != adata.obs_names))
    counts = before.value_counts()
    return {
        "n_cells": int(adata.n_obs),
        "n_repeated_names": int((counts > 1).sum()),
        "n_renamed": len(changed),
        "examples": [f"row {i + 1}: '{before[i]}' -> '{adata.obs_names[i]}'" for i in changed[:5]],
    }


def _read(p: Path, fmt: str, backed: bool, genes_by_cells: bool | None) -> ad.AnnData:
    try:
        if fmt == "h5ad" and _float16_sparse(p):
            adata = read_h5ad_float16(p)  # in memory even when backed: see its docstring
        elif fmt == "h5ad":
            adata = read_h5ad_backed(p) if backed else ad.read_h5ad(p)
        elif fmt == "10x_h5":
            import scanpy as sc

            adata = sc.read_10x_h5(p)
        elif fmt == "10x_mex":
            adata = _read_mex(p)
        else:
            adata = _read_table(p, sep="," if fmt == "csv" else "\t", genes_by_cells=genes_by_cells)
    except DataError:
        raise
    except Exception as exc:  # the readers raise many kinds; the user needs the reason
        raise DataError(
            f"could not read {p.name} as {fmt}: {type(exc).__name__}: {exc}",
            f"check that the file is a valid {fmt} file and not truncated",
        ) from exc
    return adata


def _mex_file(folder: Path, stems: tuple[str, ...]) -> Path | None:
    """The first of ``stems`` present in ``folder``, plain or gzipped."""
    for stem in stems:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _read_mex(folder: Path) -> ad.AnnData:
    """A 10x MEX folder: matrix.mtx, features.tsv (Cell Ranger 3+) or genes.tsv (older) and
    barcodes.tsv, each plain or gzipped. Gene IDs are the var_names, symbols in
    var['gene_symbols']; with a feature-type column only 'Gene Expression' rows are kept."""
    import scipy.io

    files = {
        "matrix.mtx": _mex_file(folder, ("matrix.mtx",)),
        "features.tsv/genes.tsv": _mex_file(folder, ("features.tsv", "genes.tsv")),
        "barcodes.tsv": _mex_file(folder, ("barcodes.tsv",)),
    }
    missing = [name for name, f in files.items() if f is None]
    if missing:
        raise DataError(
            f"the 10x MEX folder {folder.name} lacks {' and '.join(missing)} (plain or .gz)",
            "use the whole folder Cell Ranger wrote: matrix.mtx, features.tsv (or genes.tsv) and "
            "barcodes.tsv, each plain or gzipped",
        )
    mtx, feats_path, barcodes_path = (f for f in files.values() if f is not None)
    x = sp.csr_matrix(scipy.io.mmread(mtx).T, dtype=np.float32)  # stored genes x cells
    feats = pd.read_csv(feats_path, sep="\t", header=None, dtype=str)
    barcodes = pd.read_csv(barcodes_path, sep="\t", header=None, dtype=str)[0]
    if (len(barcodes), len(feats)) != x.shape:
        raise DataError(
            f"{mtx.name} holds {x.shape[1]:,} genes x {x.shape[0]:,} cells but "
            f"{feats_path.name} lists {len(feats):,} genes and {barcodes_path.name} {len(barcodes):,} cells",
            "use the three files of one 10x output folder",
        )
    var = pd.DataFrame({"gene_symbols": feats[1].to_numpy() if feats.shape[1] > 1 else feats[0]})
    var.index = pd.Index(feats[0].to_numpy())
    adata = ad.AnnData(X=x, obs=pd.DataFrame(index=pd.Index(barcodes.to_numpy())), var=var)
    if feats.shape[1] > 2:
        adata.var["feature_types"] = feats[2].to_numpy()
        gex = (adata.var["feature_types"] == "Gene Expression").to_numpy()
        if gex.any() and not gex.all():
            adata = adata[:, gex].copy()
    return adata


# elements of a backed .h5ad left on disk (anndata's backed reader loads them): n_cells x n_cells
# graphs, matrices beside X, and gene-sized arrays
LAZY_ELEMENTS = ("layers", "obsp", "varm", "varp")
LAZY_HANDLE = "_cellfoundry_lazy_h5"  # attribute of the AnnData holding their file handle


def _lazy_elem(elem: Any) -> Any:
    """A backed view of one stored matrix: CSR groups and dense numeric arrays are not read;
    anything else is read as anndata does: CSC (its rows are spread over the whole matrix, so
    each row chunk would read all of it), string, nullable or awkward arrays, dataframes."""
    import h5py
    from anndata.io import read_elem, sparse_dataset

    kind = elem.attrs.get("encoding-type", "")
    if isinstance(elem, h5py.Group) and kind == "csr_matrix":
        return sparse_dataset(elem)
    if isinstance(elem, h5py.Dataset) and kind == "array" and elem.dtype.kind in "biuf":
        return elem
    return read_elem(elem)


_SPARSE = ("csr_matrix", "csc_matrix")


def _float16_sparse(path: Path) -> bool:
    """Whether an .h5ad stores a sparse matrix (X, raw/X, a layer, obsm/obsp/varm/varp) with
    float16 values: scipy.sparse cannot hold float16, so anndata's reader fails on it."""
    import h5py

    found = False

    def visit(_name: str, obj: Any) -> bool | None:
        nonlocal found
        if isinstance(obj, h5py.Group) and obj.attrs.get("encoding-type", "") in _SPARSE:
            data = obj.get("data")
            found = isinstance(data, h5py.Dataset) and data.dtype == np.float16
        return True if found else None  # a true value stops the visit

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return found


def read_h5ad_float16(path: str | Path) -> ad.AnnData:
    """An .h5ad read into memory with its float16 sparse matrices widened to float32 (exact).

    Before, anndata's reader stopped with "scipy.sparse does not support dtype float16" (read
    as a broken file). Backed reading is not offered for such a file: anndata's own subsets of a
    backed float16 matrix (``adata[rows].to_memory()``) fail the same way; the matrices take twice
    their stored size in memory.
    """
    import h5py
    from anndata.experimental import read_dispatched

    def callback(read: Any, _name: str, elem: Any, iospec: Any) -> Any:
        kind = iospec.encoding_type
        if kind in _SPARSE and elem["data"].dtype == np.float16:
            cls = sp.csr_matrix if kind == "csr_matrix" else sp.csc_matrix
            data = elem["data"][...].astype(np.float32)
            n_inf = int(np.isinf(data).sum())
            if n_inf:  # said here, where the cause is known; the matrix is refused if it is used
                warnings.warn(
                    f"{elem.name.lstrip('/')} is stored as float16, whose largest value is "
                    f"65,504: {n_inf:,} of its values are Inf (larger counts overflowed when the "
                    "file was written); store counts as float32 or integers",
                    CellfoundryWarning,
                    stacklevel=2,
                )
            parts = (data, elem["indices"][...], elem["indptr"][...])
            return cls(parts, shape=tuple(int(n) for n in elem.attrs["shape"]))
        return read(elem)

    with h5py.File(path, "r") as f:
        return read_dispatched(f, callback)  # type: ignore[no-any-return]


def read_h5ad_backed(path: str | Path) -> ad.AnnData:
    """An .h5ad opened backed (read-only) with X, raw/X, layers, obsp, varm and varp on disk.

    anndata reads obs, var, obsm and uns into memory (as its backed reader does). The backed
    layers/obsp/varm/varp use a second read-only handle on the file, because anndata closes its
    own handle whenever a subset is taken into memory (``to_memory``) and reopens it only for X.
    Files from before anndata 0.8's layout are read by anndata's reader.
    """
    import h5py
    from anndata.io import read_elem

    p = Path(path)
    f = h5py.File(p, "r")
    if "X" not in f:  # no X (counts only in layers or .raw): anndata cannot back such a file
        f.close()
        return ad.read_h5ad(p)
    if "encoding-type" not in f.attrs:  # pre-0.8 layout (record-array obs/var, legacy raw)
        f.close()
        return ad.read_h5ad(p, backed="r")
    lazy = h5py.File(p, "r")
    try:
        d: dict[str, Any] = {"filename": f}
        for key in ("obs", "var", "obsm", "uns"):
            if key in f:
                d[key] = read_elem(f[key])
        for key in LAZY_ELEMENTS:
            if key in lazy:
                d[key] = {name: _lazy_elem(elem) for name, elem in lazy[key].items()}
        if "raw" in f:  # raw/X stays on disk (anndata opens it when used), as its reader does
            d["raw"] = {v: read_elem(f[f"raw/{v}"]) for v in ("var", "varm") if f"raw/{v}" in f}
        adata = ad.AnnData(**d)
    except BaseException:
        lazy.close()
        f.close()
        raise
    setattr(adata, LAZY_HANDLE, lazy)  # for close_backed; closed anyway when adata is collected
    return adata


def close_backed(adata: ad.AnnData) -> None:
    """Close every handle a backed AnnData holds on its file (X's and the backed elements'), so
    the file can be opened for writing; a no-op for in-memory data. Safe to call twice."""
    lazy = getattr(adata, LAZY_HANDLE, None)
    if lazy is not None and lazy.id.valid:
        lazy.close()
    if getattr(adata, "isbacked", False):
        adata.file.close()


def _refuse_outside_references(path: Path) -> None:
    """Refuse HDF5 external storage, external/soft links and virtual datasets (reads no data)."""
    import h5py

    from cellfoundry.data.untrusted.hdf5 import check_hdf5

    if not h5py.is_hdf5(path):  # not HDF5 at all: the reader below says so
        return
    try:
        check_hdf5(path)
    except OSError as exc:
        raise DataError(
            f"could not check the HDF5 structure of {path.name} ({type(exc).__name__})",
            "check that the file is complete and not being written to",
        ) from None


TABLE_SEPARATORS = (",", "\t", ";")


def table_separator(header: str, default: str) -> str:
    """The separator of a text table from its header line: the extension's own (``default``)
    when the line holds it, else the most frequent of comma, tab and semicolon there (a
    European ``;`` CSV, a tab-separated ``.csv``). The intake limits count columns with it too.
    """
    if default in header:
        return default
    counts = {s: header.count(s) for s in TABLE_SEPARATORS}
    best = max(counts, key=lambda s: counts[s])
    return best if counts[best] else default


def _table_sep(path: Path, default: str) -> str:
    opener: Any = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
            return table_separator(fh.readline(), default)
    except (OSError, EOFError):  # not gzip after all, unreadable: the reader says why
        return default


def _first_column_is_names(df: pd.DataFrame) -> bool:
    """Whether the first column holds cell (or gene) names rather than the first gene's values:
    an unnamed header (as pandas and R write an index), text, or numbers that are all distinct
    (IDs); a named column of numbers with repeats is expression data (a table saved without
    its index)."""
    header = str(df.columns[0])
    col = df.iloc[:, 0]
    if header == "" or header.startswith("Unnamed: "):
        return True
    return not pd.api.types.is_numeric_dtype(col) or bool(col.is_unique)


def _gene_share(names: pd.Index) -> float:
    """Share of (up to 2,000) names that are Ensembl gene IDs or known human gene symbols
    (mouse/other symbols match in upper case)."""
    from cellfoundry.data.genes import gene_table, is_ensembl

    sample = [str(n) for n in names[:2000]]
    if not sample:
        return 0.0
    known = gene_table().symbol_to_id
    return sum(is_ensembl(n) or n.upper() in known for n in sample) / len(sample)


def _read_table(path: Path, sep: str, genes_by_cells: bool | None) -> ad.AnnData:
    sep = _table_sep(path, sep)
    df = pd.read_csv(path, sep=sep)
    # pandas takes the first column as the index itself when the header has one name fewer
    # (R's write.table); otherwise decide whether the first column is names or data
    if isinstance(df.index, pd.RangeIndex) and df.shape[1] > 1 and _first_column_is_names(df):
        df = df.set_index(df.columns[0])
        df.index.name = None
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise DataError(
            f"{path.name} holds no cells or no genes",
            "give a table with a header line of gene (or cell) names, one line per cell (or "
            "gene) and the names in the first column, separated by commas, tabs or semicolons",
        )
    if genes_by_cells is None:  # detected: gene names down the rows and none across the top
        genes_by_cells = _gene_share(df.index) >= 0.5 and _gene_share(df.columns) < 0.1
    if genes_by_cells:
        df = df.T
    non_numeric = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if non_numeric:
        raise DataError(
            f"{path.name}: {len(non_numeric)} column(s) are not numeric, e.g. {non_numeric[:3]}",
            "the table must be cells x genes with numbers only (use --genes-by-cells if genes are rows)",
        )
    x = sp.csr_matrix(df.to_numpy(dtype=np.float32))
    adata = ad.AnnData(
        X=x,
        obs=pd.DataFrame(index=df.index.astype(str)),
        var=pd.DataFrame(index=df.columns.astype(str)),
    )
    adata.uns["table_orientation"] = "genes x cells" if genes_by_cells else "cells x genes"
    return adata


def as_anndata(data: ad.AnnData | str | Path, *, backed: bool = False) -> ad.AnnData:
    """Accept an AnnData or a path."""
    if isinstance(data, ad.AnnData):
        return data
    return read_data(data, backed=backed)
