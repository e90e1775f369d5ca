"""A label map row that names no class of the model is never silently ignored.

Before: `--label-map` rows with a misspelt class ('Type_1' for 'type_1') changed nothing and
said nothing, in train and annotate alike, even when no row matched at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anndata as ad
import pytest

from cellfoundry.api import annotate, train
from cellfoundry.errors import CellfoundryWarning
from cellfoundry.ontology import OntologyError, map_labels
from tests.conftest import make_counts_adata
from tests.ontology.reference import cl

CLASSES = ["B cells", "CD4 T cells", "CD14+ Monocytes"]


def _csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("label,ontology_term_id\n" + "".join(f"{a},{b}\n" for a, b in rows))
    return path


def test_unmatched_rows_are_listed_with_the_nearest_classes(tmp_path: Path) -> None:
    path = _csv(
        tmp_path / "m.csv",
        [("B cells", "naive B cell"), ("CD4 T cell", "T cell"), ("monocytes CD14", "monocyte")],
    )
    mapping = map_labels(CLASSES, path, check=True)
    assert mapping.term("B cells") == cl("naive B cell")  # the matching row still applies
    (warning,) = mapping.warnings
    assert "2 of 3 labels are not classes of the model" in warning
    assert "'CD4 T cell' (nearest: 'CD4 T cells'" in warning
    assert "'monocytes CD14'" in warning and "CD14+ Monocytes" in warning
    assert map_labels(CLASSES, path).warnings == []  # without check (e.g. two vocabularies)
    assert map_labels(CLASSES, {"B cells": "B cell"}, check=True).warnings == []


def test_a_map_naming_no_class_is_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path / "m.csv", [("b cell", "B cell"), ("CD4 T", "T cell")])
    with pytest.raises(OntologyError) as err:
        map_labels(CLASSES, path, check=True)
    assert "none of its 2 labels is a class of the model" in err.value.message
    assert "'b cell' (nearest: 'B cells')" in err.value.message
    assert err.value.code == "label_map_unmatched"
    assert "'CD4 T cells'" in (err.value.hint or "")


@pytest.fixture(scope="module")
def ref() -> ad.AnnData:
    return make_counts_adata(n_cells=150, n_genes=60, n_types=3, seed=4)


def test_train_and_annotate_warn_or_refuse(ref: ad.AnnData, tmp_path: Path) -> None:
    partial = _csv(tmp_path / "p.csv", [("type_0", "B cell"), ("Type_1", "T cell")])
    nothing = _csv(tmp_path / "n.csv", [("Type_0", "B cell"), ("type1", "T cell")])
    with pytest.raises(OntologyError, match="none of its 2 labels"):
        train(ref, "cell_type", "logreg", out=tmp_path / "never", label_map=nothing)
    assert not (tmp_path / "never").exists()  # refused before the training
    with pytest.warns(CellfoundryWarning, match=r"'Type_1' \(nearest: 'type_1'"):
        model = train(ref, "cell_type", "logreg", label_map=partial)
    assert model.ontology.term("type_0") == cl("B cell")
    result = annotate(ref[:20].copy(), model, label_map=partial)
    assert any("'Type_1' (nearest: 'type_1'" in w for w in result.warnings)
    with pytest.raises(OntologyError, match="none of its 2 labels"):
        annotate(ref[:20].copy(), model, label_map=nothing)


def test_cli_train_prints_the_warning(ref: ad.AnnData, tmp_path: Path) -> None:
    ref.write_h5ad(tmp_path / "ref.h5ad")
    partial = _csv(tmp_path / "p.csv", [("type_0", "B cell"), ("type 2", "T cell")])
    cmd = [sys.executable, "-m", "cellfoundry.cli", "train", str(tmp_path / "ref.h5ad")]
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path / "m"), "--label-map", str(partial)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning: label map p.csv: 1 of 2 labels are not classes of the model" in proc.stderr
    assert "'type 2' (nearest: 'type_2'" in proc.stderr and "Traceback" not in proc.stderr
