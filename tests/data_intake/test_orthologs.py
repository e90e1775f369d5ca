"""Species detection, the shipped ortholog tables and the mapping rules (many-to-one summed,
one-to-many, no ortholog left out), checked against the tables read directly with pandas."""

from __future__ import annotations

import gzip
import hashlib
from importlib import resources
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellfoundry.data.genes import detect_species, resolve_species
from cellfoundry.data.report import validate
from cellfoundry.data.species import to_human_space
from cellfoundry.errors import DataError

RES = resources.files("cellfoundry.data.resources")
SHIPPED = {
    "ensembl105_human_mouse_orthologs.csv.gz": ("Ensembl105_Human2Mouse_Genes.csv.gz", [0, 1]),
    "ensembl110_human_rhesus_orthologs.csv.gz": ("Ensembl110_Human2Rhesus_Genes.csv.gz", [0, 1]),
    "ensembl110_human_cynomolgus_orthologs.csv.gz": (
        "Ensembl110_Human2Cynomolgus_Genes.csv.gz",
        [0, 1],
    ),
    "ensembl110_human_pig_orthologs.csv.gz": ("Ensembl110_Human2Pig_Genes.csv.gz", [0, 1]),
    "gencode_mouse_id2name.csv.gz": ("genes_mus_musculus.csv.gz", [0, 1]),
}


def _pairs(name: str) -> pd.DataFrame:
    with RES.joinpath(name).open("rb") as raw, gzip.open(raw, "rt") as fh:
        return pd.read_csv(fh, header=None, dtype=str, keep_default_na=False)


def test_shipped_tables_match_their_checksums_and_are_small() -> None:
    prov = RES.joinpath("PROVENANCE.md").read_text()
    total = 0
    for name in SHIPPED:
        blob = RES.joinpath(name).read_bytes()
        total += len(blob)
        assert hashlib.sha256(gzip.decompress(blob)).hexdigest() in prov, name
    assert total < 2_000_000


def test_shipped_tables_are_the_documented_derivation_of_the_sources(shared_dir: Path) -> None:
    src = shared_dir / "vocab" / "species"
    sums = dict(
        reversed(line.split()) for line in (src / "SHA256SUMS").read_text().splitlines() if line
    )
    prov = RES.joinpath("PROVENANCE.md").read_text()
    for name, (source, cols) in SHIPPED.items():
        digest = hashlib.sha256((src / source).read_bytes()).hexdigest()
        assert sums[f"species/{source}"] == digest and digest in prov
        d = pd.read_csv(src / source, header=None, dtype=str, keep_default_na=False)[cols]
        d = d[(d[cols[0]] != "") & (d[cols[1]] != "")].drop_duplicates()
        shipped = _pairs(name)
        assert shipped.to_numpy().tolist() == d.to_numpy().tolist(), name


@pytest.mark.parametrize(
    ("prefix", "species"),
    [
        ("ENSG", "human"),
        ("ENSMUSG", "mouse"),
        ("ENSMMUG", "rhesus"),
        ("ENSMFAG", "cynomolgus"),
        ("ENSSSCG", "pig"),
    ],
)
def test_species_from_ensembl_prefixes(prefix: str, species: str) -> None:
    ids = [f"{prefix}{i:011d}" for i in range(30)]
    assert detect_species(ids).species == species
    assert detect_species([f"{i}.4" for i in ids]).species == species


def test_species_from_symbol_case_and_from_ids_among_symbols() -> None:
    mouse = ["Cd3e", "Cd19", "Ms4a1", "mt-Co1", "Lyz2", "Gm12345", "4933401J01Rik", "H2-K1"]
    human = ["CD3E", "CD19", "MS4A1", "MT-CO1", "LYZ", "HLA-A", "C1orf112", "RPL13"]
    assert detect_species(mouse).species == "mouse"
    assert detect_species(human).species == "human"
    # macaque files name unnamed genes by their ID amid (human-style) symbols
    rhesus = human * 10 + [f"ENSMMUG{i:011d}" for i in range(25)]
    call = detect_species(rhesus)
    assert call.species == "rhesus" and "25 of 25 Ensembl IDs" in call.evidence
    assert resolve_species("Mus musculus", human).species == "mouse"
    assert resolve_species("Mus musculus", human).source == "given"
    assert resolve_species("auto", mouse).species == "mouse"
    with pytest.raises(DataError) as err:
        resolve_species("macaque", human)
    assert "rhesus" in (err.value.hint or "") and err.value.code == "unknown_species"


def _table_cases() -> dict[str, object]:
    """Real genes of each kind, found in the shipped mouse table with pandas."""
    t = _pairs("ensembl105_human_mouse_orthologs.csv.gz")
    n_h = t.groupby(1)[0].nunique()  # human orthologs per mouse gene
    n_m = t.groupby(0)[1].nunique()  # mouse orthologs per human gene
    single = t[t[1].map(n_h) == 1]
    one_to_ones = single[single[0].map(n_m) == 1]
    one_to_one = one_to_ones.iloc[0]
    # a human gene whose mouse orthologs each have only that one human ortholog
    many = single.groupby(0)[1].apply(list)
    many = many[many.map(len) >= 2]
    human_many = many.index[0]
    multi = t[t[1].map(n_h) >= 2]
    by_mouse = multi.groupby(1)[0].apply(list)
    same = [m for m, hs in by_mouse.items() if m.upper() in {h.upper() for h in hs}]
    other = [m for m, hs in by_mouse.items() if m.upper() not in {h.upper() for h in hs}]
    return {
        "one": (one_to_one[1], one_to_one[0]),
        "many": (human_many, list(many[human_many][:2])),
        "multi_same": (same[0], by_mouse[same[0]]),
        "multi_other": (other[0], by_mouse[other[0]]),
        "fillers": list(one_to_ones[1].iloc[1:400]),
    }


