"""What can be done: applications and models."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from cellfoundry.errors import NotFoundError
from cellfoundry.jobs.applications import APPLICATIONS, get_application
from cellfoundry.service.deletion import delete_model
from cellfoundry.service.deps import Id, OptionalUserDep, PlatformDep, SessionDep, UserDep
from cellfoundry.service.public import model_public
from cellfoundry.service.schemas import ApplicationPublic, ModelPublic, errors, param_specs
from cellfoundry.store.model_records import visible_to
from cellfoundry.store.tables import ModelRecord

router = APIRouter(tags=["catalogue"])


@router.get("/applications", response_model=list[ApplicationPublic], responses=errors())
def applications() -> list[ApplicationPublic]:
    """What can be done, with each application's params schema."""
    out = []
    for a in APPLICATIONS.values():
        d = a.to_dict()
        out.append(ApplicationPublic(**d, params=param_specs(d["params_schema"])))
    return out


def _visible_models(s: Session, uid: str | None) -> Sequence[ModelRecord]:
    return s.scalars(
        select(ModelRecord).where(visible_to(uid)).order_by(ModelRecord.created_at)
    ).all()


@router.get("/models", response_model=list[ModelPublic], responses=errors(401))
def models(s: SessionDep, platform: PlatformDep, uid: OptionalUserDep) -> list[ModelPublic]:
    """Models with measured metrics, size, input requirements and readiness: the public ones,
    and with an API key also your own (fine-tuned) ones."""
    recs = _visible_models(s, uid)
    return [model_public(s, platform.storage, r) for r in recs]


@router.delete(
    "/models/{model_id}", status_code=204, response_class=Response, responses=errors(401, 404, 409)
)
def remove_model(model_id: Id, s: SessionDep, platform: PlatformDep, uid: UserDep) -> Response:
    """Delete one of your models (fine-tunes), the finished runs that used it and its files."""
    rec = s.get(ModelRecord, model_id)
    if rec is None or rec.owner_id != uid:
        raise NotFoundError(
            f"no model of yours '{model_id}'",
            "GET /models lists yours; public models are removed by the administrator",
            code="model_not_found",
        )
    delete_model(platform, s, rec)
    s.commit()  # then its files go (deletion.remove_after_commit), then the answer
    return Response(status_code=204)


@router.get(
    "/applications/{app_id}/models", response_model=list[ModelPublic], responses=errors(401, 404)
)
def app_models(
    app_id: Id, s: SessionDep, platform: PlatformDep, uid: OptionalUserDep
) -> list[ModelPublic]:
    """The models (that you can see) that serve an application."""
    spec = get_application(app_id)
    recs = _visible_models(s, uid)
    return [model_public(s, platform.storage, r) for r in recs if spec.accepts(r.family)]
