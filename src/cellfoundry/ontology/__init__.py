"""Cell Ontology (CL) terms for cell-type classes, offline.

A bottom-layer package (it imports only ``cellfoundry.errors``): the ontology ships inside the
``cellxgene-ontology-guide`` wheel and is read once, cached.

- ``map_label(name)`` / ``map_labels(classes, label_map=None)``: class names -> CL term ids
- ``is_descendant``, ``ancestors``, ``descendants``, ``closest_common_ancestor``, ``roll_up``,
  ``candidate_levels`` (the broader terms a result's types can be rolled up to)
- ``term_name(id)``, ``resolve(id_or_name)``, ``term_by_name(name)``
"""

from cellfoundry.ontology.cl import (
    ROOT,
    CellOntology,
    OntologyError,
    cell_ontology,
    ontology_version,
    term_name,
)
from cellfoundry.ontology.mapping import (
    LabelMapping,
    TermMatch,
    curated_table,
    map_label,
    map_labels,
    read_label_map,
)
from cellfoundry.ontology.names import normalise, term_by_name
from cellfoundry.ontology.relations import (
    GENERIC_LEVELS,
    LEVEL_SETS,
    LevelCandidate,
    ancestors,
    candidate_levels,
    closest_common_ancestor,
    consistent_calls,
    depth,
    descendants,
    is_descendant,
    level_terms,
    resolve,
    roll_up,
    roll_up_classes,
    roll_up_counts,
)

TERM_COLUMN_SUFFIX = "_ontology_term_id"

__all__ = [
    "GENERIC_LEVELS",
    "LEVEL_SETS",
    "ROOT",
    "TERM_COLUMN_SUFFIX",
    "CellOntology",
    "LabelMapping",
    "LevelCandidate",
    "OntologyError",
    "TermMatch",
    "ancestors",
    "candidate_levels",
    "cell_ontology",
    "closest_common_ancestor",
    "consistent_calls",
    "curated_table",
    "depth",
    "descendants",
    "is_descendant",
    "level_terms",
    "map_label",
    "map_labels",
    "normalise",
    "ontology_version",
    "read_label_map",
    "resolve",
    "roll_up",
    "roll_up_classes",
    "roll_up_counts",
    "term_by_name",
    "term_name",
]
