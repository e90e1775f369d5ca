"""Relations between CL terms, checked against the official cellxgene-ontology-guide parser."""

from __future__ import annotations

import pytest

from cellfoundry.ontology import (
    OntologyError,
    ancestors,
    candidate_levels,
    closest_common_ancestor,
    descendants,
    is_descendant,
    level_terms,
    resolve,
    roll_up,
)
from tests.ontology.reference import PARSER, PBMC3K_TERMS, cl

T_CELL, MONO, B_CELL = cl("T cell"), cl("monocyte"), cl("B cell")
TREG = cl("CD4-positive, CD25-positive, alpha-beta regulatory T cell")
CD4 = cl("CD4-positive, alpha-beta T cell")
CD8 = cl("CD8-positive, alpha-beta T cell")


def test_ancestors_and_descendants_agree_with_the_official_parser() -> None:
    for term in (TREG, cl("CD14-low, CD16-positive monocyte"), cl("pancreatic A cell")):
        assert set(ancestors(term)) == set(PARSER.get_term_ancestors(term))
        assert ancestors(term, include_self=True)[0] == term
    for term in (T_CELL, MONO):
        assert descendants(term) == set(PARSER.get_term_descendants(term))


def test_is_descendant() -> None:
    assert is_descendant(TREG, CD4)
    assert is_descendant(TREG, T_CELL)
    assert is_descendant(CD4, CD4) and not is_descendant(CD4, CD4, strict=True)
    assert not is_descendant(CD4, TREG)  # coarser is not a descendant
    assert not is_descendant(B_CELL, T_CELL)
    assert not is_descendant("", T_CELL) and not is_descendant(None, T_CELL)


def test_closest_common_ancestor_is_a_lowest_common_ancestor_of_the_parser() -> None:
    pairs = [(CD4, CD8), (CD4, B_CELL), (cl("CD14-positive monocyte"), MONO), (TREG, CD8)]
    for a, b in pairs:
        assert closest_common_ancestor([a, b]) in PARSER.get_lowest_common_ancestors(a, b)
    assert closest_common_ancestor([CD4, CD8, TREG, ""]) == closest_common_ancestor([CD4, CD8])
    assert closest_common_ancestor([CD4]) == CD4
    assert closest_common_ancestor([]) is None
    assert closest_common_ancestor([CD4, B_CELL]) == cl("lymphocyte")


def test_roll_up_to_a_named_level() -> None:
    assert roll_up(TREG, "T cell") == T_CELL
    assert roll_up(TREG, T_CELL) == T_CELL
    assert roll_up(B_CELL, "T cell") == B_CELL  # not under the level: unchanged
    assert roll_up("", "T cell") == ""
    assert roll_up(cl("CD14-low, CD16-positive monocyte"), "monocyte") == MONO
    assert roll_up(cl("natural killer cell"), "natural killer cell") == cl("natural killer cell")


def test_roll_up_to_the_broad_level_set() -> None:
    for term in level_terms("broad"):
        assert term in PARSER.get_term_label_to_id_map("CL").values()
    for term, broad in [
        (TREG, "T cell"),
        (cl("naive thymus-derived CD8-positive, alpha-beta T cell"), "T cell"),
        (cl("CD14-positive monocyte"), "monocyte"),
        (cl("natural killer cell"), "natural killer cell"),
        (cl("plasmacytoid dendritic cell"), "dendritic cell"),
        (cl("naive B cell"), "B cell"),
        (cl("hematopoietic stem cell"), "hematopoietic precursor cell"),
        (cl("pancreatic A cell"), "endocrine cell"),
    ]:
        assert PARSER.get_term_label(roll_up(term, "broad")) == broad, term


def test_resolve_accepts_ids_and_names_and_refuses_the_rest() -> None:
    assert resolve("T cell") == T_CELL == resolve(T_CELL)
    assert resolve("NK cell") == cl("natural killer cell")
    with pytest.raises(OntologyError):
        resolve("CL:9999999")
    with pytest.raises(OntologyError, match="neither"):
        resolve("a kind of cell")


def test_candidate_levels_are_every_distinct_grouping_of_the_official_ancestors() -> None:
    """Each candidate merges exactly the labels the official parser puts under it, and every
    way an ancestor groups at least two (not all) of the labels is offered once."""
    terms = {label: cl(name) for label, name in PBMC3K_TERMS.items()}
    terms["unmapped class"] = ""
    counts = {label: 10 * (i + 1) for i, label in enumerate(terms)}
    got = candidate_levels(terms, counts, limit=None)

    def under(anc: str) -> frozenset[str]:
        return frozenset(
            lab
            for lab, t in terms.items()
            if t and (t == anc or anc in PARSER.get_term_ancestors(t))
        )

    mapped = {lab for lab, t in terms.items() if t}
    groupings = {
        under(anc)
        for lab in mapped
        for anc in [terms[lab], *PARSER.get_term_ancestors(terms[lab])]
        if 2 <= len(under(anc)) < len(mapped)
    }
    assert {frozenset(c.labels) for c in got} == groupings  # each grouping once
    assert len(got) == len(groupings)
    for c in got:
        assert frozenset(c.labels) == under(c.term)
        assert c.name == PARSER.get_term_label(c.term)
        assert c.n_cells == sum(counts[lab] for lab in c.labels)
    assert [c.n_cells for c in got] == sorted((c.n_cells for c in got), reverse=True)
    by_name = {c.name: c for c in got}
    # a named broad compartment wins over the other terms that merge the same labels
    assert set(by_name["T cell"].labels) == {"CD4 T cells", "CD8 T cells"}
    assert set(by_name["monocyte"].labels) == {"CD14+ Monocytes", "FCGR3A+ Monocytes"}
    assert "alpha-beta T cell" not in by_name and "mature alpha-beta T cell" not in by_name
    assert {"CD4 T cells", "CD8 T cells", "B cells", "NK cells"} <= set(
        by_name["lymphocyte"].labels
    )

    # types without cells do not count; the limit keeps the largest
    no_nk = candidate_levels(terms, {**counts, "NK cells": 0}, limit=None)
    assert all("NK cells" not in c.labels for c in no_nk)
    assert candidate_levels(terms, counts, limit=2) == got[:2]
    # one type, or two types of one term (merging them all): nothing to offer
    assert candidate_levels({"CD4 T cells": terms["CD4 T cells"]}) == []
    assert candidate_levels({"a": terms["CD4 T cells"], "b": terms["CD4 T cells"]}) == []
