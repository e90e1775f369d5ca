"""Orthology, offline: which human gene each gene of a mouse, macaque or pig dataset stands for.

The Ensembl ortholog tables and the mouse gene table ship in ``resources/`` (provenance and
checksums in ``resources/PROVENANCE.md``). The rules, applied gene by gene:

- A data gene is looked up by its symbol: exactly, else case-insensitively when that is unique.
  A mouse Ensembl ID (``ENSMUSG…``) is first turned into its symbol by the mouse gene table,
  falling back to the dataset's own symbol column.
- **One-to-one**: the gene becomes its human ortholog.
- **Many-to-one** (several data genes have the same single human ortholog): their values are
  summed into that human gene. Counts are summed as they are. Log-normalised values are summed
  in linear space, as ``log1p(sum(expm1(x)))``.
- **One-to-many** (a data gene has several human orthologs): it goes to the ortholog with the
  same name, compared case-insensitively, when there is one. Otherwise it is ambiguous and left
  out. Its counts are never copied into several genes.
- A data gene with no human ortholog is left out. A human gene that no data gene maps to is
  absent from the result, so a model treats it as unobserved, never as zero expression.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellfoundry.data.genes import gene_keys, gene_table, is_ensembl, strip_version

MAPPED_SPECIES = ("mouse", "rhesus", "cynomolgus", "pig")
_TABLES = {
    "mouse": ("ensembl105_human_mouse_orthologs.csv.gz", "Ensembl 105 human-mouse orthologs"),
    "rhesus": ("ensembl110_human_rhesus_orthologs.csv.gz", "Ensembl 110 human-rhesus orthologs"),
    "cynomolgus": (
        "ensembl110_human_cynomolgus_orthologs.csv.gz",
        "Ensembl 110 human-cynomolgus orthologs",
    ),
    "pig": ("ensembl110_human_pig_orthologs.csv.gz", "Ensembl 110 human-pig orthologs"),
}
MOUSE_GENE_TABLE = "gencode_mouse_id2name.csv.gz"
RULE = (
    "one-to-one: renamed to the human ortholog; many-to-one: values summed into the human gene "
    "(log-normalised values in linear space); one-to-many: kept only for the human ortholog of the "
    "same name, else left out; no ortholog: left out, so the human gene is unobserved (not zero)"
)


def _read_pairs(name: str) -> pd.DataFrame:
    ref = resources.files("cellfoundry.data.resources").joinpath(name)
    with ref.open("rb") as raw, gzip.open(raw, "rt") as fh:
        return pd.read_csv(fh, header=None, names=["a", "b"], dtype=str, keep_default_na=False)


@dataclass(frozen=True)
class OrthologTable:
    """Symbol of a gene of ``species`` -> its human orthologs (symbols), from a shipped table."""

    species: str
    source: str
    to_human: dict[str, tuple[str, ...]]
    by_upper: dict[str, str]  # upper-cased symbol -> symbol, only where that is unique

    def lookup(self, symbol: str) -> tuple[str, ...]:
        hit = self.to_human.get(symbol)
        if hit is None:
            exact = self.by_upper.get(symbol.upper())
            hit = self.to_human.get(exact, ()) if exact else ()
        return hit


@lru_cache(maxsize=len(_TABLES))
def ortholog_table(species: str) -> OrthologTable:
    """The shipped human <-> ``species`` table, loaded once per process."""
    if species not in _TABLES:
        raise KeyError(species)
    name, source = _TABLES[species]
    pairs = _read_pairs(name)
    to_human: dict[str, list[str]] = {}
    for human, other in zip(pairs["a"], pairs["b"], strict=True):
        to_human.setdefault(other, []).append(human)
    uppers: dict[str, list[str]] = {}
    for other in to_human:
        uppers.setdefault(other.upper(), []).append(other)
    return OrthologTable(
        species=species,
        source=source,
        to_human={k: tuple(v) for k, v in to_human.items()},
        by_upper={u: v[0] for u, v in uppers.items() if len(v) == 1},
    )


@lru_cache(maxsize=1)
def mouse_gene_table() -> dict[str, str]:
    """Mouse Ensembl gene ID (version-free) -> symbol, from the shipped GENCODE mouse table."""
    pairs = _read_pairs(MOUSE_GENE_TABLE)
    return dict(zip(pairs["a"], pairs["b"], strict=True))


@dataclass
class OrthologyReport:
    """What the mapping of one dataset's genes to human genes kept, summed and left out."""

    species: str
    species_evidence: str
    species_source: str  # "detected" or "given"
    table: str
    gene_route: str  # how data genes became symbols of their species
    n_genes: int  # genes of the dataset
    n_genes_mapped: int  # data genes that went into a human gene
    n_human_genes: int  # human genes after mapping
    n_human_summed: int  # human genes that are the sum of several data genes (many-to-one)
    n_one_to_many: int  # data genes with several human orthologs
    n_one_to_many_kept: int  # of those, kept for the human ortholog of the same name
    fraction_genes_mapped: float
    fraction_counts_mapped: float | None = None  # median over sampled cells
    rule: str = RULE
    examples_unmapped: list[str] = field(default_factory=list)

    def describe(self) -> str:
        counts = (
            f", {self.fraction_counts_mapped:.1%} of counts"
            if self.fraction_counts_mapped is not None
            else ""
        )
        return (
            f"{self.species} genes mapped to human orthologs ({self.table}): "
            f"{self.n_genes_mapped:,} of {self.n_genes:,} genes ({self.fraction_genes_mapped:.1%}{counts}) "
            f"-> {self.n_human_genes:,} human genes"
        )


