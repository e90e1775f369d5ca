"""The validation report: what a dataset holds, which matrix serves which purpose, what is wrong."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import anndata as ad
import numpy as np

from cellfoundry.data.genes import GeneKeys, SpeciesCall, align_genes, gene_keys, resolve_species
from cellfoundry.data.io import DUPLICATE_CELLS_KEY
from cellfoundry.data.matrix import (
    NON_FINITE_HINT,
    MatrixInfo,
    get_matrix,
    inspect_matrix,
    matrix_sources,
    read_rows,
    source_var,
)
from cellfoundry.data.orthologs import (
    MAPPED_SPECIES,
    OrthologMap,
    OrthologyReport,
    map_orthologs,
    mapped_count_share,
)

Level = Literal["error", "warning", "info"]


@dataclass
class Message:
    level: Level
    code: str
    message: str
    hint: str | None = None


@dataclass
class Coverage:
    """How well a dataset covers a target gene list (e.g. a model's vocabulary)."""

    target: str
    n_target: int
    n_present: int
    fraction_present: float
    fraction_counts_mapped: float | None  # median over sampled cells of mapped counts / all counts
    key_kind: str
    missing_examples: list[str] = field(default_factory=list)


@dataclass
class ValidationReport:
    """A typed, JSON-serialisable account of a dataset."""

    n_cells: int
    n_genes: int
    sparsity: float
    matrices: list[MatrixInfo]
    chosen: dict[str, str | None]  # purpose ("counts", "lognorm") -> matrix source
    gene_id_kind: str
    species: str
    symbol_source: str
    ensembl_source: str
    n_duplicate_genes: int
    duplicate_examples: list[str]
    messages: list[Message] = field(default_factory=list)
    coverage: list[Coverage] = field(default_factory=list)
    obs_columns: list[str] = field(default_factory=list)
    species_evidence: str = ""
    species_source: str = "detected"  # or "given"
    # set for mouse/macaque/pig data: how its genes map to human genes (cellfoundry.data.orthologs)
    orthology: OrthologyReport | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> list[Message]:
        return [m for m in self.messages if m.level == "error"]

    @property
    def warnings(self) -> list[Message]:
        return [m for m in self.messages if m.level == "warning"]

    def matrix(self, source: str) -> MatrixInfo | None:
        return next((m for m in self.matrices if m.source == source), None)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)

    def render(self) -> str:
        """Plain-text rendering for the terminal."""
        lines = [
            f"cells: {self.n_cells:,}   genes: {self.n_genes:,}   sparsity: {self.sparsity:.1%}",
            f"gene IDs: {self.gene_id_kind}; symbols from {self.symbol_source}, "
            f"Ensembl IDs from {self.ensembl_source}",
            f"species: {self.species} ({self.species_source}: {self.species_evidence})",
        ]
        if self.orthology is not None:
            o = self.orthology
            lines.append(
                f"orthologs: {o.describe()}; {o.n_human_summed:,} human genes sum several {o.species} genes, "
                f"{o.n_one_to_many - o.n_one_to_many_kept:,} one-to-many genes left out"
            )
        if self.n_duplicate_genes:
            lines.append(
                f"duplicate gene names: {self.n_duplicate_genes} (e.g. {', '.join(self.duplicate_examples[:5])}); "
                "the first occurrence is used for alignment"
            )
        lines.append("matrices:")
        for m in self.matrices:
            scale = m.log_scale
            extra = f"; {scale.describe()}" if scale is not None else ""
            lines.append(
                f"  {m.source:<16} {m.kind:<18} range [{m.min_value:.3g}, {m.max_value:.3g}], "
                f"integer share {m.integer_fraction:.1%}, median cell total {m.median_row_total:,.1f}{extra}"
            )
        for purpose, src in self.chosen.items():
            lines.append(f"  -> {purpose}: {src or 'none available'}")
        for c in self.coverage:
            cm = (
                f", {c.fraction_counts_mapped:.1%} of counts mapped"
                if c.fraction_counts_mapped is not None
                else ""
            )
            lines.append(
                f"coverage of {c.target}: {c.n_present:,}/{c.n_target:,} genes ({c.fraction_present:.1%}){cm}"
            )
        for msg in self.messages:
            hint = f"\n      fix: {msg.hint}" if msg.hint else ""
            lines.append(f"{msg.level.upper():<8}{msg.code}: {msg.message}{hint}")
        lines.append("status: " + ("OK" if self.ok else f"{len(self.errors)} error(s)"))
        return "\n".join(lines)


