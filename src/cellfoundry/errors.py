"""Errors that tell the user what to fix: one hierarchy for the library, the CLI and the API.

Every error carries a ``code`` (stable, machine-readable), a ``message`` (what is wrong), a
``hint`` (how to fix it) and the HTTP ``status`` the API answers it with.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path


class CellfoundryError(Exception):
    """Base error: ``message`` says what is wrong, ``hint`` says how to fix it."""

    code = "error"
    status = 422

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        code: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code:
            self.code = code
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return f"{self.message} (fix: {self.hint})" if self.hint else self.message

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


class CellfoundryWarning(UserWarning):
    """Something the user should know that does not stop the work (the CLI prints 'warning: ...')."""


class DataError(CellfoundryError):
    """The input data cannot be used as it is."""

    code = "invalid_data"


class CoverageError(DataError):
    """Too few of the model's genes are present in the query."""

    code = "low_gene_coverage"


class ModelError(CellfoundryError):
    """A model or checkpoint cannot be loaded or used."""

    code = "invalid_model"


class BadRequestError(CellfoundryError):
    """The request itself is malformed (400)."""

    code = "bad_request"
    status = 400


class UnauthorizedError(CellfoundryError):
    """No valid API key (401)."""

    code = "unauthorized"
    status = 401


class NotFoundError(CellfoundryError):
    """The thing asked for does not exist, or is not the caller's (404)."""

    code = "not_found"
    status = 404


class ConflictError(CellfoundryError):
    """The thing exists but is not in a state that allows the request (409)."""

    code = "conflict"
    status = 409


class RequestTimeoutError(CellfoundryError):
    """The client stopped sending a request before it was complete (408)."""

    code = "request_timeout"
    status = 408


class TooLargeError(CellfoundryError):
    """The request or upload exceeds a limit (413)."""

    code = "too_large"
    status = 413


class TooManyRequestsError(CellfoundryError):
    """A rate limit or quota is reached for now (429); ``retry_after_s`` when known."""

    code = "too_many_requests"
    status = 429

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, hint, code)
        self.retry_after_s = retry_after_s


class UnsupportedMediaError(CellfoundryError):
    """The body or file type is not one the endpoint takes (415)."""

    code = "unsupported_type"
    status = 415


class UnavailableError(CellfoundryError):
    """A dependency (queue, model) is not available right now (503)."""

    code = "unavailable"
    status = 503


class UnsafeFileError(DataError):
    """A file that reaches outside itself (HDF5 external storage, links, virtual datasets)."""

    code = "unsafe_file"
    status = 422


class FileLimitError(DataError):
    """A file that declares or needs more than the intake limits allow (shape, size, columns)."""

    code = "file_too_large"
    status = 413


_PATH_CHARS = r"[^\s'\"()\[\]{}<>,;]"
_SERVER_TOPS = ("/tmp", "/home", "/root", "/var", "/usr", "/opt", "/etc", "/proc", "/srv", "/mnt")


def redact_paths(text: str, roots: Iterable[str | Path] = ()) -> str:
    """``text`` with server paths (under ``roots`` or the usual top folders) cut to their last
    part, so a message shown to a client never reveals where the server keeps its files."""
    prefixes = sorted(
        {str(Path(r)) for r in roots if str(r) not in ("", "/")} | set(_SERVER_TOPS),
        key=len,
        reverse=True,
    )
    pattern = re.compile(
        "(?:"
        + "|".join(re.escape(p) for p in prefixes)
        + f")(?!{_PATH_CHARS}(?<!/))(?:/{_PATH_CHARS}*)*"
    )

    def cut(m: re.Match[str]) -> str:
        name = m.group(0).rstrip("/").rsplit("/", 1)[-1]
        return name if name and m.group(0).count("/") > 1 else "<server path>"

    return pattern.sub(cut, text)


#: an absolute POSIX path of two or more parts, not inside a URL (``scheme://host/...``)
_ANY_PATH = re.compile(r"(?<![\w.:/~%-])/(?:[\w.@+~%-]+/)+[\w.@+~%-]*")
#: text that only a program should read: a traceback, SQL, an exception's repr or its class
_INTERNAL = re.compile(
    r"Traceback \(most recent call last\)|File \"[^\"]*\", line \d+"
    r"|\[SQL:|\bsqlalche\.me\b|\bpsycopg\b|\bsqlite3\.|\bsqlalchemy\."
    r"|\b(?:SELECT|UPDATE|DELETE|INSERT|CREATE|DROP|ALTER)\b[^.;]*?\b(?:FROM|INTO|SET|TABLE|WHERE)\b"
    r"|\b[A-Z]\w*(?:Error|Exception|Warning)(?::|\(['\"]|\b(?= at 0x))"
    r"|<[\w.]+ object at 0x[0-9a-f]+>"
)


def public_text(text: str, roots: Iterable[str | Path] = (), keep: Iterable[str] = ()) -> str:
    """``text`` for a client: :func:`redact_paths`, then every other absolute path cut to its
    last part too, except API paths (first part in ``keep``, e.g. ``/runs/{run_id}``)."""
    kept = set(keep)

    def cut(m: re.Match[str]) -> str:
        path = m.group(0)
        if path.split("/")[1] in kept:
            return path
        name = path.rstrip("/").rsplit("/", 1)[-1]
        return name or "<server path>"

    return redact_paths(_ANY_PATH.sub(cut, text), roots)  # then roots with odd characters


def looks_internal(text: str) -> bool:
    """Whether ``text`` holds a traceback, SQL or exception text (never shown to a client)."""
    return bool(_INTERNAL.search(text))
