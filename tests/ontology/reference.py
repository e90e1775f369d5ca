"""The independent reference for ontology tests: the official cellxgene-ontology-guide parser."""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
from cellxgene_ontology_guide.ontology_parser import OntologyParser

PARSER = OntologyParser()

# pbmc3k class -> the CL label of its term (the ontology's own names)
PBMC3K_TERMS = {
    "CD4 T cells": "CD4-positive, alpha-beta T cell",
    "CD8 T cells": "CD8-positive, alpha-beta T cell",
    "CD14+ Monocytes": "CD14-positive monocyte",
    "FCGR3A+ Monocytes": "CD14-low, CD16-positive monocyte",
    "B cells": "B cell",
    "NK cells": "natural killer cell",
    "Dendritic cells": "dendritic cell",
    "Megakaryocytes": "megakaryocyte",
}


def cl(name: str) -> str:
    """The official package's id for a CL label."""
    term = PARSER.get_term_id_by_label(name, "CL")
    assert term is not None, name
    return term


def read_quietly(path: Path, backed: bool = False) -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pbmc68k_reduced is an old-format file
        return ad.read_h5ad(path, backed="r" if backed else None)
