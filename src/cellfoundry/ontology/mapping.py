"""Class names -> Cell Ontology term ids.

Order of precedence for one class name:

1. a user mapping (``label,ontology_term_id`` CSV or a dict) — wins over everything; an empty
   term id there keeps the class deliberately unmapped;
2. the curated table ``curated_labels.csv`` (common atlas names, each row with its source and
   reason);
3. the CL label or a synonym (one term only), case-insensitively, after normalisation of case,
   spaces and ``+``/``-`` marker signs;
4. the curated table again for a plural "... cells" name ("Beta cells" -> "beta");
5. CL again after further rules: plurals, a missing "cell", CD4/CD8 T -> alpha-beta T, and
   finally without marker prefixes (a coarser but still true term).

A class that none of these finds stays unmapped (empty term) and is listed.
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cellfoundry.ontology.cl import OntologyError, cell_ontology
from cellfoundry.ontology.names import candidates, lookup, normalise
from cellfoundry.ontology.relations import resolve

CURATED_TABLE = "curated_labels.csv"
LABEL_MAP_COLUMNS = ("label", "ontology_term_id")


@dataclass(frozen=True)
class TermMatch:
    """How one class name was mapped: ``term_id`` is ``""`` when it was not."""

    label: str
    term_id: str
    term_name: str
    method: str  # user | curated | label | synonym | <normalisation rule> | unmapped
    source: str  # where the mapping comes from (file, curated row's source, CL text matched)

    @property
    def mapped(self) -> bool:
        return bool(self.term_id)


@dataclass
class LabelMapping:
    """The CL term of every class of a model, with how each was found."""

    matches: dict[str, TermMatch] = field(default_factory=dict)
    ontology_version: str = ""
    # what the user should know about their label map (``map_labels(check=True)``); not stored
    warnings: list[str] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return list(self.matches)

    @property
    def terms(self) -> dict[str, str]:
        """``{class: term id}`` for the mapped classes only."""
        return {c: m.term_id for c, m in self.matches.items() if m.term_id}

    @property
    def unmapped(self) -> list[str]:
        return [c for c, m in self.matches.items() if not m.term_id]

    def term(self, label: str) -> str:
        """The class's term id, ``""`` when unmapped or unknown to this mapping."""
        m = self.matches.get(label)
        return m.term_id if m else ""

    def term_name(self, label: str) -> str:
        m = self.matches.get(label)
        return m.term_name if m else ""

    def term_ids(self, classes: Iterable[str] | None = None) -> list[str]:
        """Term ids aligned with ``classes`` (the mapping's own order by default)."""
        return [self.term(c) for c in (self.classes if classes is None else classes)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"ontology": "CL", "version", "terms", "unmapped", "matches": [...]}``."""
        return {
            "ontology": "CL",
            "version": self.ontology_version,
            "terms": self.terms,
            "unmapped": self.unmapped,
            "matches": [asdict(m) for m in self.matches.values()],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> LabelMapping:
        matches = {}
        for m in raw.get("matches") or []:
            tm = TermMatch(**{k: str(m.get(k, "")) for k in TermMatch.__dataclass_fields__})
            matches[tm.label] = tm
        return cls(matches=matches, ontology_version=str(raw.get("version", "")))

    def table(self) -> list[dict[str, str]]:
        """One row per class: label, term id, term name, method, source."""
        return [asdict(m) for m in self.matches.values()]


@dataclass(frozen=True)
class CuratedRow:
    label: str
    term_id: str
    term_name: str
    source: str
    reason: str


@functools.cache
def curated_table() -> dict[str, CuratedRow]:
    """The curated atlas names, keyed by normalised label."""
    text = resources.files("cellfoundry.ontology").joinpath(CURATED_TABLE).read_text("utf-8")
    rows: dict[str, CuratedRow] = {}
    for r in csv.DictReader(io.StringIO(text)):
        row = CuratedRow(
            label=r["label"],
            term_id=r["ontology_term_id"],
            term_name=r["term_name"],
            source=r["source"],
            reason=r["reason"],
        )
        rows[normalise(row.label)] = row
    return rows


def _match(name: str) -> TermMatch | None:
    cl = cell_ontology()

    def curated(row: CuratedRow, method: str) -> TermMatch:
        term = cl.current(row.term_id)
        return TermMatch(name, term, cl.labels[term], method, f"{row.source}: {row.reason}")

    def from_cl(text: str, rule: str) -> TermMatch | None:
        hit = lookup(text)
        if hit is None:
            return None
        term, kind = hit
        method = kind if rule == "normalised" else rule
        return TermMatch(name, term, cl.labels[term], method, f"CL {kind} '{text}'")

    row = curated_table().get(normalise(name))
    if row is not None:
        return curated(row, "curated")
    spellings = candidates(name)
    exact = from_cl(*spellings[0]) if spellings else None  # the name itself, normalised
    if exact is not None:
        return exact
    for text, rule in spellings:  # "Beta cells" -> the curated "beta" (before CL's "alpha cell")
        if rule not in ("normalised", "singular") or not text.endswith(" cell"):
            continue
        row = curated_table().get(text.removesuffix(" cell"))
        if row is not None:
            return curated(row, "curated without 'cell'")
    for text, rule in spellings[1:]:
        found = from_cl(text, rule)
        if found is not None:
            return found
    return None


def map_label(name: str) -> str | None:
    """The CL term id of a class name (curated table, label/synonym, normalised), or ``None``."""
    m = _match(str(name))
    return m.term_id if m else None


def read_label_map(path: str | Path) -> dict[str, str]:
    """A user's ``label,ontology_term_id`` CSV as ``{label: term id}`` (``""`` = keep unmapped).

    The term may also be given as a CL term's exact name. Errors say which row to fix.
    """
    p = Path(path)
    if not p.is_file():
        raise OntologyError(
            f"label map {path} does not exist", "give a CSV with columns label,ontology_term_id"
        )
    with p.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in LABEL_MAP_COLUMNS if c not in cols]
        if missing:
            raise OntologyError(
                f"label map {path} lacks column(s) {missing} (it has {cols})",
                "write a header line 'label,ontology_term_id' and one row per class",
            )
        rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    return _checked_user_map(
        {r["label"]: r["ontology_term_id"] for r in rows if r.get("label")}, str(path), rows
    )


def _checked_user_map(
    raw: Mapping[str, str], origin: str, rows: list[dict[str, str]] | None = None
) -> dict[str, str]:
    if rows is not None:
        seen: dict[str, str] = {}
        for r in rows:
            label, term = r.get("label", ""), r.get("ontology_term_id", "")
            if label in seen and seen[label] != term:
                raise OntologyError(
                    f"label map {origin} gives '{label}' two terms ({seen[label]}, {term})",
                    "keep one row per label",
                )
            seen[label] = term
    out: dict[str, str] = {}
    for label, term in raw.items():
        term = (term or "").strip()
        if not term:
            out[str(label)] = ""
            continue
        try:
            out[str(label)] = resolve(term)
        except OntologyError as exc:
            raise OntologyError(
                f"label map {origin}: '{label}' -> '{term}': {exc.message}", exc.hint
            ) from exc
    return out


def unmatched_labels(user: Mapping[str, str], classes: Iterable[str], origin: str) -> str | None:
    """The warning for the rows of a user's label map that name none of ``classes`` (each with
    the class names nearest to it), None when every row names a class. Raises when no row does:
    such a map changes nothing, which is never what was meant."""
    names = [str(c) for c in classes]
    known = set(names)
    missed = [label for label in user if label not in known]
    if not missed:
        return None
    by_lower = {n.lower(): n for n in names}

    def nearest(label: str) -> str:
        close = difflib.get_close_matches(label.lower(), list(by_lower), n=2, cutoff=0.6)
        return (
            f"'{label}' (nearest: {', '.join(repr(by_lower[c]) for c in close)})"
            if close
            else f"'{label}'"
        )

    shown = "; ".join(nearest(label) for label in missed[:10])
    more = f" and {len(missed) - 10} more" if len(missed) > 10 else ""
    listed = ", ".join(repr(n) for n in names[:20]) + (", ..." if len(names) > 20 else "")
    hint = f"spell each label exactly as a class of the model ({len(names)} classes: {listed})"
    if len(missed) == len(user):
        raise OntologyError(
            f"label map {origin}: none of its {len(user)} labels is a class of the model: {shown}{more}",
            hint,
            code="label_map_unmatched",
        )
    return f"label map {origin}: {len(missed)} of {len(user)} labels are not classes of the model and are ignored: {shown}{more} (fix: {hint})"


def map_labels(
    classes: Iterable[str],
    label_map: str | Path | Mapping[str, str] | None = None,
    *,
    base: LabelMapping | None = None,
    check: bool = False,
) -> LabelMapping:
    """Map every class name to a CL term; ``label_map`` (CSV path or dict) wins over all rules.

    ``base`` (e.g. the mapping stored with a model) is kept for the classes ``label_map`` does
    not name. Returns a ``LabelMapping``: ``.terms`` ``{class: id}`` of the mapped classes,
    ``.unmapped`` the list of the others, ``.matches`` the method and provenance of each.
    ``check=True`` (``classes`` are all the names the map is for, e.g. a model's classes):
    labels of the map that name no class are listed in ``.warnings`` (with the nearest class
    names), and a map none of whose labels names a class is refused (``unmatched_labels``).
    """
    cl = cell_ontology()
    if label_map is None:
        user: dict[str, str] = {}
        origin = ""
    elif isinstance(label_map, str | Path):
        user, origin = read_label_map(label_map), Path(label_map).name
    else:
        user, origin = _checked_user_map(label_map, "given as a dict"), "user mapping"
    matches: dict[str, TermMatch] = {}
    for c in classes:
        name = str(c)
        if name in matches:
            continue
        if name in user:
            term = user[name]
            matches[name] = TermMatch(
                name, term, cl.labels[term] if term else "", "user", origin or "user mapping"
            )
            continue
        if base is not None and name in base.matches:
            matches[name] = base.matches[name]
            continue
        found = _match(name)
        matches[name] = found or TermMatch(name, "", "", "unmapped", "")
    warning = unmatched_labels(user, matches, origin or "user mapping") if check and user else None
    return LabelMapping(
        matches=matches, ontology_version=cl.version, warnings=[warning] if warning else []
    )
