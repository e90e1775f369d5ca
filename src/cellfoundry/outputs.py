"""Writing an ``AnnotationResult``: an annotated .h5ad, or a table of per-cell predictions.

``write_annotated_h5ad`` never loads the input's matrix when the result came from an .h5ad file:
the file is copied as bytes and only the per-cell outputs (obs, obsm, uns) are written into the
copy. Those outputs are exactly what ``AnnotationResult.to_adata`` puts into an AnnData, so the
file equals the in-memory path's ``result.to_adata(read_h5ad(input)).write_h5ad(out)``.
``write_predictions`` writes ``AnnotationResult.to_frame()`` as CSV, TSV or parquet.

Every output is written beside its path and renamed once complete (``data.atomic``): a crash,
a full disk or Ctrl-C leaves the file that was there before, never a half-written one. An
input annotated in place is copied and the copy replaces it (the input needs its size again
in free space for that moment), so an interruption never damages it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import pandas as pd

from cellfoundry.data.atomic import written_atomically
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


def _same_or_inside(path: Path, other: Path) -> bool:
    return path == other or (other.is_dir() and other in path.parents)


def check_outputs(
    outputs: Iterable[str | Path],
    inputs: Iterable[str | Path] = (),
    *,
    in_place: tuple[str | Path, str | Path] | None = None,
    folders: bool = False,
) -> None:
    """Refuse, before any work is done, output paths that would destroy an input or cannot be
    written: an output that is one of the ``inputs`` (data, model folder, label map ...) or
    lies inside an input folder, two outputs at one path, and an output whose folder cannot be
    created or written (the nearest existing folder is probed with a temporary file).

    ``in_place`` is ``(output, input)`` when that one output may be that input: an annotated
    ``.h5ad`` written into the ``.h5ad`` it was read from (only obs, obsm and uns entries are
    replaced). ``folders=True``: the outputs are folders (a model artifact, a report), so an
    existing file at the path is refused instead. An existing output that is not an input is
    replaced.
    """
    ins = [Path(p).resolve() for p in inputs]
    allowed = (Path(in_place[0]).resolve(), Path(in_place[1]).resolve()) if in_place else None
    seen: set[Path] = set()
    for out in outputs:
        target = Path(out).resolve()
        if target in seen:
            raise DataError(
                f"two outputs are written to {out}", "give each output its own file name"
            )
        seen.add(target)
        hit = next((i for i in ins if _same_or_inside(target, i)), None)
        if hit is not None and (target, hit) != allowed:
            where = "is" if hit == target else f"is inside {hit.name}, which is"
            raise DataError(
                f"the output {out} {where} an input of this command",
                "write the output to a new path outside the inputs; inputs are never overwritten",
                code="output_is_input",
            )
        if folders and target.is_file():
            raise DataError(
                f"the output folder {out} is an existing file", "give a folder path for the output"
            )
        if not folders and target.is_dir():
            raise DataError(f"the output {out} is a folder", "give a file name for the output")
        folder = target if folders else target.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise DataError(
                f"cannot write {out}: {folder} is a file, not a folder",
                "write the output into a folder (or a new folder's path)",
                code="output_not_writable",
            )
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".cellfoundry-probe-"):
                pass
        except OSError as exc:
            raise DataError(
                f"cannot write {out}: the folder {folder} is not writable ({exc.strerror})",
                "write the output into a folder you can write to",
                code="output_not_writable",
            ) from None


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """OS errors while an output is written (no space, no permission) as a ``DataError``."""
    try:
        yield
    except OSError as exc:
        raise DataError(
            f"could not write {path}: {exc.strerror or exc}",
            "check that the folder is writable and the disk has space, then run again",
            code="output_not_writable",
        ) from None


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
    frame = result.to_frame()
    with _writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        with written_atomically(out) as tmp:
            if fmt == "parquet":
                frame.to_parquet(tmp)
            else:
                frame.to_csv(tmp, sep="," if fmt == "csv" else "\t")
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
        with _writing(out_p):
            out_p.parent.mkdir(parents=True, exist_ok=True)
            with written_atomically(out_p) as tmp:
                result.to_adata().write_h5ad(tmp, compression=compression)
        return out_p
    adata = result.adata
    obs = adata.obs if adata is not None and adata.n_obs == result.n_cells else read_obs(src)
    # whatever to_adata adds (obs columns, obsm, uns) is what gets written: one definition
    annotated = result.to_adata(ad.AnnData(obs=pd.DataFrame(obs).copy()))
    if adata is not None and adata.isbacked and out_p.exists() and src.resolve() == out_p.resolve():
        close_backed(adata)  # annotating in place: the read-only handles must go first
    with _writing(out_p):
        out_p.parent.mkdir(parents=True, exist_ok=True)
        with written_atomically(out_p) as tmp:  # in place too: the input is replaced, not edited
            copy_h5ad(src, tmp)
            write_results(
                tmp,
                obs=annotated.obs,
                obsm=dict(annotated.obsm),
                uns=dict(annotated.uns),
                compression=compression,
            )
    return out_p
