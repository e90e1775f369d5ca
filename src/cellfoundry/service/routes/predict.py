"""``POST /predict``: top-k labels per cell from a preloaded model, in real time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from pydantic_core import to_json
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from cellfoundry.errors import CellfoundryError, NotFoundError, TooLargeError, UnavailableError
from cellfoundry.service.deps import PlatformDep, user_of_authorization
from cellfoundry.service.json_body import body_error
from cellfoundry.service.platform import Platform
from cellfoundry.service.predict import LoadedModel, Prepared
from cellfoundry.service.predict_body import parse_predict_body
from cellfoundry.service.request_id import RAW_HEADER, assign_request_id
from cellfoundry.service.schemas import PredictPublic, PredictRequest, errors
from cellfoundry.service.security_headers import headers_for
from cellfoundry.store.model_records import visible_to
from cellfoundry.store.tables import ModelRecord, Visibility

router = APIRouter(tags=["predict"])

PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
    }
}


@router.post(
    "/predict",
    response_model=PredictPublic,
    responses=errors(401, 404, 413, 429, 503),
    openapi_extra=PREDICT_BODY,
)
async def predict(request: Request, platform: PlatformDep) -> Response:
    """Top-k labels per cell from a preloaded model; same preprocessing and answer as a batch run.

    Body: ``PredictRequest`` (parsed and validated in one pass by pydantic's JSON parser), at most
    ``predict_max_body_mb`` (413), ``predict_max_cells`` cells (413) and ``predict_max_genes``
    distinct gene names (422). Bodies over 64 KiB are parsed and computed off the event loop.
    The body is read as UTF-8 JSON whatever its ``Content-Type`` (not checked, for speed; send
    ``application/json``; RFC 8259 §8.1, a leading UTF-8 byte order mark is ignored); an empty
    body, one that is not UTF-8 (UTF-16 and UTF-32 included) or not valid JSON is refused with
    422 (``empty_body``, ``body_not_utf8`` with the offset of the first bad byte or the encoding
    the body is in, ``invalid_json`` with the line, column and character of the error), as on
    ``/submit``.
    """
    # (The usual bodies are read by orjson with the same checks, parse_predict_body; the others,
    # and so every refusal, by pydantic, whose refusal of a body that is not JSON is then said
    # by json_body.body_error. This docstring is the endpoint's OpenAPI description.)
    # In an app of create_app, PredictFastPath answers these requests before FastAPI's routing
    # (the same `answer`, less work per request); this route documents them in the schema.
    content = await answer(
        platform,
        request.headers.get("authorization", ""),
        request.headers.get("content-length", ""),
        request.stream(),
    )
    return Response(content, media_type="application/json")


async def answer(
    platform: Platform, authorization: str, declared_length: str, body: AsyncIterator[bytes]
) -> bytes:
    """The JSON answer of one /predict request; errors are raised (the app's handlers answer them).

    In order: the key (401), its rate (429), the body size (413), the body (422, 413), the model
    (404, 503), the computation (422).
    """
    uid = user_of_authorization(authorization, platform)
    platform.predict_limit.check(authorization)  # per key: 429
    st = platform.settings
    raw = await read_body(body, declared_length, int(st.predict_max_body_mb * 1024 * 1024))
    inline = len(raw) <= INLINE_BYTES
    if inline:
        req, cells = _parse(raw, st.predict_max_cells)
    else:
        req, cells = await run_in_threadpool(_parse, raw, st.predict_max_cells)
    pred = platform.predictor
    if req.model_id is None:
        loaded = pred.default_for(uid)
        if loaded is None:
            raise UnavailableError(
                "no model is loaded for real-time prediction",
                "register a baseline model and restart, or set CELLFOUNDRY_PRELOAD_MODELS",
                code="no_model_loaded",
            )
    else:
        loaded = pred.models.get(req.model_id)
        if loaded is not None and not loaded.visible_to(uid):
            raise _no_model(req.model_id)
    model = (
        loaded
        if loaded is not None
        else await run_in_threadpool(_load_on_demand, platform, str(req.model_id), uid)
    )

    def prepare() -> Prepared:
        return pred.prepare(
            model,
            cells,
            values=req.values,
            max_genes=st.predict_max_genes,
            species=req.species,
            panel=req.panel,
        )

    def respond(prep: Prepared, proba: np.ndarray) -> bytes:
        return to_json(pred.answer(prep, proba, top_k=req.top_k, threshold=req.threshold))

    if inline:  # on the event loop; a one-cell request's model call may be shared (batcher)
        prep = prepare()
        return respond(
            prep, await platform.batcher.proba(prep) if prep.batchable else pred.proba(prep)
        )

    def compute() -> bytes:
        prep = prepare()
        return respond(prep, pred.proba(prep))

    return await run_in_threadpool(compute)


#: the fixed headers of a /predict answer: its type, and the app's security headers
ANSWER_HEADERS = headers_for("/predict", [(b"content-type", b"application/json")])
INLINE_BYTES = 64 * 1024  # smaller bodies are parsed and answered on the event loop (cheaper)


async def read_body(body: AsyncIterator[bytes], declared: str, limit: int) -> bytes:
    """The request body, refused with 413 once it passes ``limit`` bytes (never read beyond)."""
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(f"the request body ({int(declared):,} bytes)", limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in body:
        size += len(chunk)
        if size > limit:
            raise _too_large("the request body", limit)
        chunks.append(chunk)
    return b"".join(chunks)


class PredictFastPath:
    """Pure ASGI, outermost: ``POST /predict`` answered by ``answer`` without FastAPI's routing,
    dependency resolution, middleware and request/response objects (the per-request cost that
    bounds throughput). Everything else passes through to ``app``.

    As for every other request: the request id (``assign_request_id``, as the middleware does)
    and the app's own exception handlers, 500 included, so bodies, codes and headers are those
    of the route.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    def handles(scope: Scope) -> bool:
        """Whether the request is a ``POST /predict`` (answered here)."""
        return scope["type"] == "http" and scope["path"] == "/predict" and scope["method"] == "POST"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.handles(scope):
            await self.app(scope, receive, send)
            return
        await self.predict(scope, receive, send)

    async def predict(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one ``POST /predict`` request."""
        auth = length = ""
        given = b""
        for k, v in scope["headers"]:
            if k == b"authorization" and not auth:
                auth = v.decode("latin-1")
            elif k == b"content-length" and not length:
                length = v.decode("latin-1")
            elif k == RAW_HEADER and not given:
                given = v
        rid = assign_request_id(scope, given)
        app = scope["app"]
        try:
            content = await answer(app.state.platform, auth, length, _chunks(receive))
        except ClientDisconnect:
            return
        except Exception as exc:  # the app's handler of the closest class (Exception: the 500)
            handler = next(
                (
                    app.exception_handlers[t]
                    for t in type(exc).__mro__
                    if t in app.exception_handlers
                ),
                None,
            )
            if handler is None:
                raise
            response = await handler(Request(scope, receive), exc)
            for k, v in headers_for("/predict", response.raw_headers):
                response.headers.setdefault(k.decode("latin-1"), v.decode("latin-1"))
            await response(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(content)).encode()),
                    (RAW_HEADER, rid),
                    *ANSWER_HEADERS,
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


def _too_large(what: str, limit: int) -> TooLargeError:
    return TooLargeError(
        f"{what} exceeds the /predict limit of {limit:,} bytes",
        "send fewer cells per request (or only the model's genes), or upload the data and "
        "submit a batch run (POST /upload, POST /submit)",
        code="body_too_large",
    )


def _parse(raw: bytes, max_cells: int) -> tuple[Any, list[dict[str, float]]]:
    try:
        body, cells = parse_predict_body(raw)
    except ValidationError as exc:
        errors = exc.errors()
        if any(e["type"] == "json_invalid" for e in errors):  # said as /submit says it
            error = body_error(raw, "/predict")
            if error is not None:
                raise error from None
        raise RequestValidationError(errors) from None
    if not cells or any(not c for c in cells):
        raise CellfoundryError(
            "every cell needs at least one gene value",
            'send {"expression": {"CD19": 8.5, ...}}',
            code="empty_expression",
        )
    if len(cells) > max_cells:
        raise TooLargeError(
            f"{len(cells):,} cells in one request (limit {max_cells:,})",
            "split the request or submit a batch run",
            code="too_many_cells",
        )
    return body, cells


def _no_model(model_id: str) -> NotFoundError:
    return NotFoundError(
        f"no model '{model_id}'", "see GET /models for the ids", code="model_not_found"
    )


def _load_on_demand(platform: Platform, model_id: str, uid: str) -> LoadedModel:
    with platform.db.session() as s:
        rec = s.scalar(select(ModelRecord).where(ModelRecord.id == model_id, visible_to(uid)))
        if rec is None:
            raise _no_model(model_id)
        s.expunge(rec)
    platform.predictor.add(
        model_id, platform.engine.annotator(rec), rec.owner_id, rec.visibility == Visibility.PUBLIC
    )
    return platform.predictor.models[model_id]
