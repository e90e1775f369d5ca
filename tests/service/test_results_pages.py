"""A page of /results reads only the parquet row groups it overlaps, never the whole file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from cellfoundry.jobs.applications import PREDICTION_ROW_GROUP, write_predictions_parquet
from cellfoundry.service.results import page_predictions, read_rows


def _frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    labels = np.array(["B cell", "T cell", "NK cell"])[rng.integers(0, 3, n)]
    conf = rng.random(n)
    return pd.DataFrame(
        {
            "cell": [f"c{i}" for i in range(n)],
            "predicted_cell_type": labels,
            "display_label": labels,
            "prediction_confidence": conf,
            "prediction_unknown": conf < 0.2,
            "top1_label": labels,
            "top1_probability": conf,
        }
    )


def _wreck_row_group(path: Path, g: int) -> None:
    """Overwrite every column chunk of row group ``g`` with garbage bytes."""
    md = pq.ParquetFile(path).metadata
    raw = bytearray(path.read_bytes())
    rg = md.row_group(g)
    for c in range(rg.num_columns):
        col = rg.column(c)
        start = min(
            o for o in (col.dictionary_page_offset, col.data_page_offset) if o is not None and o > 0
        )
        raw[start : start + col.total_compressed_size] = b"\xff" * col.total_compressed_size
    path.write_bytes(bytes(raw))


def test_page_reads_only_the_row_groups_it_needs(tmp_path: Path) -> None:
    n = 2 * PREDICTION_ROW_GROUP + 5_000
    frame = _frame(n)
    path = tmp_path / "predictions.parquet"
    write_predictions_parquet(frame, path)
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    _wreck_row_group(path, 0)
    _wreck_row_group(path, 2)
    with pytest.raises(OSError):  # reading the whole file touches the wrecked groups
        pq.read_table(path).to_pandas()
    size = 5_000
    page = PREDICTION_ROW_GROUP // size + 1  # the first page inside row group 1
    out = page_predictions(path, page, size)
    assert out["total"] == n and len(out["items"]) == size
    want = frame.iloc[(page - 1) * size : page * size]
    assert [i["cell"] for i in out["items"]] == want["cell"].tolist()
    assert [i["confidence"] for i in out["items"]] == want["prediction_confidence"].tolist()
    assert [i["unknown"] for i in out["items"]] == want["prediction_unknown"].tolist()


def test_pages_across_group_boundaries_and_past_the_end(tmp_path: Path) -> None:
    frame = _frame(2_500)
    path = tmp_path / "p.parquet"
    frame.to_parquet(path, row_group_size=400)
    for start, stop in [(0, 10), (390, 820), (399, 401), (2_400, 2_600), (0, 2_500)]:
        rows, total = read_rows(path, start, stop)
        assert total == 2_500
        assert rows.to_pandas()["cell"].tolist() == frame["cell"].iloc[start:stop].tolist()
    rows, total = read_rows(path, 5_000, 5_100)
    assert rows.num_rows == 0 and total == 2_500
    assert page_predictions(path, 100, 100)["items"] == []
