"""The species step: bring mouse, macaque or pig data into the human gene space of the models.

``to_human_space`` runs before everything else (training, annotation, embedding, fine-tuning,
evaluation). Human data passes through unchanged. Data of a mapped species becomes a new
in-memory AnnData whose genes are human symbols (Ensembl IDs in ``var['gene_ids']``), built by
the rules of ``cellfoundry.data.orthologs``. The usual path then applies: a model gene with no
ortholog in the data is missing, and missing genes are treated as unobserved. The new AnnData
records the mapping in ``uns['cellfoundry']['orthology']``, so its validation report still names
the original species and the mapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace
from functools import lru_cache

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellfoundry.data.genes import SpeciesCall, resolve_species
from cellfoundry.data.matrix import iter_checked_chunks
from cellfoundry.data.orthologs import (
    MAPPED_SPECIES,
    OrthologMap,
    OrthologyReport,
    map_orthologs,
    mapped_count_share,
    to_human_rows,
)
from cellfoundry.data.report import (
    MIN_ORTHOLOG_GENES,
    ORTHOLOGY_UNS_KEY,
    ValidationReport,
    ortholog_map,
    validate,
)
from cellfoundry.errors import DataError


def is_mapped(adata: ad.AnnData) -> bool:
    """True when ``adata`` is already the human-space result of ``to_human_space``."""
    return isinstance((adata.uns.get("cellfoundry") or {}).get(ORTHOLOGY_UNS_KEY), dict)


def to_human_space(
    adata: ad.AnnData,
    species: str | None = None,
    *,
    report: ValidationReport | None = None,
    chunk_size: int = 10_000,
    max_cells: int | None = None,
) -> tuple[ad.AnnData, ValidationReport]:
    """``adata`` in human genes, with its validation report.

    ``species`` overrides detection: None or "auto" detects it, and "human" uses the genes as
    named. Refuses when the mapping keeps too few genes to serve any model. ``max_cells`` maps
    only the first cells (enough for a report's coverage figures).
    """
    rep = report if report is not None and species is None else validate(adata, species)
    if rep.orthology is None or is_mapped(adata):
        return adata, rep
    o = rep.orthology
    if o.n_human_genes < MIN_ORTHOLOG_GENES:
        raise DataError(
            f"only {o.n_genes_mapped:,} of the {o.n_genes:,} genes map to human orthologs "
            f"({o.n_human_genes} human genes; species {rep.species}, {rep.species_source}: "
            f"{rep.species_evidence}; {o.table}); unmapped e.g. {', '.join(o.examples_unmapped[:5])}",
            "check the species and give it with --species / species= (human: use the genes as named); "
            f"{rep.species} genes need {rep.species} symbols"
            + (" or mouse Ensembl IDs (ENSMUSG…)" if rep.species == "mouse" else ""),
            code="orthology",
        )
    source = rep.chosen["counts"] or rep.chosen["lognorm"]
    if source is None:  # nothing usable: the normal path refuses with the report's own reason
        return adata, rep
    info = rep.matrix(source)
    omap = ortholog_map(adata, rep, source)
    log = info is not None and info.kind == "log_normalized"
    n = adata.n_obs if max_cells is None else min(max_cells, adata.n_obs)
    blocks = []
    # checked before the mapping: a many-to-one sum could hide a negative value in a positive one
    for start, rows in iter_checked_chunks(adata, source, max(1, min(chunk_size, n))):
        stop = start + rows.shape[0]
        blocks.append(to_human_rows(rows if stop <= n else rows[: n - start], omap, log))
        if stop >= n:  # max_cells: no further chunk is read
            break
    x = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, len(omap.human_symbols)))
    var = pd.DataFrame(
        {
            "gene_ids": pd.array(omap.human_ids, dtype="string"),
            f"{rep.species}_genes": [";".join(s) for s in omap.sources],
        },
        index=pd.Index(omap.human_symbols, name=None),
    )
    out = ad.AnnData(X=x.astype(np.float32), obs=adata.obs.iloc[: x.shape[0]].copy(), var=var)
    out.uns["cellfoundry"] = {ORTHOLOGY_UNS_KEY: asdict(o)}
    return out, validate(out)


@lru_cache(maxsize=256)
def _gene_list_map(genes: tuple[str, ...], species: str) -> OrthologMap:
    return map_orthologs(list(genes), None, species)


def species_map(
    genes: tuple[str, ...], species: str | None
) -> tuple[SpeciesCall, OrthologMap | None]:
    """The species of a gene list (given or detected) and its ortholog map (None for human data).

    Depends on the names only, so a caller may keep it per distinct gene list (``/predict``).
    """
    call = resolve_species(species, list(genes))
    if call.species not in MAPPED_SPECIES:
        return call, None
    return call, _gene_list_map(genes, call.species)


def mapped_rows(
    rows: sp.csr_matrix, call: SpeciesCall, omap: OrthologMap, *, log_normalized: bool = False
) -> tuple[sp.csr_matrix, OrthologyReport]:
    """Cells over the genes of ``omap`` -> cells over its human genes, with the mapping's report."""
    share = mapped_count_share(rows, omap, log_normalized) if rows.shape[0] else None
    report = replace(
        omap.report,
        species_evidence=call.evidence,
        species_source=call.source,
        fraction_counts_mapped=share,
    )
    return to_human_rows(rows, omap, log_normalized), report


def rows_to_human(
    genes: Sequence[str],
    rows: sp.csr_matrix,
    species: str | None = None,
    *,
    log_normalized: bool = False,
) -> tuple[tuple[str, ...], sp.csr_matrix, SpeciesCall, OrthologyReport | None]:
    """The same step for cells given as values over ``genes`` without an AnnData (``/predict``).

    Returns the human genes, the cells over them, the species and the mapping (None for human
    data, which is returned unchanged). No minimum is applied here: the caller checks coverage.
    """
    call, omap = species_map(tuple(str(g) for g in genes), species)
    if omap is None:
        return tuple(genes), rows, call, None
    x, report = mapped_rows(rows, call, omap, log_normalized=log_normalized)
    return tuple(omap.human_symbols), x, call, report
