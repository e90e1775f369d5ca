"""Repeated cell names: made unique at reading (anndata's -1, -2 suffixes), reported in our words,
and every output row stays the input row it came from.

Before: anndata's own "UserWarning: Observation names are not unique. To make them unique, call
`.obs_names_make_unique`." leaked (with its source line) from inspect and twice from annotate,
the validation report said nothing, and the predictions table repeated the names."""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from cellfoundry.api import annotate, train
from cellfoundry.data.io import read_data
from cellfoundry.data.report import validate
from tests.conftest import make_counts_adata

NAMES_AT = {3: "dup", 5: "dup", 9: "dup", 10: "cell0"}  # row -> name; cell0 is row 0's name


def _with_repeats(adata: ad.AnnData) -> list[str]:
    names = list(adata.obs_names)
    for row, name in NAMES_AT.items():
        names[row] = name
    return names


@pytest.fixture
def repeated(tmp_path: Path) -> dict[str, Path | ad.AnnData]:
    a = make_counts_adata(n_cells=40, n_genes=50, n_types=3, seed=5)
    df = a.to_df()
    df.index = _with_repeats(a)
    df.to_csv(tmp_path / "dup.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = a.copy()
        b.obs_names = _with_repeats(a)
        b.write_h5ad(tmp_path / "dup.h5ad")
    return {"csv": tmp_path / "dup.csv", "h5ad": tmp_path / "dup.h5ad", "adata": a}


@pytest.mark.parametrize(("kind", "backed"), [("csv", False), ("h5ad", False), ("h5ad", True)])
def test_read_makes_names_unique_in_row_order_and_reports_it(
    repeated, kind: str, backed: bool
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = read_data(repeated[kind], backed=backed)
        report = validate(data)
    assert not [w for w in caught if "not unique" in str(w.message)]
    names = list(data.obs_names)
    assert names[3] == "dup" and names[5] == "dup-1" and names[9] == "dup-2"
    assert names[0] == "cell0" and names[10] == "cell0-1"
    assert data.obs_names.is_unique
    src = repeated["adata"]
    np.testing.assert_array_equal(data.X[:].toarray(), src.X.toarray())  # rows not reordered
    (msg,) = [m for m in report.messages if m.code == "duplicate_cells"]
    assert msg.level == "warning" and msg.hint
    assert (
        "3 of 40 cells repeat an earlier cell's name (2 names occur more than once)" in msg.message
    )
    assert (
        "row 6: 'dup' -> 'dup-1'" in msg.message and "row 11: 'cell0' -> 'cell0-1'" in msg.message
    )


def test_an_anndata_given_as_is_is_reported_not_renamed(repeated) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = repeated["adata"].copy()
        a.obs_names = _with_repeats(a)
    report = validate(a)
    (msg,) = [m for m in report.messages if m.code == "duplicate_cells"]
    assert "3 of 40 cells repeat" in msg.message and "'dup' (3x)" in msg.message
    assert "obs_names_make_unique" in (msg.hint or "")
    assert list(a.obs_names) == _with_repeats(a)  # validate never modifies


def test_annotate_output_row_i_is_input_row_i(repeated, tmp_path: Path) -> None:
    src = repeated["adata"]
    model = train(
        make_counts_adata(n_cells=200, n_genes=50, n_types=3, seed=6), "cell_type", "logreg"
    )
    unique = tmp_path / "unique.csv"
    src.to_df().to_csv(unique)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = annotate(repeated["csv"], model)
    assert not [w for w in caught if "not unique" in str(w.message)]
    assert any("3 of 40 cells repeat an earlier cell's name" in w for w in res.warnings)
    ref = annotate(unique, model)
    frame, ref_frame = res.to_frame(), ref.to_frame()
    assert list(frame.index[[3, 5, 9, 10]]) == ["dup", "dup-1", "dup-2", "cell0-1"]
    np.testing.assert_array_equal(frame["predicted_cell_type"], ref_frame["predicted_cell_type"])
    np.testing.assert_allclose(frame["prediction_confidence"], ref_frame["prediction_confidence"])
