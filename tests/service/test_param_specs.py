"""GET /applications' ``params``: each application's parameters read from its JSON schema."""

from __future__ import annotations

import typing

from pydantic import BaseModel, Field

from cellfoundry.jobs.applications import APPLICATIONS, EvaluationParams
from cellfoundry.service.routes.catalogue import applications
from cellfoundry.service.schemas import param_specs


def test_every_field_of_every_application_is_listed_with_its_default_and_requiredness() -> None:
    for app in applications():
        fields = APPLICATIONS[app.id].params.model_fields
        assert [p.name for p in app.params] == list(fields)
        for p in app.params:
            f = fields[p.name]
            assert p.required == f.is_required()
            if not f.is_required() and f.default_factory is None:
                assert p.default == f.default


def test_types_bounds_choices_and_descriptions() -> None:
    by_name = {p.name: p for p in param_specs(EvaluationParams.model_json_schema())}
    frac = by_name["test_fraction"]
    assert (frac.type, frac.minimum, frac.maximum) == ("number", 0.05, 0.95)  # exclusive bounds
    assert frac.description == EvaluationParams.model_fields["test_fraction"].description
    assert by_name["seeds"].type == "integer"
    methods = by_name["methods"]
    assert methods.type == "multi"
    assert methods.choices == list(
        typing.get_args(typing.get_args(EvaluationParams.model_fields["methods"].annotation)[0])
    )
    assert by_name["label_key"].required and by_name["label_key"].type == "string"


def test_optional_enums_objects_and_booleans() -> None:
    class P(BaseModel):
        mode: typing.Literal["a", "b"] | None = None
        level: float | None = Field(None, ge=1, le=3)
        flag: bool = True
        options: dict[str, int] = Field(default_factory=dict)

    by_name = {p.name: p for p in param_specs(P.model_json_schema())}
    assert (by_name["mode"].type, by_name["mode"].choices) == ("choice", ["a", "b"])
    assert (by_name["level"].type, by_name["level"].minimum, by_name["level"].maximum) == (
        "number",
        1,
        3,
    )
    assert (by_name["flag"].type, by_name["flag"].default) == ("boolean", True)
    assert by_name["options"].type == "json"
    assert not any(p.required for p in by_name.values())
