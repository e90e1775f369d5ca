"""What is wrong with a JSON request body, said the same way by every route that takes one.

``POST /submit`` (FastAPI's body parsing, behind ``JsonBodyRoute``) and ``POST /predict`` (its
own parser, ``predict_body``) both refuse a body that is not JSON with ``body_error``'s answer:
where the JSON breaks (line, column, character offset) and what the parser expected, or the
offset of the first byte that is not UTF-8, or that the body is empty. It runs only once a body
has been refused (the error path), never on an accepted body.

Both take UTF-8 only (RFC 8259 §8.1: JSON exchanged between systems MUST be UTF-8): a body in
UTF-16 or UTF-32 is refused with 422 ``body_not_utf8`` (``wide_encoding_error``; FastAPI's
parser, Python's ``json.loads``, would read it, so ``JsonBodyRoute`` looks at the first four
bytes of each body first). A leading UTF-8 byte order mark is ignored by both, as §8.1 lets a
parser do (``json.loads`` does; ``parse_predict_body`` strips it, once its fast path refused
the body).
"""

from __future__ import annotations

import codecs
import email.message
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import params
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException  # FastAPI's body parsing raises starlette's
from starlette.requests import Request
from starlette.responses import Response

from cellfoundry.errors import CellfoundryError, UnsupportedMediaError

_BOM = "\ufeff"
#: the hint of ``body_not_utf8``
UTF8_HINT = "encode the body as UTF-8 (JSON bodies must be UTF-8, not latin-1, cp1252 or UTF-16)"
#: ``json.detect_encoding``'s names of the encodings JSON may not be sent in
_WIDE = {
    "utf-16": "UTF-16",
    "utf-16-be": "UTF-16BE",
    "utf-16-le": "UTF-16LE",
    "utf-32": "UTF-32",
    "utf-32-be": "UTF-32BE",
    "utf-32-le": "UTF-32LE",
}
#: a body each JSON route takes, for the hints
EXAMPLES = {
    "/submit": '{"dataset_id": "...", "model_id": "..."}',
    "/predict": '{"expression": {"CD19": 8.5, "MS4A1": 9.2}}',
}


def example_of(path: str) -> str:
    """A body ``path`` takes (for a hint)."""
    return EXAMPLES.get(path, "{...} (the schema is at /docs)")


def wide_encoding_error(raw: bytes) -> CellfoundryError | None:
    """422 ``body_not_utf8`` when ``raw`` is a JSON text in UTF-16 or UTF-32, told as
    ``json.loads`` tells them, by the first four bytes (a byte order mark, or the NUL bytes of
    an ASCII first character: a JSON text begins with one); else None."""
    encoding = json.detect_encoding(raw[:4])
    if encoding not in _WIDE:
        return None
    bom = raw.startswith((codecs.BOM_UTF32_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF16))
    return CellfoundryError(
        f"the body is {_WIDE[encoding]}, not UTF-8: it begins with the bytes {raw[:4].hex(' ')}"
        + (" (a byte order mark)" if bom else ""),
        UTF8_HINT,
        "body_not_utf8",
    )


def body_error(raw: bytes, path: str) -> CellfoundryError | None:
    """Why ``raw``, the body of a request to ``path``, is not a JSON text (422, codes
    ``empty_body``, ``body_not_utf8``, ``invalid_json``); None when Python's JSON parser reads
    it as UTF-8 (after a byte order mark, which is ignored)."""
    send = f"send a JSON object such as {example_of(path)}"
    if not raw.strip():
        return CellfoundryError(
            "the request body is empty",
            f"{send} with the header 'Content-Type: application/json'",
            "empty_body",
        )
    wide = wide_encoding_error(raw)
    if wide is not None:
        return wide
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return CellfoundryError(
            f"the body is not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start} "
            f"({exc.reason})",
            UTF8_HINT,
            "body_not_utf8",
        )
    bom = text.startswith(_BOM)
    try:
        json.loads(text[1:] if bom else text)
    except json.JSONDecodeError as exc:
        col = exc.colno + (bom and exc.lineno == 1)  # positions in the body as sent
        where = f"at line {exc.lineno}, column {col} (char {exc.pos + bom})"
        fix = "check for a missing or extra comma, quote or bracket there"
        if "\x00" in text:
            fix = "the body holds NUL characters: is it UTF-16 or UTF-32? encode it as UTF-8"
        return CellfoundryError(
            f"the body is not valid JSON: {exc.msg} {where}", f"{fix}; {send}", "invalid_json"
        )
    except RecursionError:
        return CellfoundryError(
            "the body nests arrays or objects too deeply to be read",
            f"{send}; a request body needs only a few levels",
            "invalid_json",
        )
    return None


