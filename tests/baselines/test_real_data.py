"""Baselines on the real PBMC 3k counts (skips when ../shared is absent)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from sklearn.model_selection import train_test_split

import cellfoundry as cf


@pytest.fixture(scope="module")
def split(pbmc3k: ad.AnnData) -> tuple[ad.AnnData, ad.AnnData]:
    y = pbmc3k.obs["cell_type"].astype(str)
    tr, te = train_test_split(np.arange(pbmc3k.n_obs), test_size=0.25, stratify=y, random_state=0)
    return pbmc3k[tr].copy(), pbmc3k[te].copy()


def test_report_on_real_counts(shared_dir: Path) -> None:
    rep = cf.inspect(shared_dir / "data" / "pbmc3k_labeled_counts.h5ad")
    assert rep.matrix("X").kind == "raw_counts"
    assert rep.gene_id_kind == "ensembl" and rep.symbol_source == "var['gene_symbols']"
    sym = cf.inspect(shared_dir / "data" / "symphony_pbmcs_small_lognorm.h5ad")
    assert sym.matrix("X").kind == "log_normalized" and sym.chosen["counts"] is None


def test_logreg_on_held_out_pbmc3k_cells(split, tmp_path: Path) -> None:
    ref, qry = split
    model = cf.train(ref, "cell_type", "logreg", out=tmp_path / "m")
    res = cf.annotate(qry, tmp_path / "m")
    truth = qry.obs["cell_type"].astype(str).to_numpy()
    acc = float((res.labels == truth).mean())
    assert acc >= 0.9, acc
    # the Unknown calls catch a larger share of the errors than of the correct calls
    wrong = res.labels != truth
    assert res.unknown[wrong].mean() > res.unknown[~wrong].mean()
    assert model.manifest.training["n_cells"] == ref.n_obs


def test_symbol_reference_annotates_ensembl_query(split, tmp_path: Path) -> None:
    ref, qry = split
    ref_sym = ref.copy()
    ref_sym.var_names = ref_sym.var["gene_symbols"].astype(str).to_numpy()
    ref_sym.var_names_make_unique()
    ref_sym.var = ref_sym.var.drop(columns=["gene_ids", "gene_symbols"])
    cf.train(ref_sym, "cell_type", "logreg", out=tmp_path / "sym")
    res = cf.annotate(qry, tmp_path / "sym")  # query keeps Ensembl var_names + symbol column
    assert res.coverage is not None and res.coverage.key_kind == "symbol"
    assert res.coverage.fraction_present > 0.99
    assert "the data has Ensembl IDs and was matched through var['gene_symbols']" in str(
        res.summary()["gene_mapping"]
    )
    truth = qry.obs["cell_type"].astype(str).to_numpy()
    assert float((res.labels == truth).mean()) >= 0.9
