"""A viewport of a run's stored layout: per-label counts on a grid when zoomed out, points within.

The stored ``layout.parquet`` holds every cell. Its coordinates, label codes and cell names are
read once per file into compact arrays (a million cells: about 30 MB) and kept for the few most
recently viewed runs. Each request then selects the cells inside the viewport and answers either
with the non-empty (bin, label) counts of a ``bins x bins`` grid over it, or with its points: all
of them up to ``max_points``, else the ``max_points`` with the lowest fixed random rank, so that a
point shown at one zoom stays shown when zooming further in.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cellfoundry.errors import BadRequestError

ViewMode = Literal["auto", "points", "density"]
#: runs whose layout arrays stay in memory (least recently viewed dropped first)
CACHED_LAYOUTS = 4
NO_LABEL = "all"


@dataclass(frozen=True)
class LayoutArrays:
    x: np.ndarray  # float32, one per cell
    y: np.ndarray
    label: np.ndarray  # int32 code into ``labels``
    labels: list[str]
    rank: np.ndarray  # fixed random rank: the order in which points are dropped
    cells: Any  # pyarrow string array of the cell names
    rows: np.ndarray  # the dataset row of each point (int64)
    confidence: np.ndarray | None  # float32 stored prediction confidence, when there is one


_CACHE: OrderedDict[tuple[str, int, int], LayoutArrays] = OrderedDict()
_LOCK = threading.Lock()


@dataclass(frozen=True)
class MemberLabels:
    """One consensus model's own calls of the layout's points (``Unknown`` below its threshold)."""

    label: np.ndarray  # int32 code into ``labels``, one per layout point
    labels: list[str]
    terms: list[str] | None  # the stored CL term of each label ("" unmapped / Unknown), if any


_MEMBERS: OrderedDict[tuple[str, int, int, str, int], MemberLabels] = OrderedDict()


def _cached(cache: OrderedDict[Any, Any], key: Any, load: Callable[[], Any]) -> Any:
    """``cache[key]``, loaded by ``load()`` outside the lock on a miss; the ``CACHED_LAYOUTS``
    most recently used entries are kept."""
    with _LOCK:
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
            return hit
    got = load()
    with _LOCK:
        cache[key] = got
        while len(cache) > CACHED_LAYOUTS:
            cache.popitem(last=False)
    return got


def layout_arrays(path: Path, predictions: Path | None) -> LayoutArrays:
    """The arrays of the layout file ``path`` (cached by path, size and modification time)."""
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    arrays: LayoutArrays = _cached(_CACHE, key, lambda: _read(path, predictions))
    return arrays


def member_models(predictions: Path | None) -> list[str]:
    """The models whose own calls a consensus run's predictions file stores (none otherwise)."""
    import pyarrow.parquet as pq

    from cellfoundry.consensus import member_column

    if predictions is None or not predictions.is_file():
        return []
    prefix = member_column("predicted_cell_type", "")
    names = pq.read_schema(predictions).names
    return [c.removeprefix(prefix) for c in names if c.startswith(prefix)]


def member_labels(a: LayoutArrays, predictions: Path, model: str) -> MemberLabels:
    """``model``'s own calls of the points of ``a`` (cached by file, as ``layout_arrays``)."""
    st = predictions.stat()
    key = (str(predictions), st.st_mtime_ns, st.st_size, model, len(a.rows))
    got: MemberLabels = _cached(_MEMBERS, key, lambda: _read_member(a, predictions, model))
    return got


def _read_member(a: LayoutArrays, predictions: Path, model: str) -> MemberLabels:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from cellfoundry.consensus import member_column
    from cellfoundry.result import TERM_COLUMN
    from cellfoundry.stats.labels import UNKNOWN

    label_col = member_column("predicted_cell_type", model)
    unknown_col = member_column("prediction_unknown", model)
    term_col = member_column(TERM_COLUMN, model)
    names = pq.read_schema(predictions).names
    cols = [label_col, unknown_col] + ([term_col] if term_col in names else [])
    table = pq.read_table(predictions, columns=cols).take(pa.array(a.rows))
    unknown = table.column(unknown_col).combine_chunks().cast(pa.bool_())
    label = pc.if_else(unknown, UNKNOWN, table.column(label_col).combine_chunks().cast(pa.string()))
    enc = pc.dictionary_encode(label)
    labels = [str(v) for v in enc.dictionary.to_pylist()]
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int32)
    terms = None
    if term_col in names:
        term = (
            table.column(term_col).combine_chunks().cast(pa.string()).to_numpy(zero_copy_only=False)
        )
        _, first = np.unique(codes, return_index=True)
        terms = ["" for _ in labels]
        for code, i in zip(np.unique(codes), first, strict=True):
            terms[int(code)] = "" if labels[int(code)] == UNKNOWN else str(term[i] or "")
    return MemberLabels(label=codes, labels=labels, terms=terms)


def relabelled(
    a: LayoutArrays,
    codes: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    names: Mapping[str, str] | Callable[[str], str] | None = None,
) -> LayoutArrays:
    """``a`` with other labels (``codes`` into ``labels``), each label renamed by ``names`` (a
    roll-up: labels with the same new name become one)."""
    codes = a.label if codes is None else codes
    labels = list(a.labels if labels is None else labels)
    if names is not None:
        rename = names if callable(names) else (lambda lab: names.get(lab, lab))  # type: ignore[union-attr]
        new = [rename(lab) for lab in labels]
        merged = list(dict.fromkeys(new))
        index = {lab: i for i, lab in enumerate(merged)}
        remap = np.array([index[lab] for lab in new], dtype=np.int32)
        codes = remap[codes] if len(remap) else codes
        labels = merged
    return replace(a, label=codes, labels=labels)