def dataset_gene_keys(adata: ad.AnnData, report: ValidationReport, source: str) -> GeneKeys:
    """Gene keys of the var table behind ``source``, computed once per report."""
    which = "raw" if source == "raw/X" else "var"
    cache: dict[str, GeneKeys] = report.__dict__.setdefault("_gene_keys", {})
    if which not in cache:
        names, var = source_var(adata, source)
        cache[which] = gene_keys(list(names), var)
    return cache[which]


ORTHOLOGY_UNS_KEY = "orthology"  # uns["cellfoundry"][...] of data already mapped to human genes
MIN_ORTHOLOG_GENES = 50  # fewer human genes after mapping cannot serve any model


def ortholog_map(adata: ad.AnnData, report: ValidationReport, source: str) -> OrthologMap:
    """The ortholog mapping of the genes behind ``source`` (computed once per report)."""
    cache: dict[str, OrthologMap] = report.__dict__.setdefault("_ortholog_map", {})
    if source not in cache:
        names, var = source_var(adata, source)
        cache[source] = map_orthologs(
            list(names), var, report.species, report.species_evidence, report.species_source
        )
    return cache[source]


def _orthology(
    adata: ad.AnnData,
    call: SpeciesCall,
    source: str,
    infos: list[MatrixInfo],
    msgs: list[Message],
) -> tuple[OrthologyReport | None, OrthologMap | None]:
    """Ortholog summary: from uns when ``adata`` was already mapped, else computed for mapped species."""
    done = (adata.uns.get("cellfoundry") or {}).get(ORTHOLOGY_UNS_KEY)
    if isinstance(done, dict):
        fields = {k: v for k, v in done.items() if k in OrthologyReport.__dataclass_fields__}
        fields["examples_unmapped"] = list(fields.get("examples_unmapped") or [])
        return OrthologyReport(**fields), None
    if call.species not in MAPPED_SPECIES:
        return None, None
    names, var = source_var(adata, source)
    omap = map_orthologs(list(names), var, call.species, call.evidence, call.source)
    rep = omap.report
    info = next((m for m in infos if m.source == source), None)
    if info is not None and info.kind in ("raw_counts", "noninteger_counts", "log_normalized"):
        rows = read_rows(adata, source, 0, min(500, adata.n_obs))
        rep.fraction_counts_mapped = mapped_count_share(rows, omap, info.kind == "log_normalized")
    if rep.n_human_genes < MIN_ORTHOLOG_GENES:
        msgs.append(
            Message(
                "warning",
                "orthology",
                f"only {rep.n_genes_mapped:,} of {rep.n_genes:,} {call.species} genes have a human ortholog "
                f"({rep.table}; species {call.source}: {call.evidence})",
                "check the species (give it with --species / species=); species 'human' uses the genes as named",
            )
        )
    else:
        msgs.append(
            Message(
                "info",
                "orthology",
                f"{rep.describe()}; models see the human genes",
                "give --species / species= if the species is wrong",
            )
        )
    return rep, omap


COUNT_PREFERENCE = ("layers/counts", "layers/raw_counts", "layers/raw", "raw/X", "X")


def _choose(infos: list[MatrixInfo]) -> dict[str, str | None]:
    by_src = {m.source: m for m in infos}
    order = list(COUNT_PREFERENCE) + [m.source for m in infos if m.source not in COUNT_PREFERENCE]
    counts = next((s for s in order if s in by_src and by_src[s].kind == "raw_counts"), None)
    if counts is None:
        counts = next(
            (s for s in order if s in by_src and by_src[s].kind == "noninteger_counts"), None
        )
    lognorm_src = counts
    if lognorm_src is None:
        lognorm_src = next(
            (
                s
                for s in ("X", "raw/X", *by_src)
                if s in by_src and by_src[s].kind == "log_normalized"
            ),
            None,
        )
    return {"counts": counts, "lognorm": lognorm_src}


def _negatives(m: MatrixInfo) -> str:
    return (
        f"{m.n_negative:,} negative values in its "
        + ("" if m.sampled_rows == m.shape[0] else "first ")
        + f"{m.sampled_rows:,} cells, e.g. {m.negative_example}"
    )