def is_json_type(content_type: str | None) -> bool:
    """Whether FastAPI reads a body of this ``Content-Type`` as JSON: ``application/json`` or
    ``application/*+json`` (parameters such as ``charset`` aside)."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def content_type_error(content_type: str | None, path: str) -> UnsupportedMediaError:
    """415 ``not_json``: the body of ``path`` was sent with another (or no) ``Content-Type``."""
    media = (content_type or "").split(";")[0].strip()[:100]  # without a boundary, a charset
    sent = f"as '{media}'" if media else "without a Content-Type"
    if media.lower() in ("multipart/form-data", "application/x-www-form-urlencoded"):
        sent += " (a form)"
    return UnsupportedMediaError(
        f"the body was sent {sent}; {path} takes a JSON object",
        "send the body as JSON with the header 'Content-Type: application/json' "
        "(curl: -H 'Content-Type: application/json' -d @body.json; a plain -d sends a form)",
        code="not_json",
    )


class JsonBodyRoute(APIRoute):
    """An ``APIRoute`` whose JSON body, when FastAPI cannot read it, is refused with what to fix:
    an empty body, a body sent with another ``Content-Type`` (415) or one that is not JSON
    (``body_error``), instead of FastAPI's "Field required", "Input should be a valid
    dictionary", "JSON decode error" or "There was an error parsing the body", and at the same
    point (FastAPI's own refusals are translated, so a JSON body that does not parse is refused
    before the dependencies, the others after them: an empty body without a key is still a 401).
    On a body FastAPI reads, only its first four bytes are looked at: one in UTF-16 or UTF-32,
    which FastAPI's parser would read, is refused (422 ``body_not_utf8``, before the
    dependencies, as a body that does not parse). Routes without a JSON body (none, or a form)
    are left alone.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None or isinstance(self.body_field.field_info, params.Form):
            return handler
        path = self.path

        async def checked(request: Request) -> Response:
            wide = wide_encoding_error(await request.body())  # kept: FastAPI reads it next
            if wide is not None and _sent_as_json(request):
                raise wide
            try:
                return await handler(request)
            except HTTPException as exc:
                # FastAPI's 400 for a JSON body its parser failed on other than by a JSON
                # syntax error: not UTF-8, nested too deeply
                if exc.status_code != 400 or not _sent_as_json(request):
                    raise
                raise body_error(await request.body(), path) or exc from None
            except RequestValidationError as exc:
                raw = await request.body()  # kept on the request: the bytes FastAPI read
                errors = exc.errors()
                if any(e["type"] == "json_invalid" for e in errors):  # a JSON syntax error
                    raise body_error(raw, path) or exc from None
                # no body, or one FastAPI did not read as JSON: refused with the other fields'
                # errors, after the dependencies (a missing key is still a 401)
                if (raw and _sent_as_json(request)) or not any(
                    tuple(e["loc"]) == ("body",) for e in errors
                ):
                    raise
                if not raw:
                    raise body_error(raw, path) or exc from None
                raise content_type_error(request.headers.get("content-type"), path) from None

        return checked


def _sent_as_json(request: Request) -> bool:
    return is_json_type(request.headers.get("content-type"))