def _read(path: Path, predictions: Path | None) -> LayoutArrays:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    cols = [c for c in ("i", "cell", "x", "y", "label") if c in names]
    table = pq.read_table(path, columns=cols)
    n = table.num_rows
    if "label" in names:
        lab = table.column("label").combine_chunks()
        if not pa.types.is_dictionary(lab.type):
            lab = pc.dictionary_encode(lab)
        labels = [str(v) for v in lab.dictionary.to_pylist()]
        codes = lab.indices.to_numpy(zero_copy_only=False).astype(np.int32)
    else:
        labels, codes = [NO_LABEL], np.zeros(n, dtype=np.int32)
    rows = (
        table.column("i").to_numpy().astype(np.int64)
        if "i" in names
        else np.arange(n, dtype=np.int64)
    )
    confidence = None
    if predictions is not None and predictions.is_file():
        pf = pq.ParquetFile(predictions)
        if "prediction_confidence" in pf.schema_arrow.names and pf.metadata.num_rows > (
            int(rows.max()) if n else -1
        ):
            conf = pf.read(columns=["prediction_confidence"]).column(0).to_numpy()
            confidence = conf[rows].astype(np.float32)
    return LayoutArrays(
        x=table.column("x").to_numpy().astype(np.float32),
        y=table.column("y").to_numpy().astype(np.float32),
        label=codes,
        labels=labels,
        rank=np.random.default_rng(0).permutation(n).astype(np.int32),
        cells=table.column("cell").combine_chunks(),
        rows=rows,
        confidence=confidence,
    )


def _extent(a: LayoutArrays) -> dict[str, float]:
    if len(a.x) == 0:
        return {"x0": 0.0, "x1": 0.0, "y0": 0.0, "y1": 0.0}
    return {
        "x0": float(a.x.min()),
        "x1": float(a.x.max()),
        "y0": float(a.y.min()),
        "y1": float(a.y.max()),
    }


def layout_view(
    a: LayoutArrays,
    *,
    method: str | None,
    x0: float | None,
    x1: float | None,
    y0: float | None,
    y1: float | None,
    bins: int,
    max_points: int,
    mode: ViewMode,
) -> dict[str, Any]:
    """The viewport ``[x0, x1] x [y0, y1]`` (default: every point) as points or as a grid."""
    extent = _extent(a)
    box = {
        "x0": extent["x0"] if x0 is None else x0,
        "x1": extent["x1"] if x1 is None else x1,
        "y0": extent["y0"] if y0 is None else y0,
        "y1": extent["y1"] if y1 is None else y1,
    }
    for lo, hi in (("x0", "x1"), ("y0", "y1")):
        if not box[lo] <= box[hi]:
            raise BadRequestError(
                f"the viewport has {lo}={box[lo]} > {hi}={box[hi]}",
                f"give {lo} <= {hi}; the layout spans x {extent['x0']}..{extent['x1']}, "
                f"y {extent['y0']}..{extent['y1']}",
                code="bad_viewport",
            )
    inside = np.flatnonzero(
        (a.x >= box["x0"]) & (a.x <= box["x1"]) & (a.y >= box["y0"]) & (a.y <= box["y1"])
    )
    out: dict[str, Any] = {
        "method": method,
        "n_cells": len(a.x),
        "extent": extent,
        "viewport": box,
        "n_in_view": len(inside),
        "labels": a.labels,
        "points": None,
        "density": None,
    }
    if mode == "density" or (mode == "auto" and len(inside) > max_points):
        out["mode"] = "density"
        out["density"] = _density(a, inside, box, bins)
    else:
        out["mode"] = "points"
        out["points"] = _points(a, inside, max_points)
    return out


def _points(a: LayoutArrays, inside: np.ndarray, max_points: int) -> dict[str, Any]:
    sampled = len(inside) > max_points
    if sampled:  # the lowest ranks: stable under zoom
        keep = np.argpartition(a.rank[inside], max_points - 1)[:max_points]
        inside = np.sort(inside[keep])
    return {
        "sampled": sampled,
        "row": a.rows[inside].tolist(),
        "cell": a.cells.take(inside).to_pylist(),
        "x": np.round(a.x[inside].astype(np.float64), 4).tolist(),
        "y": np.round(a.y[inside].astype(np.float64), 4).tolist(),
        "label": a.label[inside].tolist(),
        "confidence": (
            None
            if a.confidence is None
            else np.round(a.confidence[inside].astype(np.float64), 4).tolist()
        ),
    }


def _density(
    a: LayoutArrays, inside: np.ndarray, box: dict[str, float], bins: int
) -> dict[str, Any]:
    width = (box["x1"] - box["x0"]) / bins
    height = (box["y1"] - box["y0"]) / bins
    bx = _bin(a.x[inside], box["x0"], width, bins)
    by = _bin(a.y[inside], box["y0"], height, bins)
    n_labels = max(len(a.labels), 1)
    key = (by.astype(np.int64) * bins + bx) * n_labels + a.label[inside]
    keys, counts = np.unique(key, return_counts=True)
    cell, lab = np.divmod(keys, n_labels)
    gy, gx = np.divmod(cell, bins)
    return {
        "bins": bins,
        "bin_width": width,
        "bin_height": height,
        "bx": gx.tolist(),
        "by": gy.tolist(),
        "label": lab.tolist(),
        "count": counts.tolist(),
    }


def _bin(v: np.ndarray, lo: float, step: float, bins: int) -> np.ndarray:
    """Bin of each value: ``floor((v - lo) / step)``; the upper edge goes in the last bin."""
    if step <= 0:
        return np.zeros(len(v), dtype=np.int64)
    return np.clip(((v.astype(np.float64) - lo) / step).astype(np.int64), 0, bins - 1)