def _duplicate_cells(adata: ad.AnnData) -> list[Message]:
    """Cell names that occur more than once: renamed by ``read_data`` (recorded in uns), or
    still repeated in an AnnData given as is."""
    read_as = adata.uns.get("cellfoundry")
    renamed = read_as.get(DUPLICATE_CELLS_KEY) if isinstance(read_as, dict) else None
    if isinstance(renamed, dict):
        return [
            Message(
                "warning",
                "duplicate_cells",
                f"{renamed['n_renamed']:,} of {renamed['n_cells']:,} cells repeat an earlier cell's name "
                f"({renamed['n_repeated_names']:,} names occur more than once); the repeats were renamed "
                f"with a suffix -1, -2, ... ({'; '.join(renamed['examples'])}). Outputs keep the "
                "input's row order, so output row i is input row i",
                "nothing to do when rows are matched by position; to match by name, give every cell "
                "a unique name (e.g. barcode plus sample)",
            )
        ]
    counts = adata.obs_names.value_counts()
    repeated = counts[counts > 1]
    if not len(repeated):
        return []
    shown = ", ".join(f"'{n}' ({c}x)" for n, c in repeated.head(5).items())
    return [
        Message(
            "warning",
            "duplicate_cells",
            f"{int(repeated.sum() - len(repeated)):,} of {adata.n_obs:,} cells repeat an earlier cell's "
            f"name ({len(repeated):,} names occur more than once, e.g. {shown}); outputs keep the row "
            "order, so match them to the input by position, not by name",
            "make the names unique first: adata.obs_names_make_unique() (appends -1, -2, ...)",
        )
    ]


def validate(adata: ad.AnnData, species: str | None = None) -> ValidationReport:
    """Inspect every candidate matrix and the gene names; never modifies ``adata``.

    ``species`` overrides the species detected from the gene IDs (None or "auto": detect).
    """
    msgs: list[Message] = []
    if adata.n_obs == 0 or adata.n_vars == 0:
        msgs.append(
            Message(
                "error",
                "empty",
                f"the dataset has {adata.n_obs} cells and {adata.n_vars} genes",
                "upload a matrix with at least one cell and one gene",
            )
        )
    read_as = adata.uns.get("cellfoundry")
    if isinstance(read_as, dict) and read_as.get("table_orientation") == "genes x cells":
        msgs.append(
            Message(
                "info",
                "genes_by_cells",
                "the table has genes as rows; it was read transposed (one row per cell)",
                "nothing to do; tables with cells as rows need no option",
            )
        )
    msgs.extend(_duplicate_cells(adata))
    infos = (
        [inspect_matrix(adata, s) for s in matrix_sources(adata)]
        if adata.n_obs and adata.n_vars
        else []
    )
    chosen = _choose(infos)
    for m in infos:
        if m.kind == "invalid":
            msgs.append(
                Message(
                    "warning" if chosen["counts"] or chosen["lognorm"] else "error",
                    "nan_inf",
                    f"{m.source} contains {m.n_nan:,} NaN and {m.n_inf:,} Inf values in the first "
                    f"{m.sampled_rows:,} cells, e.g. {m.non_finite_example}",
                    NON_FINITE_HINT,
                )
            )
        if m.kind == "scaled":
            msgs.append(
                Message(
                    "info",
                    "scaled_matrix",
                    f"{m.source} holds scaled values: {_negatives(m)}; it is not used",
                    "scaled data cannot be normalised per cell; raw counts or log-normalised values are used instead",
                )
            )
        scale = m.log_scale
        if scale is not None and not scale.determined:
            msgs.append(
                Message(
                    "warning",
                    "log_scale_unknown",
                    f"{m.source} looks log-normalised but its scale cannot be determined "
                    f"({scale.evidence}); it is refused",
                    "provide raw counts (layers['counts'] or .raw), or natural-log log1p values of "
                    "counts per 10,000 (sc.pp.normalize_total(adata, target_sum=1e4); sc.pp.log1p(adata))",
                )
            )
        elif scale is not None and not scale.is_model_convention:
            msgs.append(
                Message(
                    "info",
                    "log_scale_converted",
                    f"{m.source} is {scale.describe()} ({scale.evidence}); it is converted to "
                    "natural log1p of counts per 10,000 when used",
                )
            )
        if m.kind == "noninteger_counts":
            msgs.append(
                Message(
                    "warning",
                    "noninteger_counts",
                    f"{m.source} looks like counts but {1 - m.integer_fraction:.1%} of values are not integers",
                    "fine for corrected counts; foundation-model tokenisers will use them as given",
                )
            )
    if infos and chosen["lognorm"] is None:
        kinds = ", ".join(
            f"{m.source}={m.kind}" + (f": {_negatives(m)}" if m.kind == "scaled" else "")
            for m in infos
        )
        msgs.append(
            Message(
                "error",
                "no_usable_matrix",
                f"no raw-count or log-normalised matrix found ({kinds})",
                "store raw counts in layers['counts'] (or .raw), e.g. adata.layers['counts'] = counts"
                + (
                    "; scaled (z-scored, e.g. sc.pp.scale) values cannot be turned back into counts"
                    if any(m.kind == "scaled" for m in infos)
                    else ""
                ),
            )
        )
    elif infos and chosen["counts"] is None:
        msgs.append(
            Message(
                "warning",
                "no_raw_counts",
                f"no raw counts found; {chosen['lognorm']} is log-normalised and is used for baselines "
                "(converted to natural log1p CP10k when its scale differs)",
                "foundation models need raw counts: add them as layers['counts']",
            )
        )
    src_for_genes = chosen["counts"] or chosen["lognorm"] or "X"
    names, var = source_var(adata, src_for_genes)
    keys = gene_keys(list(names), var)
    cached_keys = {"raw" if src_for_genes == "raw/X" else "var": keys}
    vc = names.value_counts()
    dups = vc[vc > 1]
    if len(dups):
        msgs.append(
            Message(
                "warning",
                "duplicate_genes",
                f"{len(dups)} gene names occur more than once (e.g. {', '.join(map(str, dups.index[:5]))})",
                "duplicates are resolved by using the first occurrence; rename or sum them for full control",
            )
        )
    if keys.id_kind in ("ensembl", "ensembl_versioned") and keys.symbol_source.startswith("var["):
        msgs.append(
            Message(
                "info",
                "ensembl_names",
                f"var_names are Ensembl IDs; symbols are in {keys.symbol_source}",
                "nothing to do: models keyed by symbol use that column",
            )
        )
    if keys.id_kind == "mixed":
        msgs.append(
            Message(
                "warning",
                "mixed_ids",
                "var_names mix Ensembl IDs and symbols",
                "use one kind of gene ID in var_names; each name is mapped separately for now",
            )
        )
    for n in keys.notes:
        msgs.append(Message("info", "gene_ids", n))
    call = resolve_species(species, list(names))
    orthology, omap = _orthology(adata, call, src_for_genes, infos, msgs)
    if orthology is not None:
        given = orthology.species_source == "given"
        call = SpeciesCall(
            orthology.species, orthology.species_evidence, "given" if given else "detected"
        )
    elif call.species == "other":
        msgs.append(
            Message(
                "warning",
                "species",
                f"genes are not human ({call.evidence}) and no ortholog table ships for this species",
                "map genes to human orthologs yourself (mouse, rhesus, cynomolgus and pig are mapped automatically)",
            )
        )
    # sparsity of the matrix that is used (exact for in-memory sparse, else from the sample)
    used = next((m for m in infos if m.source == src_for_genes), None)
    sparsity = 0.0
    if used is not None:
        nnz = None if adata.isbacked else getattr(get_matrix(adata, used.source), "nnz", None)
        total = max(used.shape[0] * used.shape[1], 1)
        sparsity = 1.0 - (nnz / total if nnz is not None else used.nnz_fraction)
    report = ValidationReport(
        n_cells=int(adata.n_obs),
        n_genes=len(names),
        sparsity=float(sparsity),
        matrices=infos,
        chosen=chosen,
        gene_id_kind=keys.id_kind,
        species=call.species,
        species_evidence=call.evidence,
        species_source=call.source,
        orthology=orthology,
        symbol_source=keys.symbol_source,
        ensembl_source=keys.ensembl_source,
        n_duplicate_genes=len(dups),
        duplicate_examples=[str(d) for d in dups.index[:10]],
        messages=msgs,
        obs_columns=[str(c) for c in adata.obs.columns],
    )
    report.__dict__["_gene_keys"] = cached_keys
    if omap is not None:
        report.__dict__["_ortholog_map"] = {src_for_genes: omap}
    return report


