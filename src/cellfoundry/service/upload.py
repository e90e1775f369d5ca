"""Streaming multipart upload: written to disk chunk by chunk, hashed and size-limited on the way.

The partial file (``storage/tmp/*.part``) is flushed after every chunk received, so its
modification time is that of the last data received: the reaper's sweep of ``storage/tmp``
(``FileStorage.sweep_tmp``, after ``tmp_sweep_after_s``) removes an upload only once its
client has sent nothing for that long. An upload whose file was swept that way is refused with
409 ``upload_expired`` (at its next chunk), never finished from a file that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from cellfoundry.errors import (
    BadRequestError,
    CellfoundryError,
    ConflictError,
    RequestTimeoutError,
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


def _duration(seconds: float) -> str:
    """``seconds`` in words: '6 hours', '90 minutes', '0.5 seconds'."""
    n, unit = seconds, "second"
    if seconds >= 3600:
        n, unit = seconds / 3600, "hour"
    elif seconds >= 60:
        n, unit = seconds / 60, "minute"
    n = round(n, 1)
    return f"{n:g} {unit}{'' if n == 1 else 's'}"


def upload_expired(idle_limit_s: float) -> ConflictError:
    """409 ``upload_expired``: the partial file of an upload was removed by the sweep of
    ``storage/tmp`` because its client sent nothing for ``idle_limit_s`` seconds."""
    idle = _duration(idle_limit_s)
    return ConflictError(
        f"the upload was idle (no data received) for more than {idle}, and what it had sent "
        "was discarded",
        f"start the upload again from the beginning (POST /upload) and send the file without "
        f"pausing for {idle} or more",
        code="upload_expired",
    )


def upload_idle(timeout_s: float) -> RequestTimeoutError:
    """408 ``upload_idle``: the client sent nothing for ``timeout_s`` seconds mid-upload."""
    idle = _duration(timeout_s)
    return RequestTimeoutError(
        f"no data arrived for {idle} in the middle of the upload; it was stopped and what it "
        "had sent was discarded",
        "upload the file again from the beginning (POST /upload); on a slow or unsteady link "
        "ask the operator to raise CELLFOUNDRY_UPLOAD_IDLE_TIMEOUT_S",
        code="upload_idle",
    )


def _discard(out: BinaryIO, tmp: str) -> None:
    """Close and remove an upload's partial file; one the sweep removed already is left alone
    (its name may be another upload's by now)."""
    swept = os.fstat(out.fileno()).st_nlink == 0
    with contextlib.suppress(OSError):  # what it could not write (a full disk) is dropped
        out.close()
    if not swept:
        Path(tmp).unlink(missing_ok=True)


async def receive_upload(
    request: Request,
    tmp_dir: Path,
    limit: int,
    *,
    swept_after_s: float,
    idle_timeout_s: float = 0.0,
    field: str = "file",
) -> Uploaded:
    """Stream the multipart field ``field`` of ``request`` into a temporary file under ``tmp_dir``
    (409 ``upload_expired`` when the tmp sweep removed it, after ``swept_after_s`` without data;
    408 ``upload_idle`` as soon as the client has sent nothing for ``idle_timeout_s``, if set)."""
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
    chunks = aiter(request.stream())
    try:
        while True:
            try:  # a client silent for idle_timeout_s (0: never timed out) is refused
                async with asyncio.timeout(idle_timeout_s or None):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise upload_idle(idle_timeout_s) from None
            parser.write(chunk)
            if problems:
                raise problems[0]
            out.flush()  # the file's mtime is the last data's: only an idle upload is swept
            if os.fstat(out.fileno()).st_nlink == 0:  # swept while its client was idle
                raise upload_expired(swept_after_s)
        parser.finalize()
        os.utime(out.fileno())  # received: not idle while it is checked (register_upload)
    except CellfoundryError:
        _discard(out, tmp)
        raise
    except Exception as exc:
        _discard(out, tmp)
        raise BadRequestError(
            "the multipart body could not be parsed",
            f"send a well-formed multipart/form-data body with the field '{field}'",
            code="bad_multipart",
        ) from exc
    out.close()
    if not state.done:
        Path(tmp).unlink(missing_ok=True)
        raise CellfoundryError(
            f"no multipart field named '{field}' with a file",
            f"send the file as the multipart field '{field}'",
            code="missing_file",
        )
    raw_name = str(state.name or "")
    name = safe_filename(raw_name)
    if not allowed_name(name):
        Path(tmp).unlink(missing_ok=True)
        raise UnsupportedMediaError(
            f"unsupported file type: {raw_name or '(no file name)'}",
            "upload .h5ad, 10x .h5 or .csv/.tsv (optionally .gz) with its extension in the file name",
            code="unsupported_type",
        )
    if size == 0:
        Path(tmp).unlink(missing_ok=True)
        raise CellfoundryError(
            "the uploaded file is empty", "upload the actual data file", code="empty_file"
        )
    return Uploaded(path=Path(tmp), filename=name, size=size, sha256=digest.hexdigest())
