"""Class names -> Cell Ontology terms, checked against the ontology package's own name lookup."""

from __future__ import annotations

import csv
import socket
from pathlib import Path

import pytest

from cellfoundry.ontology import (
    OntologyError,
    curated_table,
    map_label,
    map_labels,
    read_label_map,
)
from tests.ontology.reference import PARSER, PBMC3K_TERMS, cl, read_quietly


def labels_of(shared_dir: Path, file: str, key: str) -> list[str]:
    a = read_quietly(shared_dir / "data" / file, backed=True)
    try:
        return sorted({str(x) for x in a.obs[key].dropna()})
    finally:
        a.file.close()


def test_all_pbmc3k_classes_map_to_their_cl_terms(shared_dir: Path) -> None:
    classes = labels_of(shared_dir, "pbmc3k_labeled_counts.h5ad", "cell_type")
    assert set(classes) == set(PBMC3K_TERMS)
    mapping = map_labels(classes)
    assert mapping.unmapped == []
    for c in classes:
        assert mapping.term(c) == cl(PBMC3K_TERMS[c]), c
        assert mapping.term_name(c) == PBMC3K_TERMS[c]


def test_pbmc68k_bulk_labels_map_to_their_cl_terms(shared_dir: Path) -> None:
    expected = {
        "CD14+ Monocyte": "CD14-positive monocyte",
        "CD19+ B": "B cell",
        "CD4+/CD25 T Reg": "CD4-positive, CD25-positive, alpha-beta regulatory T cell",
        "CD4+/CD45RA+/CD25- Naive T": "naive thymus-derived CD4-positive, alpha-beta T cell",
        "CD4+/CD45RO+ Memory": "CD4-positive, alpha-beta memory T cell",
        "CD8+ Cytotoxic T": "CD8-positive, alpha-beta cytotoxic T cell",
        "CD8+/CD45RA+ Naive Cytotoxic": "naive thymus-derived CD8-positive, alpha-beta T cell",
        "CD56+ NK": "natural killer cell",
        "CD34+": "hematopoietic precursor cell",
        "Dendritic": "dendritic cell",
    }
    classes = labels_of(shared_dir, "10x_pbmc68k_reduced.h5ad", "bulk_labels")
    assert set(classes) == set(expected)
    mapping = map_labels(classes)
    assert {c: mapping.term(c) for c in classes} == {c: cl(n) for c, n in expected.items()}


def test_symphony_and_pancreas_classes_all_map(shared_dir: Path) -> None:
    for file, key in [
        ("symphony_pbmcs_small_lognorm.h5ad", "cell_type"),
        ("symphony_pbmcs_small_lognorm.h5ad", "cell_type_broad"),
        ("scClassify_wang_subset.h5ad", "cell_type"),
        ("scClassify_xin_subset.h5ad", "cell_type"),
    ]:
        mapping = map_labels(labels_of(shared_dir, file, key))
        assert mapping.unmapped == [], (file, key)
    assert map_label("alpha") == cl("pancreatic A cell")
    assert map_label("beta") == cl("type B pancreatic cell")
    assert map_label("Mono_CD16") == cl("CD14-low, CD16-positive monocyte")
    assert map_label("T") == cl("T cell")


def test_curated_rows_name_the_term_their_id_has_in_cl() -> None:
    rows = curated_table()
    assert len(rows) >= 40
    for row in rows.values():
        assert PARSER.get_term_label(row.term_id) == row.term_name, row.label
        assert not PARSER.is_term_deprecated(row.term_id), row.label
        assert row.source and row.reason, row.label


@pytest.mark.parametrize(
    ("name", "label", "method"),
    [
        ("megakaryocyte", "megakaryocyte", "label"),
        ("NK cell", "natural killer cell", "synonym"),
        ("Plasma cells", "plasma cell", "singular"),
        ("CD14 positive monocytes", "CD14-positive monocyte", "curated"),
        ("gamma delta T cells", "gamma-delta T cell", "singular"),
        ("CD8+ T cells", "CD8-positive, alpha-beta T cell", "alpha-beta T"),
        ("CD56bright NK cells", "natural killer cell", "without markers"),
        ("T-cells", "T cell", "singular"),
        ("Beta cells", "type B pancreatic cell", "curated without 'cell'"),
    ],
)
def test_normalisation_rules(name: str, label: str, method: str) -> None:
    m = map_labels([name]).matches[name]
    assert (m.term_id, m.method) == (cl(label), method)


def test_unmapped_classes_stay_empty_and_are_listed() -> None:
    mapping = map_labels(["B cells", "weird cluster 7", "Doublets?"])
    assert mapping.unmapped == ["weird cluster 7", "Doublets?"]
    assert mapping.term("weird cluster 7") == ""
    assert mapping.term_ids() == [cl("B cell"), "", ""]
    assert map_label("weird cluster 7") is None


def test_user_csv_wins_over_everything(tmp_path: Path) -> None:
    path = tmp_path / "map.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["label", "ontology_term_id"])
        w.writerow(["B cells", cl("naive B cell")])  # overrides the curated row
        w.writerow(["cluster 7", "mast cell"])  # a CL name is accepted too
        w.writerow(["NK cells", ""])  # deliberately unmapped
    mapping = map_labels(["B cells", "cluster 7", "NK cells", "CD14+ Monocytes"], label_map=path)
    assert mapping.term("B cells") == cl("naive B cell")
    assert mapping.term("cluster 7") == cl("mast cell")
    assert mapping.unmapped == ["NK cells"]
    assert mapping.matches["B cells"].method == "user"
    assert mapping.matches["CD14+ Monocytes"].method == "curated"
    # a dict works the same way
    assert map_labels(["B cells"], {"B cells": "CL:0000084"}).term("B cells") == cl("T cell")


def test_bad_user_csv_says_what_to_fix(tmp_path: Path) -> None:
    bad_cols = tmp_path / "a.csv"
    bad_cols.write_text("name,term\nB cells,CL:0000236\n")
    with pytest.raises(OntologyError, match="lacks column"):
        read_label_map(bad_cols)
    bad_id = tmp_path / "b.csv"
    bad_id.write_text("label,ontology_term_id\nB cells,CL:9999999\n")
    with pytest.raises(OntologyError, match="B cells") as exc:
        read_label_map(bad_id)
    assert exc.value.hint
    not_a_term = tmp_path / "c.csv"
    not_a_term.write_text("label,ontology_term_id\nB cells,lymphocyte-ish\n")
    with pytest.raises(OntologyError, match="neither"):
        read_label_map(not_a_term)
    with pytest.raises(OntologyError, match="does not exist"):
        read_label_map(tmp_path / "missing.csv")


def test_mapping_round_trips_through_json() -> None:
    from cellfoundry.ontology import LabelMapping

    mapping = map_labels(["CD4 T cells", "nope"])
    back = LabelMapping.from_dict(mapping.to_dict())
    assert back.terms == mapping.terms and back.unmapped == ["nope"]
    assert back.ontology_version == mapping.ontology_version != ""


def test_loading_needs_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    from cellfoundry.ontology import cl as cl_module

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    cl_module.cell_ontology.cache_clear()
    try:
        assert cl_module.cell_ontology().label(cl("B cell")) == "B cell"
    finally:
        cl_module.cell_ontology.cache_clear()
