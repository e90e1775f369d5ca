"""Reading single-cell data: .h5ad (in memory or backed), 10x HDF5, 10x MEX folder, CSV/TSV."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellfoundry.errors import DataError

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
    if name.endswith(".h5ad"):
        return "h5ad"
    if name.endswith(".h5") or name.endswith(".hdf5"):
        return "10x_h5"
    for ext, fmt in ((".csv", "csv"), (".tsv", "tsv"), (".txt", "tsv")):
        if name.endswith(ext) or name.endswith(ext + ".gz"):
            return fmt
    raise DataError(f"unsupported file type: {path.name}", f"use one of: {SUPPORTED}")


def read_data(
    path: str | Path,
    *,
    backed: bool = False,
    genes_by_cells: bool = False,
) -> ad.AnnData:
    """Read a dataset into AnnData. ``backed=True`` streams .h5ad rows from disk."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"no such file or folder: {p}", "check the path")
    fmt = detect_format(p)
    if fmt in ("h5ad", "10x_h5"):
        _refuse_outside_references(p)
    try:
        if fmt == "h5ad":
            adata = ad.read_h5ad(p, backed="r" if backed else None)
        elif fmt == "10x_h5":
            import scanpy as sc

            adata = sc.read_10x_h5(p)
        elif fmt == "10x_mex":
            import scanpy as sc

            adata = sc.read_10x_mtx(p, var_names="gene_ids", make_unique=True)
        else:
            adata = _read_table(p, sep="," if fmt == "csv" else "\t", genes_by_cells=genes_by_cells)
    except DataError:
        raise
    except Exception as exc:  # the readers raise many kinds; the user needs the reason
        raise DataError(
            f"could not read {p.name} as {fmt}: {type(exc).__name__}: {exc}",
            f"check that the file is a valid {fmt} file and not truncated",
        ) from exc
    adata.uns.setdefault("cellfoundry", {})
    if not backed:
        adata.uns["cellfoundry"] = {"source_format": fmt}
    return adata


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


def _read_table(path: Path, sep: str, genes_by_cells: bool) -> ad.AnnData:
    df = pd.read_csv(path, sep=sep, index_col=0)
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise DataError(
            f"{path.name} holds no cells or no genes",
            "the first column must be cell (or gene) names",
        )
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
    return adata


def as_anndata(data: ad.AnnData | str | Path, *, backed: bool = False) -> ad.AnnData:
    """Accept an AnnData or a path."""
    if isinstance(data, ad.AnnData):
        return data
    return read_data(data, backed=backed)
