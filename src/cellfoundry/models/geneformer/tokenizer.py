"""Geneformer's rank-value encoding (spec §1.6).

Per cell: counts of the vocabulary genes (duplicate columns of one collapsed Ensembl ID summed),
divided by the cell's total count over *all* genes, times 10 000, divided by each gene's
median; non-zero genes ranked by that value, highest first; truncated to the model's input size
(V2: framed by ``<cls>`` … ``<eos>``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import anndata as ad
import numpy as np
import scipy.sparse as sp

from cellfoundry.data.genes import gene_keys, strip_version
from cellfoundry.data.matrix import iter_checked_chunks, source_var
from cellfoundry.data.prepare import DEFAULT_MIN_COVERAGE, InputPlan, plan_input
from cellfoundry.data.report import ValidationReport
from cellfoundry.errors import DataError
from cellfoundry.models.geneformer.dictionaries import GeneformerDictionaries

TARGET_SUM = 10_000.0


@dataclass
class TokenPlan:
    """How one dataset is tokenised: the input plan plus per-kept-gene token ids and medians."""

    input: InputPlan  # matrix choice, alignment and coverage
    selector: sp.csr_matrix  # n_source x n_kept, sums the source columns of each kept gene
    tokens: np.ndarray  # int64, token id of each kept gene (kept genes in source-column order)
    medians: np.ndarray  # float64, normalisation factor of each kept gene

    @property
    def n_genes(self) -> int:
        return len(self.tokens)


class RankValueTokenizer:
    """Turns raw-count cells into Geneformer token sequences."""

    def __init__(
        self,
        dicts: GeneformerDictionaries,
        model_input_size: int,
        special_tokens: bool | None = None,
    ) -> None:
        self.dicts = dicts
        self.model_input_size = int(model_input_size)
        has_specials = dicts.cls_id is not None and dicts.eos_id is not None
        self.special_tokens = has_specials if special_tokens is None else bool(special_tokens)
        if self.special_tokens and not has_specials:
            raise DataError(
                "V2-style tokenisation needs '<cls>' and '<eos>' in the token dictionary",
                "use the gc104M/gc95M dictionaries with V2 models",
            )
        if self.model_input_size < (3 if self.special_tokens else 1):
            raise DataError(
                f"model input size {model_input_size} is too small", "use the model's config"
            )
        self._genes = dicts.genes
        self._token_of = {g: dicts.token_dict[g] for g in self._genes}
        self._collapse = self._collapse_map()

    @property
    def genes(self) -> list[str]:
        return self._genes

    @property
    def max_genes(self) -> int:
        """How many ranked genes fit in one sequence."""
        return self.model_input_size - 2 if self.special_tokens else self.model_input_size

    def _collapse_map(self) -> dict[str, str]:
        """Upper-case Ensembl ID -> vocabulary ID (the ensembl mapping restricted to the vocab)."""
        out = {g.upper(): g for g in self._genes}
        if self.dicts.ensembl_mapping:
            for src, dst in self.dicts.ensembl_mapping.items():
                if dst in self._token_of:
                    out[str(src).upper()] = dst
        return out

    def plan(
        self,
        adata: ad.AnnData,
        *,
        report: ValidationReport | None = None,
        min_coverage: float = DEFAULT_MIN_COVERAGE,
    ) -> TokenPlan:
        """Pick the raw-count matrix, check coverage, map columns to vocabulary genes."""
        plan = plan_input(
            adata,
            self._genes,
            representation="counts",
            key_kind="ensembl",
            target_name="Geneformer vocabulary genes",
            min_coverage=min_coverage,
            report=report,
        )
        names, var = source_var(adata, plan.source)
        keys = gene_keys(list(names), var)
        col_of_gene: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        for i, e in enumerate(keys.ensembl):
            if e is None:
                continue
            g = self._collapse.get(strip_version(e).upper())
            if g is None:
                continue
            j = col_of_gene.setdefault(g, len(col_of_gene))
            rows.append(i)
            cols.append(j)
        kept = list(col_of_gene)
        selector = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(len(names), len(kept))
        )
        tokens = np.array([self._token_of[g] for g in kept], dtype=np.int64)
        medians = np.array([self.dicts.medians[g] for g in kept], dtype=np.float64)
        return TokenPlan(plan, selector, tokens, medians)

    def tokenize_rows(
        self, rows: sp.spmatrix | np.ndarray, plan: TokenPlan, n_counts: np.ndarray | None = None
    ) -> list[np.ndarray]:
        """Token ids (int64) of each raw-count row; ``n_counts`` defaults to each row's total."""
        raw = sp.csr_matrix(rows, dtype=np.float64)
        if raw.nnz and not (np.isfinite(raw.data).all() and (raw.data >= 0).all()):
            raise DataError(
                "negative or non-finite values in the raw-count matrix",
                "Geneformer needs raw (non-negative) counts",
            )
        if n_counts is None:
            n_counts = np.asarray(raw.sum(axis=1)).ravel()
        x = (raw @ plan.selector).tocsr()
        x.sort_indices()
        out: list[np.ndarray] = []
        indptr, indices, data = x.indptr, x.indices, x.data
        cls_id = np.array([self.dicts.cls_id or 0], dtype=np.int64)
        eos_id = np.array([self.dicts.eos_id or 0], dtype=np.int64)
        for r in range(x.shape[0]):
            a, b = indptr[r], indptr[r + 1]
            idx = indices[a:b]
            vals = data[a:b]
            nz = vals != 0
            if not nz.all():
                idx, vals = idx[nz], vals[nz]
            if len(idx):
                norm = vals / n_counts[r] * TARGET_SUM / plan.medians[idx]
                order = np.argsort(-norm)
                ranked = plan.tokens[idx[order[: self.max_genes]]]
            else:
                ranked = np.zeros(0, dtype=np.int64)
            if self.special_tokens:
                ranked = np.concatenate((cls_id, ranked, eos_id))
            out.append(ranked)
        return out

    def iter_tokens(
        self, adata: ad.AnnData, plan: TokenPlan, chunk_size: int = 1024
    ) -> Iterator[tuple[int, list[np.ndarray]]]:
        """Stream ``(start, token sequences)`` chunks; works on backed AnnData. NaN, Inf or a
        negative count anywhere is refused, naming its cell and gene."""
        for start, rows in iter_checked_chunks(adata, plan.input.source, chunk_size):
            yield start, self.tokenize_rows(rows, plan)

    def tokenize(
        self, adata: ad.AnnData, *, report: ValidationReport | None = None
    ) -> list[np.ndarray]:
        """Token sequences of every cell, in cell order."""
        plan = self.plan(adata, report=report)
        out: list[np.ndarray] = []
        for _, toks in self.iter_tokens(adata, plan):
            out.extend(toks)
        return out
