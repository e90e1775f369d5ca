"""Uploading data and listing your datasets."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from cellfoundry.errors import NotFoundError
from cellfoundry.service.deletion import delete_dataset
from cellfoundry.service.deps import Id, PlatformDep, SessionDep, UserDep
from cellfoundry.service.ingest import register_upload
from cellfoundry.service.platform import Platform
from cellfoundry.service.public import dataset_public
from cellfoundry.service.quotas import check_upload_quota
from cellfoundry.service.schemas import UPLOAD_BODY, DatasetPublic, errors
from cellfoundry.service.upload import receive_upload
from cellfoundry.store.tables import Dataset

router = APIRouter(tags=["data"])


@router.post(
    "/upload",
    response_model=DatasetPublic,
    responses=errors(400, 401, 408, 409, 413, 415),
    openapi_extra=UPLOAD_BODY,
)
async def upload(request: Request, uid: UserDep, platform: PlatformDep) -> DatasetPublic:
    """Multipart upload (field ``file``) of .h5ad / 10x .h5 / CSV; the same file twice is one dataset.

    An upload whose client sends no data for ``upload_idle_timeout_s`` (5 minutes by default) is
    stopped at once: 408 ``upload_idle``, what it had sent discarded; start it again. (Without
    that limit, one idle for ``tmp_sweep_after_s`` is swept: 409 ``upload_expired`` when it goes
    on.)"""
    declared = request.headers.get("content-length", "")
    await run_in_threadpool(  # refuse before reading the body when the quota is already spent
        _upload_quota, platform, uid, int(declared) - 64 * 1024 if declared.isdigit() else 1
    )
    st = platform.settings
    up = await receive_upload(
        request,
        platform.storage.tmp_dir(),
        st.upload_limit_bytes,
        swept_after_s=st.tmp_sweep_after_s,
        idle_timeout_s=st.upload_idle_timeout_s,
    )
    try:
        await run_in_threadpool(_upload_quota, platform, uid, up.size)
        return await run_in_threadpool(register_upload, platform, uid, up)
    finally:
        up.path.unlink(missing_ok=True)


def _upload_quota(platform: Platform, uid: str, incoming: int) -> None:
    with platform.db.session() as s:
        check_upload_quota(s, platform.settings, uid, max(1, incoming))


@router.get("/datasets", response_model=list[DatasetPublic], responses=errors(401))
def datasets(s: SessionDep, uid: UserDep) -> list[DatasetPublic]:
    """Your datasets."""
    rows = s.scalars(
        select(Dataset).where(Dataset.owner_id == uid).order_by(Dataset.created_at.desc())
    ).all()
    return [dataset_public(d) for d in rows]


def own_dataset(dataset_id: Id, s: SessionDep, uid: UserDep) -> Dataset:
    """The caller's dataset; 404 when it does not exist or is someone else's."""
    d = s.get(Dataset, dataset_id)
    if d is None or d.owner_id != uid:
        raise NotFoundError(
            f"no dataset '{dataset_id}'", "list yours with GET /datasets", code="dataset_not_found"
        )
    return d


OwnDataset = Annotated[Dataset, Depends(own_dataset)]


@router.get("/datasets/{dataset_id}", response_model=DatasetPublic, responses=errors(401, 404))
def dataset(d: OwnDataset) -> DatasetPublic:
    """One of your datasets with its validation report."""
    return dataset_public(d)


@router.delete(
    "/datasets/{dataset_id}",
    status_code=204,
    response_class=Response,
    responses=errors(401, 404, 409),
)
def remove_dataset(d: OwnDataset, s: SessionDep, platform: PlatformDep) -> Response:
    """Delete one of your datasets, its finished runs and their files (409 while runs are active)."""
    delete_dataset(platform, s, d)
    s.commit()  # then its files go (deletion.remove_after_commit), then the answer
    return Response(status_code=204)
