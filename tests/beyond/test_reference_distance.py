"""Out-of-reference scores on real PBMC 3k cells: calibration, a perturbation, storage."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from safetensors.numpy import load_file
from sklearn.metrics import roc_auc_score

import cellfoundry as cf
from cellfoundry.artifacts import load_genes


def add_program(
    adata: ad.AnnData, genes: list[str], share: float, seed: int = 0
) -> tuple[ad.AnnData, list[str]]:
    """Cells with a 50-gene program switched on: each program gene gains Poisson counts with mean
    ``share`` / 50 of the cell's own depth (raw counts, so normalisation sees a real cell)."""
    rng = np.random.default_rng(seed)
    program = [str(g) for g in rng.choice(genes, 50, replace=False)]
    cols = adata.var_names.get_indexer(program)
    assert (cols >= 0).all()
    counts = sp.csr_matrix(adata.X).toarray()
    depth = counts.sum(axis=1, keepdims=True)
    counts[:, cols] += rng.poisson(np.broadcast_to(depth * share / 50, (len(depth), 50)))
    out = adata.copy()
    out.X = sp.csr_matrix(counts)
    out.obs_names = [f"{n}-perturbed" for n in adata.obs_names]
    return out, program


@pytest.mark.parametrize("family", ["logreg", "knn"])
def test_held_out_reference_cells_score_about_one(pbmc_split, pbmc_models, family) -> None:
    _, query = pbmc_split  # cells of the same dataset the model never saw
    res = cf.annotate(query, pbmc_models[family])
    dist = res.obs_columns["reference_distance"]
    assert dist.shape == (query.n_obs,) and np.isfinite(dist).all() and (dist > 0).all()
    assert 0.85 <= float(np.median(dist)) <= 1.15
    oor = res.obs_columns["out_of_reference"]
    assert oor.dtype == bool
    assert oor.mean() < 0.05  # the threshold is the 99th percentile of held-out reference cells
    np.testing.assert_array_equal(oor, dist > res.findings["reference_distance"]["threshold"])


def test_added_program_scores_farther(pbmc_split, pbmc_models) -> None:
    _, query = pbmc_split
    genes = load_genes(pbmc_models["logreg"])
    perturbed, program = add_program(query, genes, share=0.02)
    both = ad.concat([query, perturbed])
    res = cf.annotate(both, pbmc_models["logreg"])
    dist = res.obs_columns["reference_distance"]
    is_perturbed = np.r_[np.zeros(query.n_obs), np.ones(perturbed.n_obs)]
    auroc = roc_auc_score(is_perturbed, dist)
    assert auroc > 0.9, (auroc, program[:5])
    oor = res.obs_columns["out_of_reference"]
    assert oor[is_perturbed == 1].mean() > 5 * max(oor[is_perturbed == 0].mean(), 0.01)


def test_summary_and_h5ad_carry_the_out_of_reference_share(
    pbmc_split, pbmc_models, tmp_path: Path
) -> None:
    _, query = pbmc_split
    res = cf.annotate(query, pbmc_models["knn"])
    summ = res.summary()["out_of_reference"]
    oor = res.obs_columns["out_of_reference"]
    assert summ["share"] == pytest.approx(float(oor.mean()))
    per = summ["by_predicted_type"]
    assert set(per) == set(res.labels)
    for label, entry in per.items():
        sel = res.labels == label
        assert entry["n_cells"] == int(sel.sum())
        assert entry["share"] == pytest.approx(float(oor[sel].mean()))
    out = tmp_path / "annotated.h5ad"
    res.to_adata(query.copy()).write_h5ad(out)
    back = ad.read_h5ad(out)
    np.testing.assert_allclose(
        back.obs["reference_distance"], res.obs_columns["reference_distance"]
    )
    assert back.obs["out_of_reference"].dtype == bool
    stored = back.uns["cellfoundry"]["out_of_reference"]
    assert float(stored["share"]) == pytest.approx(summ["share"])


def test_distance_survives_save_and_load_without_pickle(pbmc_split, pbmc_models) -> None:
    _, query = pbmc_split
    folder = pbmc_models["logreg"]
    files = {p.name for p in folder.iterdir()}
    assert not any(n.endswith((".pkl", ".pickle", ".joblib")) for n in files)
    stored = load_file(str(folder / "weights.safetensors"))
    assert {"reference_distance.embedding", "reference_distance.residual"} <= set(stored)
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 5_000_000  # a subsample of PCA coordinates, not the reference matrix
    manifest = cf.load_model(folder).manifest
    info = manifest.extra["reference_distance"]
    assert info["n_reference_cells"] <= 2000 and info["n_heldout_cells"] > 0
    a = cf.annotate(query, folder).obs_columns["reference_distance"]
    b = cf.annotate(query, folder).obs_columns["reference_distance"]
    np.testing.assert_array_equal(a, b)
