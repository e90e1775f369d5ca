"""The real-time path: models kept in memory, a cached gene -> column plan per distinct gene list.

Preprocessing is the batch path's: ``plan_from_genes`` builds the same ``InputPlan`` that
``plan_input`` builds for a dataset, and ``transform`` applies ``log1p_cp10k`` and the alignment.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from cellfoundry.data.genes import SpeciesCall
from cellfoundry.data.orthologs import OrthologMap
from cellfoundry.data.prepare import (
    WARN_COVERAGE,
    InputPlan,
    plan_from_genes,
    transform,
    transform_cell,
)
from cellfoundry.data.species import mapped_rows, species_map
from cellfoundry.errors import CellfoundryError
from cellfoundry.result import UNKNOWN

PLAN_CACHE_SIZE = 256


@dataclass(frozen=True)
class GenePlan:
    """What depends only on a request's gene names: species, ortholog map, model column plan."""

    call: SpeciesCall
    omap: OrthologMap | None  # None: human genes, used as named
    plan: InputPlan  # over the human genes


@dataclass
class LoadedModel:
    """A model in memory with its plans per distinct request gene list."""

    model_id: str
    annotator: Any
    plans: OrderedDict[tuple[tuple[str, ...], str | None, str], GenePlan]
    lock: threading.Lock
    owner_id: str | None = None
    public: bool = True

    def visible_to(self, uid: str) -> bool:
        """Whether user ``uid`` may use this model (public, or theirs)."""
        return self.public or self.owner_id == uid

    def plan(self, genes: tuple[str, ...], species: str | None, values: str) -> GenePlan:
        """The plan of a gene list, kept for the next request that names the same genes
        (a panel repeats across requests); the species is detected once per list."""
        key = (genes, species, values)
        with self.lock:
            hit = self.plans.get(key)
            if hit is not None:
                self.plans.move_to_end(key)
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
        made = GenePlan(call, omap, plan)
        with self.lock:
            self.plans[key] = made
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
        if not hasattr(annotator, "logits_or_proba") or not hasattr(annotator, "genes"):
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
        ann = model.annotator
        if plan.coverage.n_present == 0:
            raise CellfoundryError(
                f"none of the {len(genes)} genes sent are genes of model '{model.model_id}'",
                f"send gene {'Ensembl IDs' if plan.coverage.key_kind == 'ensembl' else 'symbols'} such as "
                f"{', '.join(ann.genes[:3])}",
                code="low_gene_coverage",
            )
        feats = transform_cell(rows, plan) if x is None else transform(x, plan)
        proba = ann.logits_or_proba(feats, plan.unobserved_mask if panel is not None else None)
        thr = ann.threshold if threshold is None else float(threshold)
        classes = ann.classes
        k = max(1, min(top_k, len(classes)))
        order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
        cov = plan.coverage
        warnings = []
        if cov.fraction_present < WARN_COVERAGE:
            warnings.append(
                f"only {cov.n_present} of the model's {cov.n_target} genes "
                f"({cov.fraction_present:.1%}) are in the request; "
                + (
                    "the others are unobserved (reference mean)"
                    if panel is not None
                    else "the others count as zero: send 'panel' (the measured genes) so that "
                    "genes outside it are treated as unobserved"
                )
            )
        out = []
        for i in range(len(cells)):
            top = [{"label": classes[j], "probability": float(proba[i, j])} for j in order[i]]
            conf = float(proba[i, order[i, 0]])
            out.append(
                {
                    "label": UNKNOWN if conf < thr else classes[order[i, 0]],
                    "confidence": conf,
                    "unknown": conf < thr,
                    "top_k": top,
                }
            )
        return {
            "model_id": model.model_id,
            "threshold": thr,
            "values": values,
            "predictions": out,
            "coverage": {
                "n_model_genes": cov.n_target,
                "n_present": cov.n_present,
                "fraction_present": cov.fraction_present,
                "missing_examples": cov.missing_examples[:5],
            },
            "warnings": warnings,
            "species": call.species,
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
