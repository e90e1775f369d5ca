"""Gene identifiers: kind detection, offline Ensembl <-> symbol mapping, alignment and coverage.

The human table ships inside the package (``resources/gencode_v44_human_id2name.csv.gz``, see
``resources/PROVENANCE.md``). Other species are detected here and mapped to human genes by
``cellfoundry.data.orthologs``.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Literal

import numpy as np
import pandas as pd

from cellfoundry.errors import DataError

IdKind = Literal["ensembl", "ensembl_versioned", "symbol", "mixed", "empty"]

_ENSEMBL_RE = re.compile(r"^ENS([A-Z]{0,6})G\d{11}(\.\d+)?(_PAR_Y)?$")
# Ensembl stable-ID species codes (ENS + code + G…): ensembl.org/info/genome/stable_ids/prefixes.html
_ENSEMBL_PREFIX_SPECIES = {
    "": "human",
    "R": "human",
    "MUS": "mouse",
    "MMU": "rhesus",
    "MFA": "cynomolgus",
    "SSC": "pig",
}
MAPPING_TABLE = "gencode_v44_human_id2name.csv.gz"
MAPPING_SOURCE = (
    "GENCODE v44 gene_id -> gene_name (human), as shipped in the celltypist 1.7.1 wheel"
)


def is_ensembl(name: str) -> bool:
    """True when ``name`` looks like an Ensembl gene ID (ENSG…, ENSMUSG…, optional version)."""
    return bool(_ENSEMBL_RE.match(name))


def strip_version(name: str) -> str:
    """``ENSG00000141510.17`` -> ``ENSG00000141510``; other names are returned unchanged."""
    m = _ENSEMBL_RE.match(name)
    if not m or not m.group(2):
        return name
    return name[: m.start(2)] + (m.group(3) or "")


def detect_id_kind(names: Sequence[str], min_share: float = 0.9) -> IdKind:
    """Classify gene names as Ensembl IDs (with/without versions), symbols, or mixed."""
    if len(names) == 0:
        return "empty"
    ens = [n for n in names if is_ensembl(str(n))]
    share = len(ens) / len(names)
    if share >= min_share:
        versioned = sum(1 for n in ens if "." in n)
        return "ensembl_versioned" if versioned / len(ens) >= 0.5 else "ensembl"
    if share <= 1 - min_share:
        return "symbol"
    return "mixed"


SPECIES_NAMES = ("human", "mouse", "rhesus", "cynomolgus", "pig")
_MIN_IDS_FOR_PREFIX = 20


@dataclass(frozen=True)
class SpeciesCall:
    """The species of a dataset's genes and why: ``source`` is "detected" or "given"."""

    species: str  # one of SPECIES_NAMES, "other" (an Ensembl prefix we do not map) or "unknown"
    evidence: str
    source: Literal["detected", "given"] = "detected"


def detect_species(names: Sequence[str]) -> SpeciesCall:
    """The species from Ensembl ID prefixes (ENSG, ENSMUSG, ENSMMUG, ENSMFAG, ENSSSCG), else symbol case.

    IDs decide when there are enough of them (macaque and pig files often name unnamed genes by
    their ID amid symbols); otherwise mouse symbols (``Cd3e``, ``mt-Co1``) contain lower-case
    letters and human ones (``CD3E``) do not. Macaque and pig symbols are written like human ones,
    so symbol-only data of those species needs ``species=`` to be given.
    """
    sample = [str(n) for n in names[:20_000]]
    prefixes: dict[str, int] = {}
    for n in sample:
        m = _ENSEMBL_RE.match(n)
        if m:
            sp = _ENSEMBL_PREFIX_SPECIES.get(m.group(1), "other")
            prefixes[sp] = prefixes.get(sp, 0) + 1
    n_ids = sum(prefixes.values())
    if n_ids and (n_ids >= _MIN_IDS_FOR_PREFIX or n_ids >= 0.5 * len(sample)):
        best = max(prefixes, key=lambda k: prefixes[k])
        return SpeciesCall(
            best,
            f"{prefixes[best]:,} of {n_ids:,} Ensembl IDs carry the {best} prefix"
            + (" (ENS…G)" if best == "other" else ""),
        )
    syms = [s for s in sample if not _ENSEMBL_RE.match(s) and any(c.isalpha() for c in s)]
    if not syms:
        return SpeciesCall("unknown", "no gene symbols or Ensembl IDs to judge from")
    lower = sum(1 for s in syms if any(c.islower() for c in s))
    if lower >= 0.5 * len(syms):
        return SpeciesCall(
            "mouse",
            f"{lower / len(syms):.0%} of gene symbols have lower-case letters (mouse style, e.g. Cd3e)",
        )
    if len(syms) - lower >= 0.7 * len(syms):
        return SpeciesCall(
            "human",
            f"{(len(syms) - lower) / len(syms):.0%} of gene symbols are upper-case (human style, e.g. CD3E; "
            "macaque and pig write symbols the same way: give the species if so)",
        )
    return SpeciesCall("unknown", "gene symbols mix upper- and lower-case styles")


