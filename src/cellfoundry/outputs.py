"""Writing an ``AnnotationResult``: an annotated .h5ad, or a table of per-cell predictions.

``write_annotated_h5ad`` never loads the input's matrix when the result came from an .h5ad file:
the file is copied as bytes and only the per-cell outputs (obs, obsm, uns) are written into the
copy. Those outputs are exactly what ``AnnotationResult.to_adata`` puts into an AnnData, so the
file equals the in-memory path's ``result.to_adata(read_h5ad(input)).write_h5ad(out)``.
``write_predictions`` writes ``AnnotationResult.to_frame()`` as CSV, TSV or parquet.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import pandas as pd

from cellfoundry.data.h5ad_copy import copy_h5ad, read_obs, write_results
from cellfoundry.data.io import close_backed
from cellfoundry.errors import DataError
from cellfoundry.result import AnnotationResult

TABLE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".parquet")


def table_format(path: str | Path) -> str | None:
    """``csv``, ``tsv`` or ``parquet`` for a predictions-table path; None for anything else."""
    name = Path(path).name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith((".tsv", ".tsv.gz", ".txt")):
        return "tsv"
    return None


def write_predictions(
    result: AnnotationResult, path: str | Path, *, fmt: str | None = None
) -> Path:
    """One row per cell (``result.to_frame()``) as CSV, TSV or parquet (``fmt``, else the suffix)."""
    out = Path(path)
    fmt = fmt or table_format(out)
    if fmt is None:
        raise DataError(
            f"cannot tell the table format of {out.name}",
            f"end the file name with one of {', '.join(TABLE_SUFFIXES)}",
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    frame = result.to_frame()
    if fmt == "parquet":
        frame.to_parquet(out)
    else:
        frame.to_csv(out, sep="," if fmt == "csv" else "\t")
    return out


def _source_file(result: AnnotationResult) -> Path | None:
    adata = result.adata
    if adata is not None and adata.isbacked and adata.filename is not None:
        return Path(adata.filename)
    return None


def write_annotated_h5ad(
    result: AnnotationResult,
    out: str | Path,
    *,
    source: str | Path | None = None,
    compression: str | None = "gzip",
) -> Path:
    """Write the annotated dataset to ``out`` (.h5ad).

    ``source`` is the .h5ad that was annotated (default: the backed file the result was computed
    from). With a source file, its bytes are copied and only obs / obsm / uns entries are written,
    so memory holds the per-cell outputs only; without one, the in-memory AnnData is written.
    """
    out_p = Path(out)
    src = Path(source) if source is not None else _source_file(result)
    if src is None:
        out_p.parent.mkdir(parents=True, exist_ok=True)
        result.to_adata().write_h5ad(out_p, compression=compression)
        return out_p
    adata = result.adata
    obs = adata.obs if adata is not None and adata.n_obs == result.n_cells else read_obs(src)
    # whatever to_adata adds (obs columns, obsm, uns) is what gets written: one definition
    annotated = result.to_adata(ad.AnnData(obs=pd.DataFrame(obs).copy()))
    if adata is not None and adata.isbacked and out_p.exists() and src.resolve() == out_p.resolve():
        close_backed(adata)  # annotating in place: the read-only handles must go first
    copy_h5ad(src, out_p)
    write_results(
        out_p,
        obs=annotated.obs,
        obsm=dict(annotated.obsm),
        uns=dict(annotated.uns),
        compression=compression,
    )
    return out_p
