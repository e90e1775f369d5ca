"""Parsing a ``POST /predict`` body: a fast path for the common shape, pydantic for the rest.

``PredictRequest.model_validate_json`` was the largest single cost of a one-cell request (about
130 us of CPU for a 782-gene cell; a tenth of it is JSON, the rest is building and checking the
782-entry dict). ``parse_predict_body`` first reads the body with orjson and accepts it only
when it is plainly valid: a JSON object of ``PredictRequest``'s fields whose expression is a
non-empty ``{gene: number}`` object (or a non-empty list of them) with every value a JSON number,
and whose other fields pass ``PredictOptions``, the same fields and constraints in strict mode.
Anything else (invalid JSON, ``NaN``/``Infinity``/``1e400``, strings or booleans as values,
unknown fields, an option of another type, ...) goes through ``PredictRequest`` exactly as before,
so every refusal and its status are pydantic's (the route words a body that is not JSON as
``/submit`` does: ``json_body.body_error``). An accepted body gives
what pydantic gives: the same genes in the same order (a repeated gene keeps its first place and
its last value), the same float64 values (an integer is converted as pydantic converts it) and
the same options.
"""

from __future__ import annotations

import codecs
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from cellfoundry.service.schemas import PredictRequest

Cell = dict[str, float]

PredictOptions: type[BaseModel] = create_model(  # PredictRequest less `expression`, strict
    "PredictOptions",
    __config__=ConfigDict(extra="forbid", strict=True, protected_namespaces=()),
    **{  # type: ignore[call-overload]
        name: (field.annotation, field)
        for name, field in PredictRequest.model_fields.items()
        if name != "expression"
    },
)
FIELDS = frozenset(PredictRequest.model_fields)
_NUMBER_TYPES = frozenset({float, int})
_FLOATS = frozenset({float})
_DEFAULTS = PredictOptions()


def fast_parse(raw: bytes) -> tuple[Any, list[Cell]] | None:
    """``(options, cells)`` of a plainly valid body, else None (let pydantic decide)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(body) is not dict or not FIELDS.issuperset(body):
        return None
    expr = body.pop("expression", None)
    if type(expr) is dict:
        cells = [expr]
    elif type(expr) is list and expr and all(type(c) is dict for c in expr):
        cells = expr
    else:
        return None
    for i, cell in enumerate(cells):
        if not cell:
            return None
        kinds = set(map(type, cell.values()))
        if kinds == _FLOATS:
            continue
        if not _NUMBER_TYPES.issuperset(kinds):
            return None  # bool, str, null, list, object: pydantic's rules and messages
        # pydantic converts each integer to float (correctly rounded, as float() does)
        cells[i] = dict(zip(cell, map(float, cell.values()), strict=True))
    if not body:
        return _DEFAULTS, cells
    try:
        options = PredictOptions.model_validate(body)
    except ValidationError:
        return None
    return options, cells


def parse_predict_body(raw: bytes) -> tuple[Any, list[Cell]]:
    """``(request options, cells)``: the fast path, else ``PredictRequest`` (whose
    ``ValidationError`` is raised). The options have ``PredictRequest``'s attributes.

    A leading UTF-8 byte order mark is ignored, as on ``/submit`` (RFC 8259 §8.1 lets a parser
    ignore it; orjson and pydantic refuse it): looked for only once the fast path refused the
    body, so an ordinary body costs nothing more."""
    fast = fast_parse(raw)
    if fast is not None:
        return fast
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
        fast = fast_parse(raw)
        if fast is not None:
            return fast
    req = PredictRequest.model_validate_json(raw)
    return req, req.expression if isinstance(req.expression, list) else [req.expression]