def guess_species(names: Sequence[str]) -> str:
    """The detected species name alone (see ``detect_species``)."""
    return detect_species(names).species


_SPECIES_ALIASES = {
    "human": "human",
    "homo_sapiens": "human",
    "hsapiens": "human",
    "mouse": "mouse",
    "mus_musculus": "mouse",
    "mmusculus": "mouse",
    "rhesus": "rhesus",
    "rhesus_macaque": "rhesus",
    "macaca_mulatta": "rhesus",
    "mmulatta": "rhesus",
    "cynomolgus": "cynomolgus",
    "cynomolgus_macaque": "cynomolgus",
    "crab_eating_macaque": "cynomolgus",
    "macaca_fascicularis": "cynomolgus",
    "mfascicularis": "cynomolgus",
    "pig": "pig",
    "sus_scrofa": "pig",
    "sscrofa": "pig",
}


def resolve_species(species: str | None, names: Sequence[str]) -> SpeciesCall:
    """``species`` as given (aliases such as ``mus_musculus`` accepted), or detected when None/"auto"."""
    if species is None or str(species).strip().lower() in ("", "auto"):
        return detect_species(names)
    key = str(species).strip().lower().replace(" ", "_").replace("-", "_")
    if key not in _SPECIES_ALIASES:
        extra = " ('macaque' is two species)" if key == "macaque" else ""
        raise DataError(
            f"unknown species '{species}'{extra}",
            f"use one of: {', '.join(SPECIES_NAMES)}, or 'auto' to detect it from the gene IDs",
            code="unknown_species",
        )
    name = _SPECIES_ALIASES[key]
    return SpeciesCall(name, f"given as '{species}'", "given")


@dataclass(frozen=True)
class GeneTable:
    """Bidirectional human Ensembl <-> symbol table (version-free IDs)."""

    id_to_symbol: dict[str, str]
    symbol_to_id: dict[str, str]
    source: str = MAPPING_SOURCE

    def to_symbol(self, names: Iterable[str | None]) -> list[str | None]:
        return [self.id_to_symbol.get(strip_version(n)) if n else None for n in names]

    def to_ensembl(self, names: Iterable[str | None]) -> list[str | None]:
        out: list[str | None] = []
        for n in names:
            if not n:
                out.append(None)
                continue
            s = str(n)
            out.append(self.symbol_to_id.get(s) or self.symbol_to_id.get(s.upper()))
        return out


@lru_cache(maxsize=1)
def gene_table() -> GeneTable:
    """Load the shipped human mapping table once per process."""
    ref = resources.files("cellfoundry.data.resources").joinpath(MAPPING_TABLE)
    with ref.open("rb") as raw, gzip.open(raw, "rt") as fh:
        df = pd.read_csv(fh, header=None, names=["id", "symbol"], dtype=str)
    df = df.dropna()
    id_to_symbol = dict(zip(df["id"], df["symbol"], strict=True))
    # A symbol used by several IDs maps to the first listed (GENCODE primary) one.
    symbol_to_id: dict[str, str] = {}
    for gid, sym in zip(df["id"], df["symbol"], strict=True):
        symbol_to_id.setdefault(sym, gid)
    return GeneTable(id_to_symbol=id_to_symbol, symbol_to_id=symbol_to_id)


SYMBOL_COLUMNS = (
    "gene_symbols",
    "gene_symbol",
    "feature_name",
    "symbol",
    "symbols",
    "gene_name",
    "gene_names",
    "name",
)
ENSEMBL_COLUMNS = ("gene_ids", "gene_id", "ensembl_id", "ensembl", "feature_id", "id")


@dataclass
class GeneKeys:
    """Both identities of every gene in a dataset, in column order.

    ``symbols[i]`` / ``ensembl[i]`` are None where unknown. ``symbol_source`` and ``ensembl_source``
    say where each came from (``var_names``, ``var['col']``, or the mapping table).
    """

    names: list[str]
    symbols: list[str | None]
    ensembl: list[str | None]
    id_kind: IdKind
    symbol_source: str
    ensembl_source: str
    notes: list[str] = field(default_factory=list)

    def keys(self, kind: Literal["symbol", "ensembl"]) -> list[str | None]:
        return self.symbols if kind == "symbol" else self.ensembl


