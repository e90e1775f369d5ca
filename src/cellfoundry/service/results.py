"""Reading a finished run's stored results: pages of predictions, the layout, downloads."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from cellfoundry.errors import CellfoundryError, ConflictError, NotFoundError
from cellfoundry.stats.labels import UNKNOWN
from cellfoundry.store.storage import FileStorage
from cellfoundry.store.tables import Dataset, Result, Run, RunState

log = logging.getLogger("cellfoundry.service")


def finished_result(s: Session, run: Run) -> Result:
    """The stored result of ``run``; 409 while it is not succeeded, 404 when none was stored."""
    if run.state != RunState.SUCCEEDED:
        reason = f": {run.error_message}" if run.error_message else ""
        raise ConflictError(
            f"run '{run.id}' is {run.state}{reason}",
            "poll GET /status/{run_id} until the state is 'succeeded'",
            code="run_not_finished",
        )
    res = s.get(Result, run.id)
    if res is None:
        raise NotFoundError(
            f"run '{run.id}' has no stored result", "submit the run again", code="result_not_found"
        )
    return res


def predictions_file(storage: FileStorage, run: Run, res: Result) -> Path:
    """The run's per-cell predictions file (404 for runs without per-cell output)."""
    if "predictions" not in res.files:
        raise NotFoundError(
            f"run '{run.id}' ({run.application_id}) has no per-cell output",
            "use an annotation, consensus or evaluation run",
            code="no_predictions",
        )
    path = storage.resolve(res.files["predictions"])
    if not path.is_file():  # removed from the storage folder (or never copied to this host)
        raise NotFoundError(
            f"the stored predictions of run '{run.id}' are missing",
            "submit the run again (the storage folder no longer holds its result files)",
            code="result_file_missing",
        )
    return path


@contextmanager
def reading_stored(run: Run, *, values: bool = False) -> Iterator[None]:
    """Read ``run``'s stored result files inside: a damaged file (truncated, overwritten) is
    answered 500 ``result_file_damaged`` with what to do, never an unexplained error; the
    details go to the log. ``values``: ValueError counts too (numpy and h5py files)."""
    import pyarrow as pa

    # what reading a truncated or overwritten file raises: pyarrow's Arrow exceptions; numpy's
    # and h5py's OSError, EOFError or ValueError (no CellfoundryError is one of these)
    kinds = (OSError, EOFError, pa.ArrowException, *((ValueError,) if values else ()))
    try:
        yield
    except kinds as exc:
        raise CellfoundryError(
            f"the stored result of run '{run.id}' is damaged and cannot be read",
            "submit the run again (its file in the storage folder was truncated or overwritten)",
            code="result_file_damaged",
            status=500,
        ) from exc


@dataclass(frozen=True)
class LevelView:
    """A stored result seen at a broader Cell Ontology level (the results' roll-up toggle)."""

    level: str
    names: dict[str, str]  # class -> its name at the level (an unmapped class keeps its own)
    terms: dict[str, str]  # class -> its term at the level ("" when unmapped)
    summary: dict[str, Any]  # level, rolled_up_counts, rolled_up_terms (as annotate(level=))

    def cell(self, item: dict[str, Any]) -> dict[str, Any]:
        """A cell item (``cell_items``) with its call at the level added."""
        pred = str(item["predicted"])
        rolled = self.names.get(pred, pred)
        item["rolled_up_predicted"] = rolled
        item["rolled_up_label"] = UNKNOWN if item["unknown"] else rolled
        item["rolled_up_ontology_term_id"] = self.terms.get(pred, "")
        return item


def check_level(level: str) -> None:
    """422 unless ``level`` is a roll-up set ("broad") or a Cell Ontology term id or name."""
    from cellfoundry.ontology import LEVEL_SETS, OntologyError, level_terms

    try:
        level_terms(level)
    except OntologyError as err:
        raise CellfoundryError(
            f"level '{level}': {err.message}",
            f"give level={' or '.join(LEVEL_SETS)} (broad compartments: T cell, monocyte, ...), "
            "a Cell Ontology id such as CL:0000084 or a term's exact name such as 'T cell' or "
            "'monocyte'; leave level out for the model's own classes",
            code="invalid_level",
            status=422,
        ) from err


