"""What can be done: applications and models."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from cellfoundry.jobs.applications import APPLICATIONS, get_application
from cellfoundry.service.deps import Id, PlatformDep, SessionDep
from cellfoundry.service.public import model_public
from cellfoundry.service.schemas import ApplicationPublic, ModelPublic, errors
from cellfoundry.store.tables import ModelRecord

router = APIRouter(tags=["catalogue"])


@router.get("/applications", response_model=list[ApplicationPublic], responses=errors())
def applications() -> list[ApplicationPublic]:
    """What can be done, with each application's params schema."""
    return [ApplicationPublic.model_validate(a.to_dict()) for a in APPLICATIONS.values()]


@router.get("/models", response_model=list[ModelPublic], responses=errors())
def models(s: SessionDep, platform: PlatformDep) -> list[ModelPublic]:
    """Registered models with measured metrics, size, input requirements and readiness."""
    recs = s.scalars(select(ModelRecord).order_by(ModelRecord.created_at)).all()
    return [model_public(s, platform.storage, r) for r in recs]


@router.get(
    "/applications/{app_id}/models", response_model=list[ModelPublic], responses=errors(404)
)
def app_models(app_id: Id, s: SessionDep, platform: PlatformDep) -> list[ModelPublic]:
    """The models that serve an application."""
    spec = get_application(app_id)
    recs = s.scalars(select(ModelRecord).order_by(ModelRecord.created_at)).all()
    return [model_public(s, platform.storage, r) for r in recs if spec.accepts(r.family)]