def gene_keys(var_names: Sequence[str], var: pd.DataFrame | None = None) -> GeneKeys:
    """Work out symbol and Ensembl ID for every gene, preferring the dataset's own annotation."""
    names = [str(n) for n in var_names]
    kind = detect_id_kind(names)
    table = gene_table()
    notes: list[str] = []
    symbols: list[str | None]
    ensembl: list[str | None]
    sym_src = ens_src = "var_names"

    def _column(cands: Sequence[str], want_ensembl: bool) -> tuple[str, list[str | None]] | None:
        if var is None:
            return None
        for c in cands:
            if c in var.columns:
                vals = [None if pd.isna(v) else str(v) for v in var[c].tolist()]
                present = [v for v in vals if v]
                if not present:
                    continue
                ens_share = sum(is_ensembl(v) for v in present) / len(present)
                if (ens_share > 0.9) == want_ensembl:
                    return c, vals
        return None

    if kind in ("ensembl", "ensembl_versioned"):
        ensembl = [strip_version(n) for n in names]
        col = _column(SYMBOL_COLUMNS, want_ensembl=False)
        if col:
            sym_src = f"var['{col[0]}']"
            symbols = col[1]
        else:
            sym_src = "mapping table"
            symbols = table.to_symbol(ensembl)
        if kind == "ensembl_versioned":
            notes.append("Ensembl version suffixes were stripped (ENSG….N -> ENSG…).")
    elif kind == "symbol":
        symbols = list(names)
        col = _column(ENSEMBL_COLUMNS, want_ensembl=True)
        if col:
            ens_src = f"var['{col[0]}']"
            ensembl = [strip_version(v) if v else None for v in col[1]]
        else:
            ens_src = "mapping table"
            ensembl = table.to_ensembl(symbols)
    else:  # mixed / empty: take each name for what it is
        ensembl = []
        symbols = []
        for n in names:
            if is_ensembl(n):
                e = strip_version(n)
                ensembl.append(e)
                symbols.append(table.id_to_symbol.get(e))
            else:
                symbols.append(n)
                ensembl.append(table.symbol_to_id.get(n) or table.symbol_to_id.get(n.upper()))
        sym_src = ens_src = "var_names + mapping table"
        if kind == "mixed":
            notes.append("var_names mix Ensembl IDs and symbols; each was mapped separately.")
    return GeneKeys(names, symbols, ensembl, kind, sym_src, ens_src, notes)


@dataclass
class Alignment:
    """Where each target gene sits in the source columns (-1 = absent)."""

    target: list[str]
    source_index: np.ndarray  # int64, len(target)
    key_kind: Literal["symbol", "ensembl"]

    @property
    def n_present(self) -> int:
        return int((self.source_index >= 0).sum())

    @property
    def fraction_present(self) -> float:
        return self.n_present / max(len(self.target), 1)

    def missing(self, limit: int = 20) -> list[str]:
        return [g for g, i in zip(self.target, self.source_index, strict=True) if i < 0][:limit]


def align_genes(
    source: GeneKeys, target: Sequence[str], key_kind: Literal["symbol", "ensembl"] | None = None
) -> Alignment:
    """Map each target gene to a source column. Duplicated source keys keep the first column.

    ``key_kind`` says what the target names are; by default it is detected from the names.
    """
    tgt = [str(t) for t in target]
    if key_kind is None:
        detected = detect_id_kind(tgt)
        key_kind = "ensembl" if detected.startswith("ensembl") else "symbol"
    if key_kind == "ensembl":
        tgt_keys = [strip_version(t) for t in tgt]
        src_keys = source.ensembl
    else:
        tgt_keys = tgt
        src_keys = source.symbols
    lookup: dict[str, int] = {}
    upper_lookup: dict[str, int] = {}
    for i, key in enumerate(src_keys):
        if key is None:
            continue
        lookup.setdefault(key, i)
        upper_lookup.setdefault(key.upper(), i)
    idx = np.full(len(tgt_keys), -1, dtype=np.int64)
    for j, key in enumerate(tgt_keys):
        hit = lookup.get(key)
        if hit is None and key_kind == "symbol":
            hit = upper_lookup.get(key.upper())
        if hit is not None:
            idx[j] = hit
    return Alignment(target=tgt, source_index=idx, key_kind=key_kind)


def genes_hash(genes: Sequence[str]) -> str:
    """A stable sha256 of an ordered gene list."""
    import hashlib

    h = hashlib.sha256()
    for g in genes:
        h.update(str(g).encode())
        h.update(b"\n")
    return h.hexdigest()