def class_terms(run: Run, summary: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The stored summary's labels and each one's Cell Ontology term ("" when unmapped): its
    classes at their stored terms (mapped from their names when the summary has none), then a
    consensus's broader calls (a common term of the models' classes, by CL name)."""
    from cellfoundry.ontology import map_labels

    onto = summary.get("ontology") or {}
    stored = onto.get("terms") or {}
    counts = summary.get("label_counts") or {}
    classes = [str(c) for c in summary.get("classes") or stored or counts]
    if not classes:
        raise ConflictError(
            f"run '{run.id}' ({run.application_id}) has no cell-type labels to roll up",
            "use level with annotation, consensus or evaluation runs",
            code="no_labels",
        )
    if all(isinstance(stored.get(c), dict) for c in classes):
        terms = [str(stored[c].get("id") or "") for c in classes]
    else:
        terms = map_labels(classes).term_ids(classes)
    extra = [str(k) for k in counts if str(k) not in classes and str(k) != UNKNOWN]
    if extra:
        classes, terms = classes + extra, list(terms) + map_labels(extra).term_ids(extra)
    return classes, [str(t or "") for t in terms]


def level_view(run: Run, summary: dict[str, Any], level: str) -> LevelView:
    """The stored summary's classes rolled up to ``level`` with the library's roll-up (the CLI's
    ``--level``): each class at its term (``class_terms``), counts summed from the stored
    ``label_counts``."""
    from cellfoundry.ontology import roll_up_classes, roll_up_counts

    check_level(level)
    classes, terms = class_terms(run, summary)
    names, rolled = roll_up_classes(classes, terms, level)
    return LevelView(
        level=level,
        names=dict(zip(classes, names, strict=True)),
        terms=dict(zip(classes, rolled, strict=True)),
        summary=roll_up_counts(summary.get("label_counts") or {}, classes, terms, level),
    )


def labels_at_level(
    labels: Sequence[str], terms: Sequence[str] | None, level: str
) -> dict[str, str]:
    """Each label's name at ``level`` (``Unknown`` left out: it stays), given its CL term, or
    mapped from its name when ``terms`` is None (a consensus model's own classes)."""
    from cellfoundry.ontology import map_labels, roll_up_classes

    keep = [i for i, lab in enumerate(labels) if lab != UNKNOWN]
    named = [str(labels[i]) for i in keep]
    if not named:
        return {}
    given = map_labels(named).term_ids(named) if terms is None else [terms[i] for i in keep]
    names, _ = roll_up_classes(named, given, level)
    return dict(zip(named, names, strict=True))


def level_options(run: Run, summary: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The levels worth offering for this result (the results' roll-up toggle): the named sets
    ("broad"), then the library's ``candidate_levels`` of its predicted types (the broader terms
    that merge some of them, largest first); None for a result without cell-type labels."""
    from cellfoundry.ontology import LEVEL_SETS, candidate_levels, level_terms, roll_up_classes

    if not (summary.get("classes") or summary.get("label_counts")):
        return None
    classes, terms = class_terms(run, summary)
    counts = summary.get("label_counts") or None
    out: list[dict[str, Any]] = []
    for name in LEVEL_SETS:
        _, rolled = roll_up_classes(classes, terms, name)
        targets = set(level_terms(name))
        merged = {c for c, t in zip(classes, rolled, strict=True) if t in targets}
        out.append(
            {
                "level": name,
                "name": name,
                "term": None,
                "labels": sorted(merged if counts is None else merged & set(counts)),
                "n_cells": sum(int(v) for k, v in (counts or {}).items() if k in merged),
            }
        )
    for cand in candidate_levels(dict(zip(classes, terms, strict=True)), counts):
        out.append(
            {
                "level": cand.term,
                "name": cand.name,
                "term": cand.term,
                "labels": list(cand.labels),
                "n_cells": cand.n_cells,
            }
        )
    return out


def layout_block(storage: FileStorage, s: Session, run: Run, res: Result) -> dict[str, Any]:
    """The 2-D points with, per point, the stored prediction (confidence, top 3) and obs values."""
    import pandas as pd

    from cellfoundry.jobs.applications import OBS_PREFIX, categorical_obs, read_dataset

    lay = read_shown_layout(storage.resolve(res.files["layout"]))
    cells = lay["cell"].astype(str).tolist()
    block: dict[str, Any] = {
        "method": res.summary.get("layout"),
        "sampled": bool(res.summary.get("layout_sampled")),
        "n_points": len(lay),
        "cells": cells,
        "indices": lay["i"].astype(int).tolist() if "i" in lay else None,
        "x": lay["x"].astype(float).round(4).tolist(),
        "y": lay["y"].astype(float).round(4).tolist(),
        "labels": lay["label"].astype(str).tolist() if "label" in lay else None,
        "confidence": None,
        "top3": None,
        "model_labels": None,
    }
    if "predictions" in res.files:
        pred = prediction_rows(storage.resolve(res.files["predictions"]), lay)
        if pred is not None:
            block["confidence"] = [float(c) for c in pred["prediction_confidence"]]
            tops = [c.removesuffix("_label") for c in pred.columns if c.endswith("_label")]
            labels = [pred[f"{t}_label"].astype(str).tolist() for t in tops]
            probs = [pred[f"{t}_probability"].astype(float).tolist() for t in tops]
            block["top3"] = [
                [
                    {"label": lab[j], "probability": pr[j]}
                    for lab, pr in zip(labels, probs, strict=True)
                ]
                for j in range(len(pred))
            ]
            block["model_labels"] = member_labels(pred)
    obs_cols = [c for c in lay.columns if str(c).startswith(OBS_PREFIX)]
    if obs_cols:
        block["obs"] = {
            c.removeprefix(OBS_PREFIX): [None if pd.isna(v) else str(v) for v in lay[c]]
            for c in obs_cols
        }
    else:  # layouts written before the obs columns were stored: read them from the dataset
        block["obs"] = {}
        d = s.get(Dataset, run.dataset_id)
        if d is not None and "i" in lay:
            try:
                adata = read_dataset(storage.resolve(d.path), backed=True)
                if adata.n_obs > int(lay["i"].max()):
                    block["obs"] = categorical_obs(adata.obs, lay["i"].to_numpy())
            except (OSError, CellfoundryError) as exc:
                log.warning("obs columns of %s unavailable: %s", run.id, exc)
    return block


def member_labels(pred: Any) -> dict[str, list[str]] | None:
    """A consensus's per-model labels of the rows (``Unknown`` below the model's threshold), by
    model id; None for a single model's run."""
    from cellfoundry.consensus import member_column

    prefix = member_column("predicted_cell_type", "")
    members = [str(c).removeprefix(prefix) for c in pred.columns if str(c).startswith(prefix)]
    if not members:
        return None
    out = {}
    for m in members:
        labels = pred[member_column("predicted_cell_type", m)].astype(str)
        unknown = pred[member_column("prediction_unknown", m)].astype(bool)
        out[m] = labels.where(~unknown, UNKNOWN).tolist()
    return out


def read_shown_layout(path: Path) -> Any:
    """The layout's rows shown by GET /results: its stratified ``shown`` sample when every cell
    is stored (filtered while reading, before any row becomes a Python object), else all."""
    import pyarrow.parquet as pq

    if "shown" in pq.read_schema(path).names:
        table = pq.read_table(path, filters=[("shown", "=", True)])
        return table.to_pandas().reset_index(drop=True)
    return pq.read_table(path).to_pandas()


def prediction_rows(path: Path, lay: Any) -> Any:
    """The stored prediction rows of the layout's points, in the layout's order (None: no match)."""
    import numpy as np
    import pyarrow.parquet as pq

    from cellfoundry.consensus import member_column

    cols = [
        c
        for c in pq.read_schema(path).names
        if c in ("cell", "prediction_confidence")
        or (c.startswith("top") and c.endswith(("_label", "_probability")))
        or c.startswith(
            (member_column("predicted_cell_type", ""), member_column("prediction_unknown", ""))
        )
    ]
    table = pq.read_table(path, columns=cols)
    cells = lay["cell"].astype(str).to_numpy()
    if "i" in lay:
        idx = lay["i"].to_numpy(dtype=np.int64)
        if len(idx) == 0 or (idx.min() >= 0 and idx.max() < table.num_rows):
            rows = table.take(idx).to_pandas()
            if np.array_equal(rows["cell"].astype(str).to_numpy(), cells):
                return rows.reset_index(drop=True)
    frame = table.to_pandas().drop_duplicates("cell").set_index("cell")
    frame.index = frame.index.astype(str)
    if not np.isin(cells, frame.index).all():
        return None
    return frame.loc[cells].reset_index()


def read_rows(path: Path, start: int, stop: int) -> tuple[Any, int]:
    """Rows ``start:stop`` of a parquet file and its row count, reading only the row groups
    that hold them (the footer says where each group starts)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    md = pf.metadata
    total = md.num_rows
    groups: list[int] = []
    first = offset = 0
    for g in range(md.num_row_groups):
        n = md.row_group(g).num_rows
        if offset < stop and offset + n > start:
            if not groups:
                first = offset
            groups.append(g)
        offset += n
    if not groups:
        return pf.schema_arrow.empty_table(), total
    table = pf.read_row_groups(groups)
    return table.slice(start - first, stop - start), total


def page_predictions(
    path: Path, page: int, page_size: int, view: LevelView | None = None
) -> dict[str, Any]:
    """One page of stored per-cell predictions (+ each call at ``view``'s level, when given)."""
    start = (page - 1) * page_size
    rows, total = read_rows(path, start, start + page_size)
    items = cell_items(rows.to_pandas(), start)
    if view is not None:
        items = [view.cell(it) for it in items]
    return {"page": page, "page_size": page_size, "total": total, "items": items}


def one_cell(path: Path, index: int) -> dict[str, Any]:
    """The stored prediction of the cell in row ``index`` (404 beyond the last row)."""
    rows, total = read_rows(path, index, index + 1)
    if index >= total:
        raise NotFoundError(
            f"no cell {index}: the run has {total} cells (rows 0 to {total - 1})",
            "use the index of a cell from the run's pages (cells.items[].index)",
            code="cell_not_found",
        )
    return cell_items(rows.to_pandas(), index)[0]


def gene_contributions(genes: Any, scores: Any) -> list[dict[str, Any]]:
    """``;``-joined genes (strongest first) and their aligned contributions, as a list."""
    names = [g for g in str(genes or "").split(";") if g]
    values = [float(v) for v in str(scores or "").split(";") if v]
    if len(values) != len(names):
        values = []
    return [{"gene": g, "contribution": values[i] if values else None} for i, g in enumerate(names)]


def cell_items(chunk: Any, start: int) -> list[dict[str, Any]]:
    """The API's view of stored prediction rows (rows ``start``, ``start + 1``, ... of the run)."""
    from cellfoundry.consensus import AGREEMENT_COLUMN, member_column
    from cellfoundry.models.baselines.evidence import DISTANCE_COLUMN as DISTANCE
    from cellfoundry.models.baselines.evidence import OUT_OF_REFERENCE_COLUMN as OUT_OF_REF
    from cellfoundry.models.baselines.evidence import TOP_GENES_COLUMN as TOP_GENES
    from cellfoundry.models.baselines.evidence import TOP_SCORES_COLUMN as TOP_SCORES
    from cellfoundry.result import TERM_COLUMN

    tops = [
        c.removesuffix("_label")
        for c in chunk.columns
        if c.startswith("top") and c.endswith("_label")
    ]
    prefix = member_column("predicted_cell_type", "")
    members = [str(c).removeprefix(prefix) for c in chunk.columns if str(c).startswith(prefix)]

    def model_call(rec: dict[str, Any], m: str) -> dict[str, Any]:
        def col(name: str) -> Any:
            return rec.get(member_column(name, m))

        unknown = bool(col("prediction_unknown"))
        predicted = str(col("predicted_cell_type"))
        call: dict[str, Any] = {
            "label": UNKNOWN if unknown else predicted,
            "predicted": predicted,
            "confidence": float(col("prediction_confidence")),
            "unknown": unknown,
            "ontology_term_id": str(col(TERM_COLUMN) or ""),
        }
        if member_column(TOP_GENES, m) in rec:
            call["top_genes"] = gene_contributions(col(TOP_GENES), col(TOP_SCORES))
        return call

    items = []
    for i, rec in enumerate(chunk.to_dict(orient="records")):
        item: dict[str, Any] = {
            "cell": str(rec["cell"]),
            "index": start + i,
            "label": str(rec["display_label"]),
            "predicted": str(rec["predicted_cell_type"]),
            "confidence": float(rec["prediction_confidence"]),
            "unknown": bool(rec["prediction_unknown"]),
            "top3": [
                {"label": str(rec[f"{t}_label"]), "probability": float(rec[f"{t}_probability"])}
                for t in tops
            ],
        }
        if "true_label" in rec:
            item["true_label"] = str(rec["true_label"])
        if TERM_COLUMN in rec:
            item["ontology_term_id"] = str(rec[TERM_COLUMN])
        if DISTANCE in rec:
            item[DISTANCE] = float(rec[DISTANCE])
        if OUT_OF_REF in rec:
            item[OUT_OF_REF] = bool(rec[OUT_OF_REF])
        if TOP_GENES in rec:
            item["top_genes"] = gene_contributions(rec[TOP_GENES], rec.get(TOP_SCORES))
        if AGREEMENT_COLUMN in rec:
            item["agreement"] = float(rec[AGREEMENT_COLUMN])
        if members:
            item["models"] = {m: model_call(rec, m) for m in members}
        items.append(item)
    return items


def csv_stream(path: Path) -> Iterator[bytes]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    first = True
    for batch in pf.iter_batches(batch_size=20_000):
        yield batch.to_pandas().to_csv(index=False, header=first).encode()
        first = False


_H5AD_LOCK = threading.Lock()


def _columns_of_records(value: Any) -> Any:
    """A copy with every list of records as columns ({key: [values]}), which h5ad can store."""
    if isinstance(value, dict):
        return {k: _columns_of_records(v) for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        keys = list(dict.fromkeys(k for v in value for k in v))
        return {k: [v.get(k) for v in value] for k in keys}
    return value


def annotated_h5ad(storage: FileStorage, run: Run, res: Result, d: Dataset) -> Path:
    """The dataset with the run's predictions written in (built once, then served from disk):
    the stored per-cell columns (a consensus's and each of its models', evidence, ...) in obs,
    the probabilities in obsm and the summary's findings in uns."""
    import anndata as ad
    import numpy as np
    import pandas as pd

    from cellfoundry.data.atomic import written_atomically
    from cellfoundry.data.h5ad_copy import copy_h5ad, read_obs, write_results
    from cellfoundry.data.io import read_data
    from cellfoundry.result import TERM_COLUMN, AnnotationResult, uns_safe

    out = storage.run_dir(run.id) / "annotated.h5ad"
    with _H5AD_LOCK:
        if out.is_file():
            return out
        src = storage.resolve(d.path)
        # an .h5ad is copied as bytes and only its obs / obsm / uns are written: memory holds
        # the per-cell outputs, never the matrix (a 5 GB upload stays 5 GB on disk only)
        as_bytes = src.name.lower().endswith(".h5ad")
        adata = ad.AnnData(obs=read_obs(src)) if as_bytes else read_data(src)
        probs = np.load(storage.resolve(res.files["probabilities"]))
        summ = res.summary
        ar = AnnotationResult(
            obs_names=adata.obs_names.copy(),
            classes=list(summ["classes"]),
            probabilities=probs,
            threshold=float(summ["unknown_threshold"]),
            model_name=str(summ["model"]),
            model_family=str(summ["family"]),
            warnings=list(summ.get("warnings", [])),
        )
        annotated = ar.to_adata(adata)
        stored = pd.read_parquet(storage.resolve(res.files["predictions"]))
        skip = {"cell", "display_label", "true_label"}
        if summ.get("family") != "consensus":  # to_adata wrote the model's own calls already
            skip |= {"predicted_cell_type", TERM_COLUMN, "prediction_confidence"}
            skip.add("prediction_unknown")
        for col in stored.columns:
            if col in skip or (col.startswith("top") and col.endswith(("_label", "_probability"))):
                continue
            values = stored[col]
            if values.dtype == object:  # text: categorical, as the library writes it
                values = values.astype(str).astype("category")
            annotated.obs[col] = values.to_numpy() if values.dtype != "category" else values.values
        uns = annotated.uns["cellfoundry"]
        uns["run_id"] = run.id
        for key in ("marker_overlap", "consensus", "out_of_reference", "reference_distance"):
            if summ.get(key) is not None:
                uns[key] = uns_safe(_columns_of_records(summ[key]))
        with written_atomically(out) as tmp:  # a download never sees a half-written file
            if as_bytes:
                copy_h5ad(src, tmp)
                write_results(
                    tmp, obs=annotated.obs, obsm=dict(annotated.obsm), uns=dict(annotated.uns)
                )
            else:
                annotated.write_h5ad(tmp)
    return out
