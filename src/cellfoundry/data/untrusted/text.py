"""Checks of text inputs (CSV/TSV, 10x MEX) by streaming them once, without parsing values.

Gzip is decompressed chunk by chunk with a cap on the decompressed size and on the ratio of
decompressed to compressed bytes, so a ratio bomb is stopped after a few megabytes. Lines are
counted and their length bounded; a table's header gives its number of columns.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cellfoundry.data.io import table_separator
from cellfoundry.data.untrusted.limits import IntakeLimits
from cellfoundry.errors import DataError, FileLimitError, UnsafeFileError

CHUNK = 1024 * 1024
SMALLER_HINT = "upload a smaller dataset (split it by sample), or raise the intake limits"


def _size(n: int) -> str:
    if n >= 1024**3:
        return f"{n / 1024**3:,.1f} GiB"
    return f"{n / 1024**2:,.1f} MiB"


def stream_bytes(path: Path, limits: IntakeLimits) -> Iterator[bytes]:
    """The file's bytes (decompressed when the name ends in .gz), refusing sizes and ratios beyond limits."""
    gz = path.name.lower().endswith(".gz")
    out_total = 0
    in_total = 0
    with open(path, "rb") as fh:
        if not gz:
            while chunk := fh.read(CHUNK):
                out_total += len(chunk)
                _check_total(path, out_total, limits)
                yield chunk
            return
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = b""
        while True:
            if not pending:
                pending = fh.read(CHUNK)
                in_total += len(pending)
                if not pending:
                    break
            try:
                piece = d.decompress(pending, CHUNK)
            except zlib.error as exc:
                raise DataError(
                    f"{path.name} is not a valid gzip file ({exc})",
                    "upload the file as written by gzip, or without the .gz ending if it is plain text",
                ) from None
            pending = d.unconsumed_tail
            if d.eof:  # a multi-member gzip file: start over on what follows
                rest = d.unused_data
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                pending = rest + pending
            if piece:
                out_total += len(piece)
                _check_total(path, out_total, limits)
                ratio = out_total / max(in_total - len(pending), 1)
                if out_total > limits.gzip_ratio_floor_bytes and ratio > limits.max_gzip_ratio:
                    raise FileLimitError(
                        f"{path.name} expands more than {limits.max_gzip_ratio:,.0f} times when "
                        f"decompressed ({_size(out_total)} from {_size(in_total)} so far); "
                        "it looks like a decompression bomb",
                        "upload the data without this padding, or uncompressed",
                    )
                yield piece
        if not d.eof and out_total:
            tail = d.flush()
            if tail:
                out_total += len(tail)
                _check_total(path, out_total, limits)
                yield tail


def _check_total(path: Path, total: int, limits: IntakeLimits) -> None:
    if total > limits.max_text_bytes:
        raise FileLimitError(
            f"{path.name} holds more than {_size(limits.max_text_bytes)} of text",
            SMALLER_HINT,
        )


@dataclass
class TextFacts:
    n_lines: int
    first_line: bytes  # without its line ending; bounded by ``max_line_bytes``


def scan_lines(path: Path, limits: IntakeLimits) -> TextFacts:
    """Count lines (bounding each line's length) and keep the first one, streaming once."""
    n_lines = 0
    cur = 0  # length of the line being read
    head: list[bytes] = []
    first: bytes | None = None
    for chunk in stream_bytes(path, limits):
        nl = chunk.count(b"\n")
        if first is None:
            if nl:
                head.append(chunk[: chunk.index(b"\n")])
                first = b"".join(head).rstrip(b"\r")
                head = []
            else:
                head.append(chunk)
        n_lines += nl
        cur = len(chunk) - chunk.rfind(b"\n") - 1 if nl else cur + len(chunk)
        if cur > limits.max_line_bytes:
            raise _long_line(path, limits)
    if cur:
        n_lines += 1
    if first is None:
        first = b"".join(head).rstrip(b"\r")
    return TextFacts(n_lines=n_lines, first_line=first)


def _long_line(path: Path, limits: IntakeLimits) -> FileLimitError:
    return FileLimitError(
        f"{path.name} has a line longer than {_size(limits.max_line_bytes)}",
        "upload a table with one cell per line and at most the limit of genes as columns",
    )


