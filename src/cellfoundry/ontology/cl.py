"""The Cell Ontology (CL), loaded once from the copy that ships inside ``cellxgene-ontology-guide``.

The package bundles every ontology it supports as zstd-compressed JSON in its wheel; reading it
never touches the network. Each CL term carries its label, synonyms, deprecation state and its
``is_a`` ancestors with their distances, from which descendants are derived here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from cellfoundry.errors import CellfoundryError

ROOT = "CL:0000000"  # "cell"
_TERM_ID = re.compile(r"^CL:\d{7}$")


class OntologyError(CellfoundryError):
    """A Cell Ontology term or label mapping cannot be used."""

    code = "invalid_ontology_term"


@dataclass(frozen=True)
class CellOntology:
    """The non-network view of CL that cellfoundry needs: names, synonyms and ``is_a`` relations."""

    version: str
    labels: dict[str, str]  # term id -> label
    synonyms: dict[str, tuple[str, ...]]
    deprecated: frozenset[str]
    replaced_by: dict[str, str]
    ancestor_distances: dict[str, dict[str, int]]  # term -> {ancestor: distance}, self excluded
    _descendants: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)

    def __contains__(self, term_id: object) -> bool:
        return isinstance(term_id, str) and term_id in self.labels

    def label(self, term_id: str) -> str:
        """The term's own CL label (``OntologyError`` for an id CL does not have)."""
        return self.labels[self.check(term_id)]

    def check(self, term_id: str) -> str:
        """``term_id`` itself when CL has it; an ``OntologyError`` that says what to fix otherwise."""
        if term_id in self.labels:
            return term_id
        if not isinstance(term_id, str) or not _TERM_ID.match(term_id.strip()):
            raise OntologyError(
                f"'{term_id}' is not a Cell Ontology term id",
                "use an id of the form CL:0000236 (see https://www.ebi.ac.uk/ols4/ontologies/cl)",
            )
        raise OntologyError(
            f"{term_id} is not in the Cell Ontology {self.version} shipped with cellfoundry",
            "check the id; it may be newer than this ontology release",
        )

    def current(self, term_id: str) -> str:
        """The live term: a deprecated term's replacement, or the term itself."""
        term_id = self.check(term_id)
        seen = {term_id}
        while term_id in self.deprecated and term_id in self.replaced_by:
            term_id = self.replaced_by[term_id]
            if term_id in seen or term_id not in self.labels:
                break
            seen.add(term_id)
        return term_id

    def ancestors(self, term_id: str, include_self: bool = False) -> dict[str, int]:
        """``{ancestor: is_a distance}`` of ``term_id`` (distance 0 for the term itself)."""
        anc = dict(self.ancestor_distances.get(self.check(term_id), {}))
        if include_self:
            anc[term_id] = 0
        return anc

    def descendants(self, term_id: str, include_self: bool = False) -> frozenset[str]:
        """Every term that lies below ``term_id`` by ``is_a``."""
        term_id = self.check(term_id)
        if not self._descendants:
            below: dict[str, set[str]] = {t: set() for t in self.labels}
            for term, anc in self.ancestor_distances.items():
                for a in anc:
                    below.setdefault(a, set()).add(term)
            self._descendants.update({t: frozenset(s) for t, s in below.items()})
        out = self._descendants.get(term_id, frozenset())
        return out | {term_id} if include_self else out

    def live_terms(self) -> Iterable[str]:
        return (t for t in self.labels if t not in self.deprecated)


@functools.cache
def cell_ontology() -> CellOntology:
    """CL as shipped in ``cellxgene-ontology-guide`` (the latest CELLxGENE schema it supports)."""
    try:
        from cellxgene_ontology_guide.ontology_parser import OntologyParser
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise OntologyError(
            "the Cell Ontology package cellxgene-ontology-guide is not installed",
            "pip install cellxgene-ontology-guide (it ships the ontology; nothing is downloaded)",
        ) from exc
    schema = OntologyParser().cxg_schema
    raw = schema.ontology("CL")
    version = str(schema.supported_ontologies["CL"]["version"])
    labels: dict[str, str] = {}
    synonyms: dict[str, tuple[str, ...]] = {}
    deprecated: set[str] = set()
    replaced: dict[str, str] = {}
    ancestors: dict[str, dict[str, int]] = {}
    for term, info in raw.items():
        if not term.startswith("CL:"):
            continue
        labels[term] = str(info["label"])
        synonyms[term] = tuple(str(s) for s in info.get("synonyms") or ())
        if info.get("deprecated"):
            deprecated.add(term)
            if isinstance(info.get("replaced_by"), str):
                replaced[term] = info["replaced_by"]
        ancestors[term] = {
            a: int(d) for a, d in (info.get("ancestors") or {}).items() if a.startswith("CL:")
        }
    return CellOntology(
        version=version,
        labels=labels,
        synonyms=synonyms,
        deprecated=frozenset(deprecated),
        replaced_by=replaced,
        ancestor_distances=ancestors,
    )


def ontology_version() -> str:
    """The CL release in use, e.g. ``v2026-03-26``."""
    return cell_ontology().version


def term_name(term_id: str) -> str:
    """The CL label of ``term_id``."""
    return cell_ontology().label(term_id)
