"""The real-time path: models kept in memory, a cached gene -> column plan per distinct gene list.

Preprocessing is the batch path's: ``plan_from_genes`` builds the same ``InputPlan`` that
``plan_input`` builds for a dataset, and ``transform`` applies ``log1p_cp10k`` and the alignment.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from cellfoundry.data.genes import SpeciesCall
from cellfoundry.data.orthologs import OrthologMap, OrthologyReport
from cellfoundry.data.prepare import (
    WARN_COVERAGE,
    CellPlan,
    InputPlan,
    cell_features,
    cell_plan,
    plan_from_genes,
    stack_cells,
    transform,
)
from cellfoundry.data.species import mapped_rows, species_map
from cellfoundry.errors import CellfoundryError
from cellfoundry.result import UNKNOWN
from cellfoundry.stats.labels import called_mask

PLAN_CACHE_SIZE = 256


@dataclass(frozen=True)
class GenePlan:
    """What depends only on a request's gene names: species, ortholog map, model column plan."""

    call: SpeciesCall
    omap: OrthologMap | None  # None: human genes, used as named
    plan: InputPlan  # over the human genes
    one_cell: CellPlan | None = None  # ``cell_plan(plan)``: one cell's features, made once


@dataclass
class LoadedModel:
    """A model in memory with its plans per distinct request gene list."""

    model_id: str
    annotator: Any
    plans: OrderedDict[tuple[tuple[str, ...], str | None, str], GenePlan]
    lock: threading.Lock
    owner_id: str | None = None
    public: bool = True
    last: tuple[tuple[tuple[str, ...], str | None, str], GenePlan] | None = None

    def visible_to(self, uid: str) -> bool:
        """Whether user ``uid`` may use this model (public, or theirs)."""
        return self.public or self.owner_id == uid

    def plan(self, genes: tuple[str, ...], species: str | None, values: str) -> GenePlan:
        """The plan of a gene list, kept for the next request that names the same genes
        (a panel repeats across requests); the species is detected once per list."""
        last = self.last
        if last is not None and last[0] == (genes, species, values):
            return last[1]  # the same list as the last request: no hashing of the genes
        key = (genes, species, values)
        with self.lock:
            hit = self.plans.get(key)
            if hit is not None:
                self.plans.move_to_end(key)
                self.last = (key, hit)
                return hit
        call, omap = species_map(genes, species)
        ann = self.annotator
        plan = plan_from_genes(
            genes if omap is None else omap.human_symbols,
            ann.genes,
            values=values,  # type: ignore[arg-type]
            representation=ann.representation,
            key_kind="ensembl" if ann.manifest.gene_key_kind == "ensembl" else "symbol",
            target_name=f"genes of model '{ann.name}'",
        )
        made = GenePlan(call, omap, plan, cell_plan(plan) if omap is None else None)
        with self.lock:
            self.plans[key] = made
            self.last = (key, made)
            while len(self.plans) > PLAN_CACHE_SIZE:
                self.plans.popitem(last=False)
        return made


def cells_to_csr(
    cells: list[dict[str, float]], max_genes: int | None = None
) -> tuple[tuple[str, ...], sp.csr_matrix]:
    """The distinct gene names (first-seen order) and a cells x genes CSR matrix, built sparse.

    Memory is proportional to the values sent, never to cells x distinct genes. Raises a 422
    ``too_many_genes`` error as soon as more than ``max_genes`` distinct names are seen.
    """
    if len(cells) == 1:  # one cell: its own genes, in order
        genes = tuple(cells[0])
        if max_genes is not None and len(genes) > max_genes:
            raise _too_many_genes(max_genes)
        return genes, _one_row(np.fromiter(cells[0].values(), dtype=np.float32, count=len(genes)))
    col: dict[str, int] = {}
    n = sum(len(c) for c in cells)
    indptr = np.zeros(len(cells) + 1, dtype=np.int32)
    indices = np.empty(n, dtype=np.int32)
    data = np.empty(n, dtype=np.float32)
    pos = 0
    for r, cell in enumerate(cells):
        k = len(cell)
        indices[pos : pos + k] = [col.setdefault(g, len(col)) for g in cell]
        data[pos : pos + k] = np.fromiter(cell.values(), dtype=np.float32, count=k)
        pos += k
        indptr[r + 1] = pos
        if max_genes is not None and len(col) > max_genes:
            raise _too_many_genes(max_genes)
    x = sp.csr_matrix((data, indices, indptr), shape=(len(cells), len(col)))
    x.sort_indices()
    return tuple(col), x


def _one_row(values: np.ndarray) -> sp.csr_matrix:
    """One cell's values over its own genes (in order) as a 1 x n CSR matrix."""
    n = len(values)
    indptr = np.array([0, n], dtype=np.int32)
    return sp.csr_matrix((values, np.arange(n, dtype=np.int32), indptr), shape=(1, n))


