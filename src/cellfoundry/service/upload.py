"""Streaming multipart upload: written to disk chunk by chunk, hashed and size-limited on the way."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from cellfoundry.errors import (
    BadRequestError,
    CellfoundryError,
    TooLargeError,
    UnsupportedMediaError,
)
from cellfoundry.store.storage import safe_filename

ALLOWED_SUFFIXES = (
    ".h5ad",
    ".h5",
    ".hdf5",
    ".csv",
    ".tsv",
    ".txt",
    ".csv.gz",
    ".tsv.gz",
    ".txt.gz",
)


@dataclass
class _PartState:
    name: str | None = None
    header_field: bytes = b""
    header_value: bytes = b""
    headers: dict[bytes, bytes] = dc_field(default_factory=dict)
    in_file: bool = False
    done: bool = False


@dataclass
class Uploaded:
    path: Path
    filename: str
    size: int
    sha256: str


def allowed_name(name: str) -> bool:
    low = name.lower()
    return any(low.endswith(s) for s in ALLOWED_SUFFIXES)


async def receive_upload(
    request: Request, tmp_dir: Path, limit: int, field: str = "file"
) -> Uploaded:
    """Stream the multipart field ``field`` of ``request`` into a temporary file under ``tmp_dir``."""
    ctype, opts = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in opts:
        raise UnsupportedMediaError(
            "the upload must be multipart/form-data",
            f"send the file as the multipart field '{field}' (curl -F {field}=@data.h5ad)",
            code="not_multipart",
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise TooLargeError(
            f"the upload ({int(declared):,} bytes) exceeds the limit of {limit:,} bytes",
            "upload a smaller file or raise CELLFOUNDRY_UPLOAD_LIMIT_MB",
            code="too_large",
        )
    state = _PartState()
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, suffix=".part")
    out = os.fdopen(fd, "wb")
    digest = hashlib.sha256()
    size = 0
    problems: list[CellfoundryError] = []

    def on_part_begin() -> None:
        state.headers = {}
        state.in_file = False

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state.header_value += data[start:end]

    def on_header_end() -> None:
        state.headers[state.header_field.lower()] = state.header_value
        state.header_field = b""
        state.header_value = b""

    def on_headers_finished() -> None:
        _, disp = parse_options_header(state.headers.get(b"content-disposition", b""))
        if disp.get(b"name", b"").decode(errors="replace") == field and not state.done:
            state.in_file = True
            state.name = disp.get(b"filename", b"").decode(errors="replace")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        nonlocal size
        if not state.in_file or problems:
            return
        chunk = data[start:end]
        size += len(chunk)
        if size > limit:
            problems.append(
                TooLargeError(
                    f"the upload exceeds the limit of {limit:,} bytes",
                    "upload a smaller file or raise CELLFOUNDRY_UPLOAD_LIMIT_MB",
                    code="too_large",
                )
            )
            return
        digest.update(chunk)
        out.write(chunk)

    def on_part_end() -> None:
        if state.in_file:
            state.in_file = False
            state.done = True

    parser = MultipartParser(
        opts[b"boundary"],
        callbacks={  # type: ignore[arg-type]
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if problems:
                raise problems[0]
        parser.finalize()
    except CellfoundryError:
        out.close()
        os.unlink(tmp)
        raise
    except Exception as exc:
        out.close()
        os.unlink(tmp)
        raise BadRequestError(
            "the multipart body could not be parsed",
            f"send a well-formed multipart/form-data body with the field '{field}'",
            code="bad_multipart",
        ) from exc
    out.close()
    if not state.done:
        os.unlink(tmp)
        raise CellfoundryError(
            f"no multipart field named '{field}' with a file",
            f"send the file as the multipart field '{field}'",
            code="missing_file",
        )
    raw_name = str(state.name or "")
    name = safe_filename(raw_name)
    if not allowed_name(name):
        os.unlink(tmp)
        raise UnsupportedMediaError(
            f"unsupported file type: {raw_name or '(no file name)'}",
            "upload .h5ad, 10x .h5 or .csv/.tsv (optionally .gz) with its extension in the file name",
            code="unsupported_type",
        )
    if size == 0:
        os.unlink(tmp)
        raise CellfoundryError(
            "the uploaded file is empty", "upload the actual data file", code="empty_file"
        )
    return Uploaded(path=Path(tmp), filename=name, size=size, sha256=digest.hexdigest())
