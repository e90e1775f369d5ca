"""A finished run's results: summary, layout and prediction pages, and the downloads."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import FileResponse, Response, StreamingResponse

from cellfoundry.errors import NotFoundError
from cellfoundry.service.deps import OwnRunDep, PlatformDep, SessionDep
from cellfoundry.service.public import run_public
from cellfoundry.service.results import (
    annotated_h5ad,
    csv_stream,
    finished_result,
    layout_block,
    one_cell,
    page_predictions,
    predictions_file,
)
from cellfoundry.service.schemas import (
    DOWNLOAD_CONTENT,
    MAX_CELL_INDEX,
    MAX_PAGE,
    CellPage,
    CellPrediction,
    LayoutPublic,
    ResultsPublic,
    ResultSummaryPublic,
    errors,
)
from cellfoundry.store.tables import Dataset

router = APIRouter(tags=["runs"])


@router.get(
    "/results/{run_id}",
    response_model=ResultsPublic,
    response_model_exclude_unset=True,
    responses=errors(401, 404, 409),
)
def results(
    run: OwnRunDep,
    s: SessionDep,
    platform: PlatformDep,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    page_size: Annotated[int, Query(ge=1, le=5000)] = 100,
) -> ResultsPublic:
    """Summary, 2-D layout (per point: confidence, top 3, obs columns), paged per-cell predictions."""
    res = finished_result(s, run)
    out = ResultsPublic(
        run=run_public(run),
        summary=ResultSummaryPublic.model_validate(res.summary),
        files=sorted(res.files),
    )
    if "layout" in res.files:
        out.layout = LayoutPublic.model_validate(layout_block(platform.storage, s, run, res))
    if "predictions" in res.files:
        out.cells = CellPage.model_validate(
            page_predictions(platform.storage.resolve(res.files["predictions"]), page, page_size)
        )
    return out


@router.get(
    "/results/{run_id}/cells/{index}",
    response_model=CellPrediction,
    response_model_exclude_unset=True,
    responses=errors(401, 404, 409),
)
def cell(
    run: OwnRunDep,
    s: SessionDep,
    platform: PlatformDep,
    index: Annotated[int, Path(ge=0, le=MAX_CELL_INDEX, description="row of the cell (0-based)")],
) -> CellPrediction:
    """One cell's stored prediction with its evidence: top genes and contributions (explain),
    a consensus's agreement and each model's own call."""
    res = finished_result(s, run)
    path = predictions_file(platform.storage, run, res)
    return CellPrediction.model_validate(one_cell(path, index))


@router.get(
    "/download/{run_id}",
    response_class=Response,
    responses={
        200: {"description": "the file", "content": DOWNLOAD_CONTENT},
        **errors(401, 404, 409),
    },
)
def download(
    run: OwnRunDep,
    s: SessionDep,
    platform: PlatformDep,
    format: Annotated[Literal["h5ad", "csv", "parquet"], Query()] = "h5ad",
) -> Response:
    """The annotated dataset (h5ad) or the per-cell predictions (csv, parquet), streamed."""
    res = finished_result(s, run)
    pred = predictions_file(platform.storage, run, res)
    if format == "parquet":
        return FileResponse(
            pred, media_type="application/vnd.apache.parquet", filename=f"{run.id}.parquet"
        )
    if format == "csv":
        return StreamingResponse(
            csv_stream(pred),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{run.id}.csv"'},
        )
    if "probabilities" not in res.files:
        raise NotFoundError(
            f"run '{run.id}' has no annotated dataset",
            "use format=csv or format=parquet",
            code="no_annotated_dataset",
        )
    d = s.get(Dataset, run.dataset_id)
    assert d is not None
    path = annotated_h5ad(platform.storage, run, res, d)
    return FileResponse(path, media_type="application/x-hdf5", filename=f"{run.id}.h5ad")