def coverage(
    adata: ad.AnnData,
    report: ValidationReport,
    target: Sequence[str],
    target_name: str,
    key_kind: Literal["symbol", "ensembl"] | None = None,
    sample_rows: int = 500,
) -> Coverage:
    """Coverage of ``target`` by the dataset (genes present, share of counts mapped); added to ``report``."""
    src = report.chosen["counts"] or report.chosen["lognorm"] or "X"
    keys = dataset_gene_keys(adata, report, src)
    al = align_genes(keys, target, key_kind)
    frac_counts: float | None = None
    if report.chosen["counts"] and adata.n_obs:
        rows = read_rows(adata, src, 0, min(sample_rows, adata.n_obs))
        tot = np.asarray(rows.sum(axis=1)).ravel()
        present = np.unique(al.source_index[al.source_index >= 0])
        mapped = np.asarray(rows[:, present].sum(axis=1)).ravel()
        ok = tot > 0
        frac_counts = float(np.median(mapped[ok] / tot[ok])) if ok.any() else 0.0
    cov = Coverage(
        target=target_name,
        n_target=len(al.target),
        n_present=al.n_present,
        fraction_present=al.fraction_present,
        fraction_counts_mapped=frac_counts,
        key_kind=al.key_kind,
        missing_examples=al.missing(10),
    )
    report.coverage = [c for c in report.coverage if c.target != target_name] + [cov]
    return cov
