"""Cell-type names: normalisation and lookup of CL terms by label or synonym."""

from __future__ import annotations

import functools
import re

from cellfoundry.ontology.cl import cell_ontology

# A marker token as atlases write it: CD14+, FCGR3A+, CD45RA+, CD25-, CD56bright, CD16hi, CD4, CD8a.
_MARKER = re.compile(
    r"^(?:cd\d+[a-z]{0,2}|[a-z]{2,6}\d+[a-z]?\d*)"
    r"(?:\+|-|-positive|-negative|-?(?:hi|high|lo|low|bright|dim))?$",
    re.IGNORECASE,
)
_IRREGULAR_PLURALS = {"cells": "cell", "lymphocytes": "lymphocyte", "progenitors": "progenitor"}
_NO_SINGULAR = ("ss", "us", "is", "sis")


def normalise(name: str) -> str:
    """Lower case, one space between words, ``_`` as space, ``+``/``-`` marker signs spelled as CL does.

    ``"CD14+ Monocytes"`` -> ``"cd14-positive monocytes"``; ``"CD25-"`` -> ``"cd25-negative"``.
    """
    s = str(name).strip().lower().replace("_", " ")
    s = re.sub(r"\s+", " ", s)
    s = re.sub(r"(?<=[a-z0-9])\s*\+(?=$|[\s/,)])", "-positive", s)
    s = re.sub(r"(?<=[0-9])-(?=$|[\s/,)])", "-negative", s)
    s = re.sub(r"(?<=[a-z0-9]) positive\b", "-positive", s)
    s = re.sub(r"(?<=[a-z0-9]) negative\b", "-negative", s)
    s = s.replace("/", " ").replace(",", " ")
    return re.sub(r"\s+", " ", s).strip()


def singular(word: str) -> str:
    """English singular of the last-word plurals cell-type names use (``monocytes``, ``cells``)."""
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(_NO_SINGULAR):
        return word[:-1]
    return word


def is_marker(token: str) -> bool:
    """A surface-marker token such as ``cd14-positive``, ``fcgr3a-positive`` or ``cd4``."""
    return bool(_MARKER.match(token)) and not token.isalpha()


def candidates(name: str) -> list[tuple[str, str]]:
    """Normalised spellings of ``name`` to look up, most faithful first, each with the rule used.

    Rules: ``normalised`` (case, spaces, marker signs), ``singular`` (plural last word),
    ``with cell`` (``"Dendritic"`` -> ``"dendritic cell"``) and ``without markers``
    (``"CD56+ NK"`` -> ``"nk cell"``, a coarser but still true term).
    """
    base = normalise(name)
    if not base:
        return []
    out: list[tuple[str, str]] = []

    def add(text: str, rule: str) -> None:
        text = re.sub(r"\s+", " ", text).strip(" ,")
        if text and all(text != t for t, _ in out):
            out.append((text, rule))

    words = base.split(" ")
    sing = " ".join([*words[:-1], singular(words[-1])])
    add(base, "normalised")
    add(sing, "singular")
    if not sing.endswith("cell"):
        add(f"{sing} cell", "with cell")
        sing = f"{sing} cell" if len(sing.split(" ")) == 1 else sing
    signed = re.sub(r"\b(cd\d+[a-z]?)(?=\s)", r"\1-positive", sing)
    add(signed, "marker sign")
    if re.search(r"\bcd[48]-positive\b.*\bt cell$", signed):
        add(re.sub(r"t cell$", "alpha-beta t cell", signed), "alpha-beta T")
    kept = [w for w in sing.split(" ") if not is_marker(w)]
    if kept and len(kept) < len(sing.split(" ")):
        stripped = " ".join(kept)
        add(stripped, "without markers")
        if not stripped.endswith("cell"):
            add(f"{stripped} cell", "without markers")
    return out


def _key(text: str) -> str:
    """The lookup key: normalised, hyphens as spaces ("gamma-delta" == "gamma delta")."""
    return re.sub(r"\s+", " ", normalise(text).replace("-", " ")).strip()


@functools.cache
def _index() -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """Normalised label -> term, normalised synonym -> terms (live terms only)."""
    cl = cell_ontology()
    by_label: dict[str, str] = {}
    by_synonym: dict[str, set[str]] = {}
    for term in cl.live_terms():
        by_label.setdefault(_key(cl.labels[term]), term)
        for syn in cl.synonyms.get(term, ()):
            by_synonym.setdefault(_key(syn), set()).add(term)
    return by_label, {k: tuple(sorted(v)) for k, v in by_synonym.items()}


def lookup(text: str) -> tuple[str, str] | None:
    """``(term, "label" | "synonym")`` for a normalised text equal to one live term's label or
    to exactly one live term's synonym; ``None`` when there is none or the synonym is ambiguous."""
    by_label, by_synonym = _index()
    key = _key(text)
    if key in by_label:
        return by_label[key], "label"
    hits = by_synonym.get(key, ())
    if len(hits) == 1:
        return hits[0], "synonym"
    return None


def term_by_name(name: str) -> str | None:
    """The live CL term whose label (or sole synonym) is ``name``, case-insensitively."""
    hit = lookup(name)
    return hit[0] if hit else None
