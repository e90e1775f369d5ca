"""GET /runs/{id}/layout: every cell laid out; points or per-label bin counts of a viewport.

In process (SQLite, local queue) with the local worker loop driven by the test, on the dataset of
the layout tests. The layout is fitted on a sample of 80 cells and applied to the rest in chunks.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from cellfoundry.config import Settings
from cellfoundry.store.keys import create_key
from tests.service.test_service_layout import N, _run, dataset, uploaded

__all__ = ["dataset"]  # the fixture


def test_layout_viewport_points_and_density(
    tmp_path: Path, demo_model_dir: Path, dataset: ad.AnnData
) -> None:
    cells_file = tmp_path / "cells.h5ad"
    dataset.write_h5ad(cells_file)
    settings = Settings(
        home=tmp_path / "home",
        demo_model=False,
        local_workers=0,
        shard_size=120,
        umap_max_cells=100,  # GET /results shows a sample of 100 points
        layout_fit_cells=80,  # fitted on 80 cells, the other 220 placed in chunks
    )
    with uploaded(settings, demo_model_dir, cells_file) as (c, platform, model, ds):
        rid = _run(c, settings, ds, model, "annotation", {"layout": "pca"})
        assert N > 200
        res = c.get(f"/results/{rid}", params={"page_size": 5000}).json()
        assert 70 <= res["summary"]["layout_fit_cells"] <= 90  # stratified: rounded per label
        by_cell = {row["cell"]: row for row in res["cells"]["items"]}
        shown = res["layout"]
        assert shown["sampled"] and shown["n_points"] == len(shown["cells"]) <= 110

        # the whole layout as points: every cell, with its stored label and confidence
        whole = c.get(f"/runs/{rid}/layout", params={"max_points": 1000}).json()
        assert whole["mode"] == "points" and "density" not in whole
        assert whole["n_cells"] == whole["n_in_view"] == N
        pts = whole["points"]
        assert not pts["sampled"] and sorted(pts["cell"]) == sorted(by_cell)
        assert pts["row"] == [int(cell.removeprefix("cell")) for cell in pts["cell"]]
        labels = whole["labels"]
        for cell, lab, conf in zip(pts["cell"], pts["label"], pts["confidence"], strict=True):
            assert labels[lab] == by_cell[cell]["label"]
            assert conf == pytest.approx(by_cell[cell]["confidence"], abs=1e-4)
        x, y = np.array(pts["x"]), np.array(pts["y"])
        ext = whole["extent"]
        assert (ext["x0"], ext["x1"]) == pytest.approx((x.min(), x.max()), abs=1e-4)
        # the /results sample is the same stored points
        pos = {cell: (px, py) for cell, px, py in zip(pts["cell"], x, y, strict=True)}
        for cell, sx, sy in zip(shown["cells"], shown["x"], shown["y"], strict=True):
            assert pos[cell] == pytest.approx((sx, sy), abs=1e-4)

        # a viewport: the lower-left quarter, counted independently from the points
        mid_x, mid_y = float(np.median(x)), float(np.median(y))
        box = {"x0": ext["x0"], "x1": mid_x, "y0": ext["y0"], "y1": mid_y}
        inside = (x >= box["x0"]) & (x <= mid_x) & (y >= box["y0"]) & (y <= mid_y)
        quarter = c.get(f"/runs/{rid}/layout", params={**box, "max_points": 1000}).json()
        assert quarter["n_in_view"] == int(inside.sum()) > 0
        assert sorted(quarter["points"]["cell"]) == sorted(np.array(pts["cell"])[inside])

        # density: per-label counts in a 4 x 4 grid over the whole layout
        dens = c.get(f"/runs/{rid}/layout", params={"bins": 4, "max_points": 10}).json()
        assert dens["mode"] == "density" and "points" not in dens
        grid = dens["density"]
        assert sum(grid["count"]) == N
        got = {
            (bx, by, lab): n
            for bx, by, lab, n in zip(
                grid["bx"], grid["by"], grid["label"], grid["count"], strict=True
            )
        }
        want: dict[tuple[int, int, int], int] = {}
        w, h = (ext["x1"] - ext["x0"]) / 4, (ext["y1"] - ext["y0"]) / 4
        for px, py, lab in zip(x, y, pts["label"], strict=True):
            key = (min(int((px - ext["x0"]) / w), 3), min(int((py - ext["y0"]) / h), 3), lab)
            want[key] = want.get(key, 0) + 1
        assert got == want

        # more points than max_points: a sample that stays put when zooming in
        few = c.get(f"/runs/{rid}/layout", params={"mode": "points", "max_points": 40}).json()
        assert few["points"]["sampled"] and len(few["points"]["cell"]) == 40
        zoom = c.get(
            f"/runs/{rid}/layout", params={**box, "mode": "points", "max_points": 40}
        ).json()
        kept = {
            cell
            for cell, px, py in zip(
                few["points"]["cell"], few["points"]["x"], few["points"]["y"], strict=True
            )
            if px <= mid_x and py <= mid_y
        }
        assert kept <= set(zoom["points"]["cell"])

        # a reversed viewport is refused with what to send
        bad = c.get(f"/runs/{rid}/layout", params={"x0": 1, "x1": 0})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_viewport"

        # owner-scoped: another user's key does not see the run
        with platform.db.session() as s:
            _, other = create_key(s, "someone-else")
        r = c.get(f"/runs/{rid}/layout", headers={"Authorization": f"Bearer {other}"})
        assert r.status_code == 404

        # a run without a layout says so
        plain = _run(c, settings, ds, model, "annotation", {"layout": "none"})
        r = c.get(f"/runs/{plain}/layout")
        assert r.status_code == 404 and r.json()["error"]["code"] == "no_layout"