def _mouse_counts(genes: list[str], seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    x = rng.poisson(3.0, (40, len(genes))).astype(np.float32)
    return ad.AnnData(X=sp.csr_matrix(x), var=pd.DataFrame(index=genes))


def test_mapping_rules_on_real_table_entries() -> None:
    c = _table_cases()
    one_m, one_h = c["one"]  # type: ignore[misc]
    many_h, many_ms = c["many"]  # type: ignore[misc]
    same_m, same_hs = c["multi_same"]  # type: ignore[misc]
    other_m, _ = c["multi_other"]  # type: ignore[misc]
    genes = [one_m, *many_ms, same_m, other_m, "Notagene1"]
    filler = [g for g in c["fillers"] if g not in genes][:200]  # type: ignore[attr-defined]
    a = _mouse_counts(genes + filler)
    h, rep = to_human_space(a, "mouse")
    o = rep.orthology
    assert o is not None and rep.species == "mouse" and rep.species_source == "given"
    x = a.X.toarray()
    hx = h.X.toarray()
    col = {g: i for i, g in enumerate(h.var_names)}
    np.testing.assert_array_equal(hx[:, col[one_h]], x[:, 0])
    # many-to-one: summed on the counts
    np.testing.assert_array_equal(hx[:, col[many_h]], x[:, 1] + x[:, 2])
    assert set(h.var.loc[many_h, "mouse_genes"].split(";")) == set(many_ms)
    # one-to-many: kept only for the human ortholog of the same name; otherwise left out
    same_h = next(g for g in same_hs if g.upper() == same_m.upper())
    assert same_m in h.var.loc[same_h, "mouse_genes"].split(";")
    assert not any(other_m in s.split(";") for s in h.var["mouse_genes"])
    assert "Notagene1" in o.examples_unmapped
    assert o.n_genes == a.n_vars and o.n_genes_mapped == a.n_vars - 2
    assert o.n_one_to_many >= 2 and o.n_one_to_many_kept >= 1
    # the share of counts that mapped, from the counts themselves
    share = np.median(1 - (x[:, len(genes) - 2] + x[:, len(genes) - 1]) / x.sum(axis=1))
    assert o.fraction_counts_mapped == pytest.approx(share, rel=1e-6)
    assert h.var["gene_ids"].notna().mean() > 0.9  # human Ensembl IDs for Ensembl-keyed models
    # the mapped data keeps naming its species, and mapping it again changes nothing
    assert validate(h).species == "mouse" and validate(h).orthology is not None
    again, _ = to_human_space(h)
    assert again is h


def test_log_normalised_values_are_summed_in_linear_space() -> None:
    c = _table_cases()
    many_h, many_ms = c["many"]  # type: ignore[misc]
    genes = list(many_ms) + [g for g in c["fillers"] if g not in many_ms]  # type: ignore[attr-defined]
    a = _mouse_counts(genes, seed=1)
    x = a.X.toarray()
    lg = np.log1p(x / x.sum(axis=1, keepdims=True) * 1e4).astype(np.float32)
    a.X = sp.csr_matrix(lg)
    h, rep = to_human_space(a)
    assert rep.species == "mouse" and rep.species_source == "detected"
    got = h.X.toarray()[:, list(h.var_names).index(many_h)]
    np.testing.assert_allclose(got, np.log1p(np.expm1(lg[:, 0]) + np.expm1(lg[:, 1])), rtol=1e-5)


def test_mapping_that_keeps_almost_nothing_is_refused() -> None:
    a = _mouse_counts([f"Notagene{i}" for i in range(300)])
    assert validate(a).species == "mouse"
    with pytest.raises(DataError) as err:
        to_human_space(a)
    assert err.value.code == "orthology" and "0 of the 300 genes" in err.value.message
    assert "--species" in (err.value.hint or "")
    # species "human" uses the genes as they are named
    same, rep = to_human_space(a, "human")
    assert same is a and rep.orthology is None and rep.species_source == "given"


def test_macaque_and_pig_map_through_their_own_tables() -> None:
    rhesus = _pairs("ensembl110_human_rhesus_orthologs.csv.gz")
    n_h, n_r = rhesus[0].value_counts(), rhesus[1].value_counts()
    one = rhesus[(rhesus[0].map(n_h) == 1) & (rhesus[1].map(n_r) == 1)].iloc[:300]
    # symbols look human, so the species is given; the table decides the human gene
    a = _mouse_counts(list(one[1]))
    h, rep = to_human_space(a, "rhesus")
    assert rep.species == "rhesus" and rep.orthology is not None
    assert "rhesus" in rep.orthology.table and list(h.var_names) == list(one[0])
    # Ensembl IDs of the species are detected; symbols come from var's symbol column
    ids = [f"ENSMMUG{i:011d}" for i in range(300)]
    b = _mouse_counts(ids)
    b.var["gene_symbols"] = list(one[1])
    hb, rep_b = to_human_space(b)
    assert rep_b.species == "rhesus" and rep_b.species_source == "detected"
    assert list(hb.var_names) == list(one[0])
    np.testing.assert_array_equal(hb.X.toarray(), b.X.toarray())
    # pig IDs with no symbols cannot be mapped: refused, with what to give instead
    pig = _mouse_counts([f"ENSSSCG{i:011d}" for i in range(300)])
    with pytest.raises(DataError) as err:
        to_human_space(pig)
    assert "pig" in err.value.message and "symbols" in (err.value.hint or "")
