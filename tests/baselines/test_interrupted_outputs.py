"""Outputs appear whole or not at all: an interrupted write leaves what was there before.

Before, ``write_annotated_h5ad`` edited its output in place: annotating an .h5ad into itself
deleted the file's obs and wrote the new one, so a full disk, a crash or Ctrl-C in between left
the user's only copy without its cell metadata; a predictions table was left half-written.
"""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path
from typing import Any

import anndata as ad
import pandas as pd
import pytest

import cellfoundry as cf
import cellfoundry.outputs as outputs
from cellfoundry.data.atomic import PARTIAL_PREFIX, written_atomically
from cellfoundry.errors import DataError
from tests.conftest import make_counts_adata


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(PARTIAL_PREFIX))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("model")
    ref = make_counts_adata(n_cells=300, n_genes=60, n_types=3, seed=5)
    cf.train(ref, "cell_type", "logreg", out=d / "model", n_features=None)
    return d / "model"


@pytest.fixture
def query(tmp_path: Path) -> Path:
    q = make_counts_adata(n_cells=400, n_genes=60, n_types=3, seed=9)
    q.obs["sample"] = "s1"
    path = tmp_path / "cells.h5ad"
    q.write_h5ad(path, compression="gzip")
    return path


def _disk_full_after_obs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up after the new obs is written, before obsm and uns."""
    real = outputs.write_results

    def failing(path: Path, **parts: Any) -> None:
        real(path, obs=parts["obs"])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs, "write_results", failing)


def test_an_input_annotated_in_place_is_untouched_when_the_write_fails(
    model: Path, query: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = _sha256(query)
    result = cf.annotate(query, model)
    _disk_full_after_obs(monkeypatch)
    with pytest.raises(DataError) as err:
        outputs.write_annotated_h5ad(result, query)
    assert err.value.code == "output_not_writable" and "No space left" in err.value.message
    assert _sha256(query) == digest  # before: obs already replaced, the old one gone
    assert _leftovers(query.parent) == []
    monkeypatch.undo()
    outputs.write_annotated_h5ad(cf.annotate(query, model), query)  # then it works
    res = ad.read_h5ad(query)
    assert "predicted_cell_type" in res.obs and (res.obs["sample"] == "s1").all()
    assert _leftovers(query.parent) == []


def test_an_existing_output_survives_a_failed_rewrite(
    model: Path, query: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "annotated.h5ad"
    outputs.write_annotated_h5ad(cf.annotate(query, model), out)
    digest = _sha256(out)
    _disk_full_after_obs(monkeypatch)
    with pytest.raises(DataError):
        outputs.write_annotated_h5ad(cf.annotate(query, model, threshold=0.99), out)
    assert _sha256(out) == digest and _leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["predictions.csv.gz", "predictions.parquet"])
def test_a_predictions_table_is_whole_or_the_previous_one(
    model: Path, query: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    out = tmp_path / name
    result = cf.annotate(query, model)
    outputs.write_predictions(result, out)
    digest = _sha256(out)
    first = pd.read_parquet(out) if name.endswith("parquet") else pd.read_csv(out, index_col=0)
    assert len(first) == 400  # the partial name kept the suffix: .csv.gz is still gzip
    real = pd.DataFrame.to_parquet if name.endswith("parquet") else pd.DataFrame.to_csv

    def interrupted(self: pd.DataFrame, path: Any, *args: Any, **kwargs: Any) -> None:
        real(self.iloc[:10], path, *args, **kwargs)  # a tenth of the rows, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(
        pd.DataFrame, "to_parquet" if name.endswith("parquet") else "to_csv", interrupted
    )
    with pytest.raises(KeyboardInterrupt):
        outputs.write_predictions(result, out)
    assert _sha256(out) == digest and _leftovers(tmp_path) == []


def test_written_atomically_renames_only_a_complete_file(tmp_path: Path) -> None:
    target = tmp_path / "x.txt"
    with written_atomically(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith("x.txt") and tmp != target
        tmp.write_text("whole")
        assert not target.exists()  # nothing at the final path until the block ends
    assert target.read_text() == "whole"
    with pytest.raises(RuntimeError), written_atomically(target) as tmp:
        tmp.write_text("ha")
        raise RuntimeError
    assert target.read_text() == "whole" and _leftovers(tmp_path) == []