@dataclass
class OrthologMap:
    """The mapping as a matrix: data genes x human genes, 1 where a data gene goes to a human gene."""

    report: OrthologyReport
    human_symbols: list[str]
    human_ids: list[str | None]
    sources: list[list[str]]  # per human gene, the data genes summed into it
    column: np.ndarray  # per data gene: its human column, -1 when left out

    @property
    def matrix(self) -> sp.csr_matrix:
        keep = np.flatnonzero(self.column >= 0)
        return sp.csr_matrix(
            (np.ones(len(keep), dtype=np.float32), (keep, self.column[keep])),
            shape=(len(self.column), len(self.human_symbols)),
        )


def species_symbols(
    names: Sequence[str], var: pd.DataFrame | None, species: str
) -> tuple[list[str | None], str]:
    """Each data gene's symbol in its own species, and how it was found."""
    keys = gene_keys(names, var)  # symbol columns of var are picked up here
    symbols = list(keys.symbols) if keys.symbol_source.startswith("var[") else None
    n_ids = sum(is_ensembl(n) for n in names)
    if species == "mouse" and n_ids:
        table = mouse_gene_table()
        out: list[str | None] = []
        for i, n in enumerate(names):
            if is_ensembl(n):
                out.append(table.get(strip_version(n)) or (symbols[i] if symbols else None))
            else:
                out.append(n)
        return out, "mouse Ensembl IDs through the shipped mouse gene table (GENCODE)"
    if n_ids and symbols is not None:
        return symbols, f"symbols from {keys.symbol_source}"
    return [None if is_ensembl(n) else n for n in names], "symbols in var_names"


def map_orthologs(
    names: Sequence[str],
    var: pd.DataFrame | None,
    species: str,
    evidence: str = "",
    species_source: str = "given",
) -> OrthologMap:
    """Map the genes ``names`` of ``species`` to human genes (rules in the module docstring)."""
    names = [str(n) for n in names]
    table = ortholog_table(species)
    symbols, route = species_symbols(names, var, species)
    human_col: dict[str, int] = {}
    human_symbols: list[str] = []
    sources: list[list[str]] = []
    column = np.full(len(names), -1, dtype=np.int64)
    n_multi = n_multi_kept = 0
    unmapped: list[str] = []
    for i, sym in enumerate(symbols):
        humans = table.lookup(sym) if sym else ()
        if len(humans) > 1:
            n_multi += 1
            same = [h for h in humans if sym and h.upper() == sym.upper()]
            humans = tuple(same[:1])
            n_multi_kept += bool(humans)
        if not humans:
            if len(unmapped) < 10:
                unmapped.append(names[i])
            continue
        h = humans[0]
        j = human_col.get(h)
        if j is None:
            j = human_col[h] = len(human_symbols)
            human_symbols.append(h)
            sources.append([])
        column[i] = j
        sources[j].append(names[i])
    hg = gene_table()
    n_mapped = int((column >= 0).sum())
    report = OrthologyReport(
        species=species,
        species_evidence=evidence,
        species_source=species_source,
        table=table.source,
        gene_route=route,
        n_genes=len(names),
        n_genes_mapped=n_mapped,
        n_human_genes=len(human_symbols),
        n_human_summed=sum(len(s) > 1 for s in sources),
        n_one_to_many=n_multi,
        n_one_to_many_kept=n_multi_kept,
        fraction_genes_mapped=n_mapped / max(len(names), 1),
        examples_unmapped=unmapped,
    )
    return OrthologMap(
        report=report,
        human_symbols=human_symbols,
        human_ids=hg.to_ensembl(human_symbols),
        sources=sources,
        column=column,
    )


def to_human_rows(
    rows: sp.spmatrix | np.ndarray, omap: OrthologMap, log_normalized: bool
) -> sp.csr_matrix:
    """Cells x data genes -> cells x human genes (many-to-one summed; see the module docstring)."""
    x = sp.csr_matrix(rows, dtype=np.float32)
    m = omap.matrix
    if not log_normalized:
        return (x @ m).tocsr()
    lin = x.copy()
    lin.data = np.expm1(lin.data)
    out = (lin @ m).tocsr()
    out.data = np.log1p(out.data)
    return out


def mapped_count_share(rows: sp.spmatrix, omap: OrthologMap, log_normalized: bool) -> float:
    """Median over cells of the share of a cell's counts held by genes that were mapped."""
    x = sp.csr_matrix(rows, dtype=np.float64)
    if log_normalized:
        x.data = np.expm1(x.data)
    x.data = np.where(np.isfinite(x.data), x.data, 0)
    tot = np.asarray(x.sum(axis=1)).ravel()
    mapped = np.asarray(x[:, np.flatnonzero(omap.column >= 0)].sum(axis=1)).ravel()
    ok = tot > 0
    return float(np.median(mapped[ok] / tot[ok])) if ok.any() else 0.0