def with_panel(
    genes: tuple[str, ...], x: sp.csr_matrix, panel: list[str], max_genes: int | None = None
) -> tuple[tuple[str, ...], sp.csr_matrix]:
    """Add the panel's genes that no cell named as all-zero columns (measured, not expressed)."""
    seen = set(genes)
    extra = tuple(dict.fromkeys(g for g in panel if g not in seen))
    if max_genes is not None and len(genes) + len(extra) > max_genes:
        raise _too_many_genes(max_genes)
    shape = (x.shape[0], len(genes) + len(extra))
    return genes + extra, sp.csr_matrix((x.data, x.indices, x.indptr), shape=shape)


def _too_many_genes(max_genes: int) -> CellfoundryError:
    return CellfoundryError(
        f"the request names more than {max_genes:,} distinct genes",
        "send the genes of the model (see GET /models), or submit a batch run",
        code="too_many_genes",
    )


class Predictor:
    """Preloaded models and the per-request computation of /predict."""

    def __init__(self) -> None:
        self.models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def add(
        self, model_id: str, annotator: Any, owner_id: str | None = None, public: bool = True
    ) -> None:
        if not hasattr(annotator, "probabilities") or not hasattr(annotator, "genes"):
            raise CellfoundryError(
                f"model '{model_id}' ({annotator.family}) does not support real-time prediction",
                "submit a batch run with POST /submit instead",
                code="unsupported_model",
            )
        with self._lock:
            self.models[model_id] = LoadedModel(
                model_id, annotator, OrderedDict(), threading.Lock(), owner_id, public
            )

    def remove(self, model_id: str) -> None:
        with self._lock:
            self.models.pop(model_id, None)

    def default_for(self, uid: str) -> LoadedModel | None:
        """The first loaded model that ``uid`` may use."""
        return next((m for m in list(self.models.values()) if m.visible_to(uid)), None)

    def predict(
        self,
        model: LoadedModel,
        cells: list[dict[str, float]],
        *,
        top_k: int = 3,
        values: Literal["counts", "lognorm"] = "counts",
        threshold: float | None = None,
        max_genes: int | None = None,
        species: str | None = None,
        panel: list[str] | None = None,
    ) -> dict[str, Any]:
        """Top-k labels per cell with probabilities, Unknown below the threshold, and the gene coverage.

        CPU-bound: call it off the event loop. ``max_genes`` bounds the distinct gene names.
        Mouse, macaque or pig genes (``species``, else detected from the names) are mapped to
        human orthologs first, as in a batch run.

        ``panel``: the genes measured for these cells. A panel gene a cell does not name is zero,
        a model gene outside the panel is unobserved (reference mean), exactly as for a dataset
        with those genes. Without a panel, a model gene the cell does not name counts as zero.
        """
        prep = self.prepare(
            model, cells, values=values, max_genes=max_genes, species=species, panel=panel
        )
        return self.answer(prep, self.proba(prep), top_k=top_k, threshold=threshold)

    def prepare(
        self,
        model: LoadedModel,
        cells: list[dict[str, float]],
        *,
        values: Literal["counts", "lognorm"] = "counts",
        max_genes: int | None = None,
        species: str | None = None,
        panel: list[str] | None = None,
    ) -> Prepared:
        """Everything of ``predict`` before the model: checks, species, plan and features."""
        x: sp.csr_matrix | None = None
        if len(cells) == 1 and panel is None:  # the common real-time case: no matrix is built
            genes = tuple(cells[0])
            if max_genes is not None and len(genes) > max_genes:
                raise _too_many_genes(max_genes)
            rows = np.fromiter(cells[0].values(), dtype=np.float32, count=len(genes))
        else:
            genes, x = cells_to_csr(cells, max_genes)
            if panel is not None:
                genes, x = with_panel(genes, x, panel, max_genes)
            rows = x.data
        if not np.isfinite(rows).all():
            raise CellfoundryError(
                "expression values must be finite numbers",
                "replace NaN/Inf values",
                code="invalid_expression",
            )
        if values == "counts" and (rows < 0).any():
            raise CellfoundryError(
                "raw counts cannot be negative",
                "send raw counts, or set values='lognorm'",
                code="invalid_expression",
            )
        gp = model.plan(genes, species, values)
        call, plan, orth = gp.call, gp.plan, None
        if gp.omap is not None:
            x, orth = mapped_rows(
                _one_row(rows) if x is None else x,
                call,
                gp.omap,
                log_normalized=values == "lognorm",
            )
            genes = tuple(gp.omap.human_symbols)
        if plan.coverage.n_present == 0:
            ann = model.annotator
            raise CellfoundryError(
                f"none of the {len(genes)} genes sent are genes of model '{model.model_id}'",
                f"send gene {'Ensembl IDs' if plan.coverage.key_kind == 'ensembl' else 'symbols'} such as "
                f"{', '.join(ann.genes[:3])}",
                code="low_gene_coverage",
            )
        cell = cell_features(rows, plan, gp.one_cell) if x is None else None
        return Prepared(
            model,
            len(cells),
            values,
            plan,
            call,
            orth,
            panel is not None,
            cell,
            None if cell is not None else transform(_one_row(rows) if x is None else x, plan),
        )

    def proba(self, prep: Prepared) -> np.ndarray:
        """The model's class probabilities of the prepared cells (rows in order)."""
        return prep.model.annotator.probabilities(  # type: ignore[no-any-return]
            prep.matrix(), prep.plan.unobserved_mask if prep.panel else None
        )

    def answer(
        self,
        prep: Prepared,
        proba: np.ndarray,
        *,
        top_k: int = 3,
        threshold: float | None = None,
    ) -> dict[str, Any]:
        """The /predict answer of the prepared cells from their probabilities."""
        ann = prep.model.annotator
        thr = ann.threshold if threshold is None else float(threshold)
        classes = ann.classes
        k = max(1, min(top_k, len(classes)))
        order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
        cov, orth = prep.plan.coverage, prep.orth
        warnings = []
        if cov.fraction_present < WARN_COVERAGE:
            warnings.append(
                f"only {cov.n_present} of the model's {cov.n_target} genes "
                f"({cov.fraction_present:.1%}) are in the request; "
                + (
                    "the others are unobserved (reference mean)"
                    if prep.panel
                    else "the others count as zero: send 'panel' (the measured genes) so that "
                    "genes outside it are treated as unobserved"
                )
            )
        out = []
        called = called_mask(proba, thr)
        for i in range(prep.n_cells):
            top = [{"label": classes[j], "probability": float(proba[i, j])} for j in order[i]]
            conf = float(proba[i, order[i, 0]])
            out.append(
                {
                    "label": classes[order[i, 0]] if called[i] else UNKNOWN,
                    "confidence": conf,
                    "unknown": not called[i],
                    "top_k": top,
                }
            )
        return {
            "model_id": prep.model.model_id,
            "threshold": thr,
            "values": prep.values,
            "predictions": out,
            "coverage": {
                "n_model_genes": cov.n_target,
                "n_present": cov.n_present,
                "fraction_present": cov.fraction_present,
                "missing_examples": cov.missing_examples[:5],
            },
            "warnings": warnings,
            "species": prep.call.species,
            "orthology": None
            if orth is None
            else {
                "table": orth.table,
                "n_genes": orth.n_genes,
                "n_genes_mapped": orth.n_genes_mapped,
                "n_human_genes": orth.n_human_genes,
                "fraction_counts_mapped": orth.fraction_counts_mapped,
            },
        }


