"""Relations between Cell Ontology terms: ancestors, descendants, common ancestors and roll-up.

Every function takes CL term ids; ``resolve`` also accepts a term's exact label or synonym
("T cell", "monocyte"). Relations follow CL's ``is_a`` hierarchy as shipped in
``cellxgene-ontology-guide``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cellfoundry.ontology.cl import ROOT, OntologyError, cell_ontology, term_name
from cellfoundry.ontology.names import term_by_name

# Broad immune and pancreas/tissue compartments for ``roll_up(term, "broad")``: a term rolls up
# to the nearest of these that is the term itself or one of its ancestors.
GENERIC_LEVELS: tuple[str, ...] = (
    "T cell",
    "B cell",
    "plasma cell",
    "natural killer cell",
    "innate lymphoid cell",
    "monocyte",
    "macrophage",
    "dendritic cell",
    "granulocyte",
    "mast cell",
    "megakaryocyte",
    "platelet",
    "erythrocyte",
    "hematopoietic precursor cell",
    "endocrine cell",
    "epithelial cell",
    "endothelial cell",
    "fibroblast",
    "stromal cell",
    "neuron",
    "glial cell",
    "muscle cell",
)
LEVEL_SETS: dict[str, tuple[str, ...]] = {"broad": GENERIC_LEVELS}


def resolve(term: str) -> str:
    """A CL term id from an id or an exact label/synonym; deprecated ids become their replacement."""
    cl = cell_ontology()
    text = str(term).strip()
    if text in cl:
        return cl.current(text)
    found = term_by_name(text)
    if found is None:
        if text.upper().startswith("CL:"):
            cl.check(text.upper())
        raise OntologyError(
            f"'{term}' is neither a Cell Ontology term id nor a term's exact name",
            "give an id such as CL:0000084 or a CL label such as 'T cell' or 'monocyte'",
        )
    return found


def ancestors(term: str, include_self: bool = False) -> list[str]:
    """The ``is_a`` ancestors of ``term``, nearest first (ties by id), the root ``cell`` last."""
    anc = cell_ontology().ancestors(term, include_self=include_self)
    return sorted(anc, key=lambda t: (anc[t], t))


def descendants(term: str, include_self: bool = False) -> frozenset[str]:
    """Every term below ``term`` by ``is_a``."""
    return cell_ontology().descendants(term, include_self=include_self)


def is_descendant(term: str | None, of: str | None, *, strict: bool = False) -> bool:
    """Whether ``term`` is ``of`` or lies below it (only below it with ``strict=True``).

    An empty or missing term (an unmapped class, an Unknown call) is a descendant of nothing.
    """
    if not term or not of:
        return False
    if term == of:
        return not strict
    return of in cell_ontology().ancestors(term)


def consistent_calls(predicted: Iterable[str | None], truth: Iterable[str | None]) -> list[bool]:
    """Per cell: whether the predicted term is the true term or a descendant of it.

    Empty terms (Unknown calls, unmapped classes) are never consistent. Each distinct pair is
    checked once, so millions of cells cost little.
    """
    cache: dict[tuple[str | None, str | None], bool] = {}
    out = []
    for p, t in zip(predicted, truth, strict=True):
        key = (p, t)
        if key not in cache:
            cache[key] = is_descendant(p, t)
        out.append(cache[key])
    return out


def depth(term: str) -> int:
    """The ``is_a`` distance from the root term ``cell`` (0 for the root itself)."""
    return 0 if term == ROOT else cell_ontology().ancestors(term).get(ROOT, 0)


def closest_common_ancestor(terms: Iterable[str | None]) -> str | None:
    """The most specific term that every given term is, or descends from.

    Empty entries are ignored; ``None`` when no term is given. Among common ancestors the one
    with the smallest largest distance to the terms wins, then the smallest total distance,
    then the deeper term, then the id (deterministic).
    """
    cl = cell_ontology()
    given = sorted({t for t in terms if t})
    if not given:
        return None
    if len(given) == 1:
        return cl.check(given[0])
    dists = [cl.ancestors(t, include_self=True) for t in given]
    common = set(dists[0]).intersection(*dists[1:])
    if not common:  # every CL term descends from "cell"; only reached for disconnected data
        return None
    return min(
        common,
        key=lambda a: (max(d[a] for d in dists), sum(d[a] for d in dists), -depth(a), a),
    )


@functools.cache
def _level_terms(level: str) -> tuple[str, ...]:
    names = LEVEL_SETS.get(level.strip().lower(), (level,))
    return tuple(resolve(n) for n in names)


def level_terms(level: str | Sequence[str]) -> tuple[str, ...]:
    """The CL terms of a roll-up level: a term id or name, a named set (``"broad"``) or a list."""
    if isinstance(level, str):
        return _level_terms(level)
    out: list[str] = []
    for item in level:
        out.extend(t for t in _level_terms(item) if t not in out)
    return tuple(out)


def roll_up(term: str | None, level: str | Sequence[str]) -> str:
    """``term`` reported at a broader ``level``.

    ``level`` is a term id or name ("T cell", "monocyte", "CL:0000236"), the named set
    ``"broad"`` (``GENERIC_LEVELS``) or a list of these. The result is the level term nearest
    above (or equal to) ``term``; a term under none of them is returned unchanged, and an empty
    term (unmapped class, Unknown call) stays empty.
    """
    if not term:
        return ""
    targets = level_terms(level)
    anc = cell_ontology().ancestors(term, include_self=True)
    hits = [t for t in targets if t in anc]
    if not hits:
        return term
    return min(hits, key=lambda t: (anc[t], t))


def roll_up_classes(
    classes: Sequence[str], terms: Sequence[str | None], level: str | Sequence[str]
) -> tuple[list[str], list[str]]:
    """Per class: (name, term) at ``level``, given each class's own CL term (``terms``).

    An unmapped class (empty term) keeps its own name and an empty term.
    """
    rolled = [roll_up(t, level) for t in terms]
    names = [term_name(t) if t else c for t, c in zip(rolled, classes, strict=True)]
    return names, rolled


def roll_up_counts(
    label_counts: Mapping[str, int],
    classes: Sequence[str],
    terms: Sequence[str | None],
    level: str | Sequence[str],
) -> dict[str, object]:
    """Counts of labels at ``level``, from counts per class (labels that are no class, such as
    "Unknown", are kept as they are): ``{"level", "rolled_up_counts", "rolled_up_terms"}``, counts
    largest first (ties by name), terms by rolled-up name."""
    names, rolled = roll_up_classes(classes, terms, level)
    by_class = dict(zip(classes, names, strict=True))
    counts: dict[str, int] = {}
    for label, n in label_counts.items():
        name = by_class.get(label, label)
        counts[name] = counts.get(name, 0) + int(n)
    return {
        "level": level if isinstance(level, str) else list(level),
        "rolled_up_counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "rolled_up_terms": {n: t for n, t in zip(names, rolled, strict=True) if t},
    }


@dataclass(frozen=True)
class LevelCandidate:
    """A broader term that merges some of a result's types when the result is rolled up to it."""

    term: str  # CL id: roll_up(..., term) / the API's level=
    name: str  # its CL name
    labels: tuple[str, ...]  # the result's types it merges (at least two), by name
    n_cells: int  # cells of those types (0 when no counts were given)


