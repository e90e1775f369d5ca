"""The validation report: matrix kinds, choices, gene-ID kinds, and every error path."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellfoundry.data.normalize import log1p_cp10k
from cellfoundry.data.prepare import plan_input
from cellfoundry.data.report import validate
from cellfoundry.errors import CoverageError, DataError
from tests.conftest import make_counts_adata


def codes(report) -> set[str]:
    return {m.code for m in report.messages}


def test_raw_counts_in_x_are_chosen_for_both_purposes() -> None:
    a = make_counts_adata()
    r = validate(a)
    assert r.ok
    assert r.matrix("X").kind == "raw_counts"
    assert r.chosen == {"counts": "X", "lognorm": "X"}
    assert r.gene_id_kind == "symbol" and r.species == "human"
    json.loads(r.to_json())  # serialisable
    assert "raw_counts" in r.render()


def test_counts_layer_preferred_over_lognormalised_x() -> None:
    a = make_counts_adata()
    a.layers["counts"] = a.X.copy()
    a.X = log1p_cp10k(a.X)
    r = validate(a)
    assert r.matrix("X").kind == "log_normalized"
    assert abs(r.matrix("X").log_target_sum - 1e4) < 1
    assert r.chosen["counts"] == "layers/counts"


def test_raw_slot_counts_found_when_x_is_scaled() -> None:
    a = make_counts_adata()
    a.raw = a.copy()
    x = log1p_cp10k(a.X).toarray()
    a.X = (x - x.mean(0)) / (x.std(0) + 1e-6)
    r = validate(a)
    assert r.matrix("X").kind == "scaled"
    assert r.chosen["counts"] == "raw/X"
    assert "scaled_matrix" in codes(r)
    # sparsity describes the matrix that is used (raw counts), not the dense scaled X
    raw = a.raw.X
    assert r.sparsity == pytest.approx(1 - raw.nnz / (raw.shape[0] * raw.shape[1]))


def test_only_lognormalised_warns_about_missing_counts() -> None:
    a = make_counts_adata()
    a.X = log1p_cp10k(a.X)
    r = validate(a)
    assert r.ok
    assert r.chosen == {"counts": None, "lognorm": "X"}
    assert "no_raw_counts" in codes(r)
    with pytest.raises(DataError) as err:
        plan_input(a, list(a.var_names), representation="counts")
    assert "raw counts" in err.value.message and "layers['counts']" in err.value.hint


def test_only_scaled_is_an_error_with_a_fix() -> None:
    a = make_counts_adata()
    x = log1p_cp10k(a.X).toarray()
    a.X = (x - x.mean(0)) / (x.std(0) + 1e-6)
    r = validate(a)
    assert not r.ok
    err = next(m for m in r.errors if m.code == "no_usable_matrix")
    assert "layers['counts']" in err.hint


def test_negative_values_are_counted_and_located() -> None:
    """Before: "X holds scaled values (negative numbers); it is not used" and the refusal
    "no raw-count or log-normalised matrix found (X=scaled)": not how many, nor where."""
    a = make_counts_adata(n_cells=50, n_genes=40)
    x = a.X.toarray()
    x[4, 7], x[9, 1], x[30, 39] = -2.5, -1.0, -0.25
    a.X = sp.csr_matrix(x)
    row, col = np.argwhere(x < 0)[0]
    where = f"cell '{a.obs_names[row]}', gene '{a.var_names[col]}': {x[row, col]:.4g}"
    expected = f"{int((x < 0).sum())} negative values in its 50 cells, e.g. {where}"
    r = validate(a)
    info = next(m for m in r.messages if m.code == "scaled_matrix")
    assert expected in info.message
    with pytest.raises(DataError) as err:
        plan_input(a, list(a.var_names), representation="lognorm")
    assert f"X=scaled: {expected}" in err.value.message
    assert "sc.pp.scale" in (err.value.hint or "")


def test_nan_and_inf_are_reported() -> None:
    a = make_counts_adata()
    x = a.X.toarray()
    x[0, 0], x[1, 1] = np.nan, np.inf
    a.X = sp.csr_matrix(x)
    r = validate(a)
    assert r.matrix("X").kind == "invalid"
    assert r.matrix("X").n_nan == 1 and r.matrix("X").n_inf == 1
    assert "nan_inf" in codes(r) and not r.ok
    # where the first one is, as for negative values (before: only how many)
    err = next(m for m in r.errors if m.code == "nan_inf")
    where = f"cell '{a.obs_names[0]}', gene '{a.var_names[0]}': NaN"
    assert err.message == f"X contains 1 NaN and 1 Inf values in the first 300 cells, e.g. {where}"
    assert err.hint == "replace NaN/Inf, e.g. with 0, or give the raw counts in layers['counts']"


def test_noninteger_counts_are_usable_with_a_warning() -> None:
    a = make_counts_adata()
    a.X = a.X * 1.37 + a.X.sign() * 40
    r = validate(a)
    assert r.matrix("X").kind == "noninteger_counts"
    assert r.chosen["counts"] == "X"
    assert "noninteger_counts" in codes(r)


def test_empty_dataset_is_an_error() -> None:
    r = validate(ad.AnnData(sp.csr_matrix((0, 5), dtype=np.float32)))
    assert not r.ok and r.errors[0].code == "empty"


def test_ensembl_versions_symbols_column_and_duplicates() -> None:
    a = make_counts_adata(n_genes=50)
    ids = ["ENSG00000141510.17", "ENSG00000141510.17"] + [f"ENSG{i:011d}.1" for i in range(48)]
    a.var = pd.DataFrame(
        {"gene_symbols": ["TP53", "TP53"] + [f"G{i}" for i in range(48)]}, index=ids
    )
    r = validate(a)
    assert r.gene_id_kind == "ensembl_versioned"
    assert r.symbol_source == "var['gene_symbols']"
    assert r.n_duplicate_genes == 1 and r.duplicate_examples == ["ENSG00000141510.17"]
    assert {"duplicate_genes", "ensembl_names", "gene_ids"} <= codes(r)
    hint = next(m for m in r.messages if m.code == "ensembl_names").message
    assert "var['gene_symbols']" in hint


def test_mouse_and_mixed_ids_warn() -> None:
    a = make_counts_adata(n_genes=20)
    a.var_names = [f"Gene{i}a" for i in range(20)]
    assert validate(a).species == "mouse"
    assert "orthology" in codes(validate(a))  # mouse genes, none with a human ortholog
    b = make_counts_adata(n_genes=20)
    b.var_names = [f"ENSG{i:011d}" for i in range(10)] + [f"SYM{i}" for i in range(10)]
    assert validate(b).gene_id_kind == "mixed" and "mixed_ids" in codes(validate(b))


def test_low_coverage_is_refused_with_numbers() -> None:
    a = make_counts_adata(n_genes=100)
    target = [f"GENE{i}" for i in range(20)] + [f"OTHER{i}" for i in range(180)]
    with pytest.raises(CoverageError) as err:
        plan_input(a, target, target_name="model genes")
    assert "20 of the 200" in err.value.message and "10.0%" in err.value.message
    assert "min_coverage" in err.value.hint
    plan = plan_input(a, target, min_coverage=0.05, min_genes=10)
    assert plan.coverage.n_present == 20
    assert plan.warnings and "10.0%" in plan.warnings[0]
