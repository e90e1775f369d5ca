"""Gene-ID kinds, the shipped mapping table, and alignment (property tests with hypothesis)."""

from __future__ import annotations

import gzip
import hashlib
from importlib import resources

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from cellfoundry.data.genes import (
    align_genes,
    detect_id_kind,
    gene_keys,
    gene_table,
    genes_hash,
    guess_species,
    is_ensembl,
    strip_version,
)

ens_ids = st.integers(min_value=0, max_value=10**11 - 1).map(lambda i: f"ENSG{i:011d}")
versions = st.integers(min_value=1, max_value=40)
symbols = st.from_regex(r"[A-Z][A-Z0-9]{1,6}", fullmatch=True).filter(
    lambda s: not s.startswith("ENS")
)


def test_mapping_table_provenance_and_known_pairs() -> None:
    ref = resources.files("cellfoundry.data.resources").joinpath("gencode_v44_human_id2name.csv.gz")
    with ref.open("rb") as raw, gzip.open(raw) as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    prov = resources.files("cellfoundry.data.resources").joinpath("PROVENANCE.md").read_text()
    assert digest in prov
    t = gene_table()
    assert t.id_to_symbol["ENSG00000141510"] == "TP53"
    assert t.symbol_to_id["CD19"] == "ENSG00000177455"
    assert len(t.id_to_symbol) > 60_000


@given(ens_ids, versions)
def test_strip_version_removes_exactly_the_suffix(gid: str, v: int) -> None:
    assert strip_version(f"{gid}.{v}") == gid
    assert strip_version(gid) == gid
    assert strip_version(strip_version(f"{gid}.{v}")) == gid
    assert is_ensembl(f"{gid}.{v}")


@given(st.lists(symbols, min_size=5, max_size=50, unique=True))
def test_symbols_are_detected(names: list[str]) -> None:
    assert detect_id_kind(names) == "symbol"


@given(st.lists(ens_ids, min_size=5, max_size=50, unique=True), st.booleans())
def test_ensembl_kinds_are_detected(ids: list[str], versioned: bool) -> None:
    names = [f"{i}.3" for i in ids] if versioned else ids
    assert detect_id_kind(names) == ("ensembl_versioned" if versioned else "ensembl")


@settings(max_examples=60)
@given(
    st.lists(symbols, min_size=1, max_size=60, unique=True),
    st.randoms(use_true_random=False),
    st.data(),
)
def test_alignment_finds_every_present_gene_and_only_those(names: list[str], rnd, data) -> None:
    source = gene_keys(names, None)
    extra = data.draw(st.lists(symbols.map(lambda s: "X" + s), max_size=10, unique=True))
    target = [n for n in names if rnd.random() < 0.7] + [e for e in extra if e not in names]
    rnd.shuffle(target)
    al = align_genes(source, target, "symbol")
    for t, i in zip(target, al.source_index, strict=True):
        if t in names:
            assert names[i] == t
        else:
            assert i == -1
    assert al.n_present == sum(t in names for t in target)


def test_real_table_round_trip_symbol_to_ensembl() -> None:
    t = gene_table()
    rng = np.random.default_rng(0)
    ids = rng.choice(sorted(t.id_to_symbol), 300, replace=False)
    syms = [t.id_to_symbol[i] for i in ids]
    # a symbol shared by several IDs maps to one of them; the symbol itself always round-trips
    back = t.to_symbol([t.symbol_to_id[s] for s in syms])
    assert back == syms


def test_query_ensembl_aligns_to_symbol_target_via_table_and_column() -> None:
    ids = ["ENSG00000177455.12", "ENSG00000141510.17", "ENSG00000105369.10"]
    by_table = gene_keys(ids, None)
    assert by_table.symbol_source == "mapping table"
    al = align_genes(by_table, ["TP53", "CD19", "CD79A", "NOPE"], "symbol")
    assert list(al.source_index) == [1, 0, 2, -1]
    by_col = gene_keys(ids, pd.DataFrame({"gene_symbols": ["X1", "X2", "X3"]}, index=ids))
    assert by_col.symbol_source == "var['gene_symbols']"
    assert list(align_genes(by_col, ["X2"], "symbol").source_index) == [1]
    sym = gene_keys(["CD19", "TP53"], None)
    assert list(align_genes(sym, ["ENSG00000141510"], "ensembl").source_index) == [1]


def test_species_guess_and_hash_stability() -> None:
    assert guess_species(["ENSMUSG00000000001", "ENSMUSG00000000003"]) == "mouse"
    assert guess_species(["CD19", "MS4A1", "TP53"]) == "human"
    assert genes_hash(["A", "B"]) == genes_hash(["A", "B"]) != genes_hash(["B", "A"])
