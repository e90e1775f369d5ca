"""GET /runs/{id}/layout at 1M cells: milliseconds and answer size of a zoomed-out density grid
and of zoomed-in points (the server-side aggregation the WebGL view draws from).

A layout.parquet of ``--cells`` points (20 labelled Gaussian blobs, written as the merge writes
it: ``cellfoundry.jobs.applications.layout_frame``) is read once (``layout_arrays``, timed: the
first request of a run) and then viewed through ``layout_view`` + the response model, as the
route does (``mode=auto``, ``max_points`` 20,000): the whole extent (a 256 x 256 density grid)
and two zoomed viewports on one blob (points once at most 20,000 lie inside). The reference is
the JSON that /results' layout block would need for every point (x, y, label, cell per point),
measured by size. Each view is also timed rolled up to a level (20 labels -> 2: the labels
renamed per request) and by a consensus model's own calls at that level (``source``: read once
from the predictions file's per-model columns, timed, then renamed per request).

    PYTHONPATH=src python benchmarks/bench_layout_view.py [--cells 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from results_io import write_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "layout_view.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cells", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from cellfoundry.consensus import member_column
    from cellfoundry.jobs.applications import layout_frame
    from cellfoundry.service.layout_view import (
        layout_arrays,
        layout_view,
        member_labels,
        relabelled,
    )
    from cellfoundry.service.schemas import LayoutViewPublic

    n = args.cells
    rng = np.random.default_rng(0)
    centres = rng.uniform(-20, 20, (20, 2))
    lab = rng.integers(0, 20, n)
    xy = (centres[lab] + rng.normal(0, 1.5, (n, 2))).astype(np.float32)
    labels = np.array([f"type {i}" for i in range(20)])[lab]
    cells = np.array([f"cell{i}" for i in range(n)])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "layout.parquet"
        layout_frame(xy, cells, labels, 5000, pd.DataFrame(index=cells)).to_parquet(path)
        t0, c0 = time.perf_counter(), time.process_time()
        arrays = layout_arrays(path, None)
        read = {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
        print(
            f"first request reads {n:,} points: {read['seconds']:.2f} s (CPU {read['cpu_seconds']:.2f} s)"
        )
        cx, cy = centres[0]
        views = {
            "whole extent, density 256x256": {"bins": 256},
            "whole extent, density 128x128 (the web UI's grid)": {"bins": 128},
            "zoom: 4 x 4 units on a blob": {"x0": cx - 2, "x1": cx + 2, "y0": cy - 2, "y1": cy + 2},
            "zoom: 1.2 x 1.2 units on a blob": {"x0": cx - 0.6, "x1": cx + 0.6, "y0": cy - 0.6, "y1": cy + 0.6},
        }  # fmt: skip
        # a consensus model's own calls of every cell, as the predictions file stores them
        # (per-model columns), read once per run and model (``member_labels``, timed)
        pred = Path(tmp) / "predictions.parquet"
        own = np.where(lab % 2 == 0, labels, np.array([f"type {i + 1}" for i in range(20)])[lab])
        pd.DataFrame(
            {
                "cell": cells,
                member_column("predicted_cell_type", "m"): own,
                member_column("prediction_unknown", "m"): rng.random(n) < 0.05,
            }
        ).to_parquet(pred)
        t0, c0 = time.perf_counter(), time.process_time()
        model_labels = member_labels(arrays, pred, "m")
        member_read = {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
        print(
            f"first request by one model's own calls reads them: {member_read['seconds']:.2f} s "
            f"(CPU {member_read['cpu_seconds']:.2f} s)"
        )
        halves = {f"type {i}": f"group {i // 10}" for i in range(21)}  # a roll-up: 20 -> 2 labels
        labelled = {
            "": lambda: arrays,
            ", rolled up (level)": lambda: relabelled(arrays, names=halves),
            ", one model's calls rolled up (source + level)": lambda: relabelled(
                arrays, model_labels.label, model_labels.labels, halves
            ),
        }
        cases = [(name + how, q, get) for name, q in views.items() for how, get in labelled.items()]
        for name, q, get in cases:
            kw = {"x0": None, "x1": None, "y0": None, "y1": None, "bins": 256, **q}
            times, cpu = [], []
            for _ in range(args.repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                view = layout_view(get(), method="umap", max_points=20_000, mode="auto", **kw)
                body = LayoutViewPublic.model_validate(view).model_dump_json(exclude_none=True)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            row = {
                "view": name,
                "mode": view["mode"],
                "n_in_view": view["n_in_view"],
                "ms_median": 1000 * float(np.median(times)),
                "cpu_ms_median": 1000 * float(np.median(cpu)),
                "answer_mb": len(body) / 1e6,
            }
            rows.append(row)
            print(
                f"{name:60s}: {row['mode']:7s} {row['n_in_view']:>9,} in view, "
                f"{row['ms_median']:6.0f} ms (CPU {row['cpu_ms_median']:5.0f} ms), "
                f"{row['answer_mb']:.2f} MB JSON"
            )
    every = json.dumps(
        {"x": xy[:, 0].round(4).tolist(), "y": xy[:, 1].round(4).tolist(),
         "labels": labels.tolist(), "cells": cells.tolist()}
    )  # fmt: skip
    ref_mb = len(every) / 1e6
    print(
        f"reference: every point as /results' layout block would carry it: {ref_mb:.0f} MB JSON; "
        f"the density answer is {ref_mb / rows[0]['answer_mb']:.0f}x smaller "
        f"(load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    write_result(
        RESULTS,
        {
            "cells": n,
            "first_read": read,
            "first_member_read": member_read,
            "views": rows,
            "reference_every_point_json_mb": ref_mb,
            "load_average": list(os.getloadavg()),
            "cpu_count": os.cpu_count(),
            "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )


if __name__ == "__main__":
    main()