def check_table(path: Path, sep: str, limits: IntakeLimits) -> tuple[int, int]:
    """Rows and columns of a CSV/TSV (header and index column included), refused beyond limits;
    ``sep`` is the extension's separator, and the header line's own is used as the reader does."""
    facts = scan_lines(path, limits)
    sep = table_separator(facts.first_line.decode("utf-8", errors="replace"), sep)
    n_columns = facts.first_line.count(sep.encode()) + 1
    if n_columns > limits.max_columns:
        raise FileLimitError(
            f"{path.name} has {n_columns:,} columns; the limit is {limits.max_columns:,}",
            "upload cells as rows and at most the limit of genes as columns, or an .h5ad file",
        )
    rows, cols = max(facts.n_lines - 1, 0), n_columns - 1
    if rows > limits.max_cells or rows * max(cols, 1) > limits.max_table_values:
        raise FileLimitError(
            f"{path.name} holds {rows:,} rows x {cols:,} columns; tables are read as dense "
            f"numbers and the limits are {limits.max_cells:,} rows and "
            f"{limits.max_table_values:,} values",
            "upload large data as .h5ad (sparse), or split the table",
        )
    return rows, cols


def _one(folder: Path, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for name in (stem, stem + ".gz"):
            p = folder / name
            if p.is_symlink():
                raise UnsafeFileError(
                    f"{p.name} in {folder.name} is a symbolic link; refused",
                    "copy the real files into the folder",
                )
            if p.is_file():
                return p
    return None


def check_mex(folder: Path, limits: IntakeLimits) -> tuple[int, int, int]:
    """(genes, cells, non-zeros) declared by a 10x MEX folder, refused beyond limits."""
    mtx = _one(folder, ("matrix.mtx",))
    feats = _one(folder, ("features.tsv", "genes.tsv"))
    barcodes = _one(folder, ("barcodes.tsv",))
    if mtx is None or feats is None or barcodes is None:
        raise DataError(
            f"{folder.name} lacks matrix.mtx, features.tsv/genes.tsv or barcodes.tsv",
            "a 10x MEX folder holds matrix.mtx[.gz], features.tsv[.gz] and barcodes.tsv[.gz]",
        )
    header = _mtx_header(mtx, limits)
    genes, cells, nnz = header
    if genes > limits.max_genes or cells > limits.max_cells or nnz > limits.max_nnz:
        raise FileLimitError(
            f"{mtx.name} declares {genes:,} genes x {cells:,} cells with {nnz:,} non-zeros; "
            f"the limits are {limits.max_genes:,} genes, {limits.max_cells:,} cells and "
            f"{limits.max_nnz:,} non-zeros",
            SMALLER_HINT,
        )
    if nnz > genes * cells:
        raise DataError(
            f"{mtx.name} declares {nnz:,} non-zeros in a {genes:,} x {cells:,} matrix",
            "the MatrixMarket header is corrupt; write the matrix again",
        )
    for p, expected, what in ((feats, genes, "genes"), (barcodes, cells, "cells")):
        n = scan_lines(p, limits).n_lines
        if n != expected:
            raise DataError(
                f"{p.name} has {n:,} lines but {mtx.name} declares {expected:,} {what}",
                "use the three files of one 10x output folder",
            )
    lines = scan_lines(mtx, limits).n_lines
    if lines > nnz + 1000:  # header + comments + one line per non-zero
        raise DataError(
            f"{mtx.name} has {lines:,} lines but declares {nnz:,} non-zeros",
            "the MatrixMarket file is corrupt; write the matrix again",
        )
    return genes, cells, nnz


def _mtx_header(mtx: Path, limits: IntakeLimits) -> tuple[int, int, int]:
    buf = b""
    for chunk in stream_bytes(mtx, limits):
        buf += chunk
        *complete, buf = buf.split(b"\n")
        for line in complete:
            if line.startswith(b"%") or not line.strip():
                continue
            parts = line.split()
            if len(parts) == 3 and all(p.isdigit() for p in parts):
                return int(parts[0]), int(parts[1]), int(parts[2])
            raise _no_size_line(mtx)
        if len(buf) > limits.max_line_bytes:
            raise _long_line(mtx, limits)
    raise _no_size_line(mtx)


def _no_size_line(mtx: Path) -> DataError:
    return DataError(
        f"{mtx.name} has no MatrixMarket size line ('rows cols non-zeros')",
        "write the matrix with scipy.io.mmwrite or as 10x Cell Ranger does",
    )