def candidate_levels(
    terms: Mapping[str, str | None],
    counts: Mapping[str, int] | None = None,
    *,
    limit: int | None = 20,
) -> list[LevelCandidate]:
    """The broader terms worth rolling ``terms`` (label -> its CL term) up to: the ancestors that
    merge at least two of the labels but not all of them (merging everything leaves one type).

    With ``counts``, only labels with cells count, and candidates come largest first. Terms that
    merge exactly the same labels are one candidate: the named broad compartment among them
    (``GENERIC_LEVELS``: "T cell", "monocyte", ...) when there is one, else the most specific.
    """
    labels = {
        str(label): str(term)
        for label, term in terms.items()
        if term and (counts is None or int(counts.get(label, 0)) > 0)
    }
    return list(_candidates(tuple(sorted(labels.items())), _counts_key(labels, counts), limit))


def _counts_key(labels: Mapping[str, str], counts: Mapping[str, int] | None) -> tuple[int, ...]:
    return tuple(int((counts or {}).get(label, 0)) for label in sorted(labels))


@functools.lru_cache(maxsize=256)
def _candidates(
    labelled: tuple[tuple[str, str], ...], cells: tuple[int, ...], limit: int | None
) -> tuple[LevelCandidate, ...]:
    cl = cell_ontology()
    n_of = dict(zip((label for label, _ in labelled), cells, strict=True))
    under: dict[str, set[str]] = {}  # ancestor -> the labels below it (or at it)
    dist: dict[str, int] = {}  # ancestor -> its largest distance to those labels' terms
    for label, term in labelled:
        for anc, d in cl.ancestors(term, include_self=True).items():
            under.setdefault(anc, set()).add(label)
            dist[anc] = max(dist.get(anc, 0), d)
    generic = set(level_terms("broad"))
    by_group: dict[frozenset[str], str] = {}
    for anc, group in under.items():
        if anc == ROOT or len(group) < 2 or len(group) == len(labelled):
            continue
        key = frozenset(group)
        have = by_group.get(key)
        if have is None or _better(anc, have, generic, dist):
            by_group[key] = anc
    out = [
        LevelCandidate(
            term=term,
            name=term_name(term),
            labels=tuple(sorted(group)),
            n_cells=sum(n_of[label] for label in group),
        )
        for group, term in by_group.items()
    ]
    out.sort(key=lambda c: (-c.n_cells, -len(c.labels), c.name))
    return tuple(out if limit is None else out[:limit])


def _better(term: str, than: str, generic: set[str], dist: Mapping[str, int]) -> bool:
    """Between two terms merging the same labels: a broad compartment, then the nearer term."""
    key = lambda t: (t not in generic, dist[t], t)  # noqa: E731
    return key(term) < key(than)