@dataclass
class Prepared:
    """Cells of one request up to the model: features, plan, species and mapping."""

    model: LoadedModel
    n_cells: int
    values: str
    plan: InputPlan
    call: SpeciesCall
    orth: OrthologyReport | None
    panel: bool  # a panel was sent: model genes outside it are unobserved
    cell: tuple[np.ndarray, np.ndarray] | None  # one cell's features (``cell_features``)
    features: sp.csr_matrix | None  # otherwise: cells x model genes

    def matrix(self) -> sp.csr_matrix:
        if self.features is not None:
            return self.features
        assert self.cell is not None
        return stack_cells([self.cell], len(self.plan.alignment.target))

    @property
    def batchable(self) -> bool:
        """One cell whose model call may share a batch with other requests' cells."""
        return self.cell is not None and not self.panel


class ProbaBatcher:
    """Micro-batching: one-cell requests of a model prepared in the same event-loop turn share
    one model call (a request's cost is mostly fixed; its row is computed as if it were alone:
    each row of a cells x genes product and softmax is its own).

    ``await proba(prep)`` queues the cell; the first one schedules the call after the requests
    already runnable (``call_soon``), so batching never waits for more requests to come.
    """

    def __init__(self) -> None:
        self._pending: dict[
            int, tuple[LoadedModel, list[tuple[Prepared, asyncio.Future[Any]]]]
        ] = {}
        self._scheduled = False
        self.calls = 0  # model calls made (for tests and figures)
        self.cells = 0

    async def proba(self, prep: Prepared) -> np.ndarray:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.setdefault(id(prep.model), (prep.model, []))[1].append((prep, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await fut  # type: ignore[no-any-return]

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, {}
        for model, items in pending.values():
            try:
                n_target = len(items[0][0].plan.alignment.target)
                x = stack_cells([p.cell for p, _ in items], n_target)  # type: ignore[misc]
                proba = model.annotator.probabilities(x, None)
            except Exception as exc:
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.calls += 1
            self.cells += len(items)
            for i, (_, fut) in enumerate(items):
                if not fut.done():  # a request whose client went away is cancelled
                    fut.set_result(proba[i : i + 1])
