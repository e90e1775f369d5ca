"""A finished run's results: summary, layout and prediction pages, and the downloads."""

from __future__ import annotations

from typing import Annotated, Literal

import pyarrow.parquet as pq
from fastapi import APIRouter, Path, Query
from fastapi.responses import FileResponse, Response, StreamingResponse

from cellfoundry.errors import CellfoundryError, NotFoundError
from cellfoundry.service.deps import OwnRunDep, PlatformDep, SessionDep
from cellfoundry.service.layout_view import (
    ViewMode,
    layout_arrays,
    layout_view,
    member_labels,
    member_models,
    relabelled,
)
from cellfoundry.service.public import run_public
from cellfoundry.service.results import (
    annotated_h5ad,
    check_level,
    csv_stream,
    finished_result,
    labels_at_level,
    layout_block,
    level_options,
    level_view,
    one_cell,
    page_predictions,
    predictions_file,
    reading_stored,
)
from cellfoundry.service.schemas import (
    DOWNLOAD_CONTENT,
    ID_PATTERN,
    MAX_CELL_INDEX,
    MAX_LEVEL_LENGTH,
    MAX_PAGE,
    CellPage,
    CellPrediction,
    LayoutPublic,
    LayoutViewPublic,
    LevelOption,
    ResultsPublic,
    ResultSummaryPublic,
    errors,
)
from cellfoundry.store.tables import Dataset

router = APIRouter(tags=["runs"])

LevelQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_LEVEL_LENGTH,
        description="also report every call at this broader Cell Ontology level: 'broad' "
        "(T cell, B cell, monocyte, ...), a CL id ('CL:0000084') or a CL term's exact name "
        "('T cell', 'monocyte'); the summary gains rolled-up counts, the cells rolled-up "
        "labels and terms, the layout's labels are rolled up",
    ),
]

CONSENSUS = "consensus"
SourceQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=64,
        pattern=ID_PATTERN,
        description="consensus runs: label the points with this model's own calls (a model id of "
        "the run's ``sources``); 'consensus' or absent: the run's combined calls",
    ),
]


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
    level: LevelQuery = None,
) -> ResultsPublic:
    """Summary, 2-D layout (per point: confidence, top 3, obs columns), paged per-cell predictions;
    with ``level``, labels, terms and counts also at that broader Cell Ontology level."""
    if level is not None:
        check_level(level)  # a bad level is answered (422) before the run is looked at
    res = finished_result(s, run)
    summary = dict(res.summary)
    view = level_view(run, summary, level) if level is not None else None
    if view is not None:
        summary["ontology"] = {**(summary.get("ontology") or {}), **view.summary}
    out = ResultsPublic(
        run=run_public(run),
        summary=ResultSummaryPublic.model_validate(summary),
        files=sorted(res.files),
    )
    if view is not None:
        out.level = view.level
    if "layout" in res.files:
        with reading_stored(run):
            block = layout_block(platform.storage, s, run, res)
        if view is not None and block["labels"] is not None:
            block["labels"] = [view.names.get(lab, lab) for lab in block["labels"]]
        if level is not None and block["model_labels"]:
            for m, labels in block["model_labels"].items():  # each model's classes, by name
                names = labels_at_level(sorted(set(labels)), None, level)
                block["model_labels"][m] = [names.get(lab, lab) for lab in labels]
        out.layout = LayoutPublic.model_validate(block)
    if "predictions" in res.files:
        pred = predictions_file(platform.storage, run, res)
        with reading_stored(run):
            cells = page_predictions(pred, page, page_size, view)
        out.cells = CellPage.model_validate(cells)
        options = level_options(run, res.summary)
        if options is not None:
            out.levels = [LevelOption.model_validate(o) for o in options]
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
    level: LevelQuery = None,
) -> CellPrediction:
    """One cell's stored prediction with its evidence: top genes and contributions (explain),
    a consensus's agreement and each model's own call (+ the call at ``level``, when given)."""
    if level is not None:
        check_level(level)
    res = finished_result(s, run)
    path = predictions_file(platform.storage, run, res)
    with reading_stored(run):
        item = one_cell(path, index)
    if level is not None:
        item = level_view(run, res.summary, level).cell(item)
    return CellPrediction.model_validate(item)


@router.get(
    "/runs/{run_id}/layout",
    response_model=LayoutViewPublic,
    response_model_exclude_none=True,
    responses=errors(400, 401, 404, 409),
)
def layout(
    run: OwnRunDep,
    s: SessionDep,
    platform: PlatformDep,
    x0: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    x1: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    y0: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    y1: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    bins: Annotated[int, Query(ge=1, le=1024)] = 256,
    max_points: Annotated[int, Query(ge=1, le=200_000)] = 20_000,
    mode: Annotated[ViewMode, Query()] = "auto",
    level: LevelQuery = None,
    source: SourceQuery = None,
) -> LayoutViewPublic:
    """A viewport of the layout of every cell (default: all of it). ``auto``: its points when at
    most ``max_points`` lie inside, else per-label counts on a ``bins x bins`` grid over it;
    ``points`` always gives points (the ``max_points`` of lowest fixed random rank beyond that).
    Labelled by the run's calls, or a consensus model's own (``source``), at ``level``."""
    if level is not None:
        check_level(level)
    res = finished_result(s, run)
    if "layout" not in res.files:
        raise NotFoundError(
            f"run '{run.id}' has no layout",
            "submit the run with params.layout 'umap' or 'pca'",
            code="no_layout",
        )
    pred = res.files.get("predictions")
    pred_path = platform.storage.resolve(pred) if pred else None
    with reading_stored(run):
        arrays = layout_arrays(platform.storage.resolve(res.files["layout"]), pred_path)
        models = member_models(pred_path)
    if source == CONSENSUS and CONSENSUS not in models:
        source = None  # the run's own (combined) calls
    if source is not None:
        if source not in models or pred_path is None:
            raise CellfoundryError(
                f"run '{run.id}' has no calls of model '{source}' to label the layout with",
                f"give source as one of its models ({', '.join(models)}) or leave it out for the "
                "consensus"
                if models
                else f"run '{run.id}' ({run.application_id}) is no consensus of several "
                "models: leave source out",
                code="unknown_source",
                status=422,
            )
        with reading_stored(run):
            own = member_labels(arrays, pred_path, source)
        names = labels_at_level(own.labels, own.terms, level) if level is not None else None
        arrays = relabelled(arrays, own.label, own.labels, names)
    elif level is not None:
        arrays = relabelled(arrays, names=level_view(run, res.summary, level).names)
    view = layout_view(
        arrays,
        method=res.summary.get("layout"),
        x0=x0,
        x1=x1,
        y0=y0,
        y1=y1,
        bins=bins,
        max_points=max_points,
        mode=mode,
    )
    view.update(level=level, source=source, sources=models or None)
    return LayoutViewPublic.model_validate(view)


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
    if format in ("parquet", "csv"):
        with reading_stored(run):  # a damaged file is said before any byte is sent
            pq.read_metadata(pred)
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
    with reading_stored(run, values=True):
        path = annotated_h5ad(platform.storage, run, res, d)
    return FileResponse(path, media_type="application/x-hdf5", filename=f"{run.id}.h5ad")
