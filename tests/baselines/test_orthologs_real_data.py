"""PBMC 3k turned into mouse data (1:1 orthologs, mouse symbols or mouse Ensembl IDs): a model
trained on the human cells labels the mouse version like the human one, in both directions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from sklearn.model_selection import train_test_split

import cellfoundry as cf
from cellfoundry.errors import CoverageError
from tests.species_data import mouseify


def agreement_and_baselines(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Share of cells with the same label, the majority-label share, and chance agreement."""
    agree = float((a == b).mean())
    labels, n_a = np.unique(a, return_counts=True)
    p_a = dict(zip(labels, n_a / len(a), strict=True))
    labels_b, n_b = np.unique(b, return_counts=True)
    chance = float(sum(p_a.get(k, 0.0) * n / len(b) for k, n in zip(labels_b, n_b, strict=True)))
    return agree, float(max(p_a.values())), chance


@pytest.fixture(scope="module")
def split(pbmc3k: ad.AnnData) -> tuple[np.ndarray, np.ndarray]:
    y = pbmc3k.obs["cell_type"].astype(str)
    return train_test_split(np.arange(pbmc3k.n_obs), test_size=0.25, stratify=y, random_state=0)


@pytest.fixture(scope="module")
def human_model(pbmc3k: ad.AnnData, split, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("species") / "human_logreg"
    cf.train(pbmc3k[split[0]].copy(), "cell_type", "logreg", out=out)
    return out


@pytest.fixture(scope="module")
def human_labels(pbmc3k: ad.AnnData, split, human_model: Path) -> np.ndarray:
    return cf.annotate(pbmc3k[split[1]].copy(), human_model).labels


@pytest.mark.parametrize("ensembl_ids", [False, True], ids=["mouse_symbols", "mouse_ensembl_ids"])
def test_mouse_version_is_labelled_like_the_human_cells(
    pbmc3k: ad.AnnData, shared_dir: Path, split, human_model: Path, human_labels, ensembl_ids: bool
) -> None:
    mouse = mouseify(
        pbmc3k[split[1]].copy(), shared_dir, symbol_column="gene_symbols", ensembl_ids=ensembl_ids
    )
    if ensembl_ids:
        assert all(g.startswith("ENSMUSG") for g in mouse.var_names)
    else:  # written as mouse symbols are: Cd3e, not CD3E
        assert (
            sum(g[:1].isupper() and g[1:2].islower() for g in mouse.var_names) > 0.8 * mouse.n_vars
        )
    res = cf.annotate(mouse, human_model)
    assert res.species == "mouse" and res.orthology is not None
    o = res.orthology
    assert o.species_source == "detected"
    assert ("mouse gene table" in o.gene_route) == ensembl_ids
    # only 1:1 orthologs are left, so every gene and every count maps
    assert o.n_genes_mapped == mouse.n_vars and o.fraction_counts_mapped == pytest.approx(1.0)
    assert res.coverage is not None and 0.5 < res.coverage.fraction_present < 1.0
    assert res.gene_mapping and "human orthologs" in res.gene_mapping
    agree, majority, chance = agreement_and_baselines(human_labels, res.labels)
    assert agree >= 0.85, (agree, majority, chance)
    assert agree >= majority + 0.3 and agree >= chance + 0.4
    s = res.summary()
    assert s["species"] == "mouse" and s["orthology"]["n_genes"] == mouse.n_vars


def test_a_mapping_that_keeps_too_few_model_genes_is_refused(
    pbmc3k: ad.AnnData, shared_dir: Path, split, human_model: Path
) -> None:
    mouse = mouseify(pbmc3k[split[1]].copy(), shared_dir, symbol_column="gene_symbols")
    rng = np.random.default_rng(0)
    few = mouse[:, np.sort(rng.choice(mouse.n_vars, 300, replace=False))].copy()
    with pytest.raises(CoverageError) as err:
        cf.annotate(few, human_model)
    assert "after mapping to human orthologs" in err.value.message
    assert "300 of 300 genes" in err.value.message


def test_mouse_reference_annotates_human_cells(
    pbmc3k: ad.AnnData, shared_dir: Path, split, human_labels, tmp_path: Path
) -> None:
    ref = mouseify(pbmc3k[split[0]].copy(), shared_dir, symbol_column="gene_symbols")
    ref.write_h5ad(tmp_path / "mouse_ref.h5ad")
    model = cf.train(tmp_path / "mouse_ref.h5ad", "cell_type", "logreg", out=tmp_path / "m")
    assert len(model.genes) > 1000  # type: ignore[attr-defined]
    assert model.manifest.training["species"] == "mouse"
    assert "human orthologs" in model.manifest.training["species_mapping"]
    query = pbmc3k[split[1]].copy()
    res = cf.annotate(query, tmp_path / "m")
    assert res.species == "human" and res.orthology is None
    agree, majority, _ = agreement_and_baselines(human_labels, res.labels)
    assert agree >= 0.85 and agree >= majority + 0.3, agree
    # half the genes: the baseline is refit on the recorded mouse reference, mapped as in training
    rng = np.random.default_rng(1)
    half = query[:, np.sort(rng.choice(query.n_vars, query.n_vars // 2, replace=False))].copy()
    refit = cf.annotate(half, tmp_path / "m")
    assert refit.gene_panel is not None and refit.gene_panel.mode == "refit", refit.gene_panel
    agree_refit, _, _ = agreement_and_baselines(human_labels, refit.labels)
    assert agree_refit >= 0.8 and agree_refit >= majority + 0.3, agree_refit


def test_cli_reports_species_and_takes_species_override(
    pbmc3k: ad.AnnData, shared_dir: Path, split, human_model: Path, tmp_path: Path
) -> None:
    mouse = mouseify(pbmc3k[split[1]].copy(), shared_dir, symbol_column="gene_symbols")
    path = tmp_path / "mouse.h5ad"
    mouse.write_h5ad(path)
    cli = [sys.executable, "-m", "cellfoundry.cli"]
    out = subprocess.run([*cli, "inspect", str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "species: mouse (detected" in out.stdout and "orthologs:" in out.stdout
    bad = subprocess.run(
        [*cli, "inspect", str(path), "--species", "macaque"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "unknown species" in bad.stderr and "rhesus" in bad.stderr
    args = ["annotate", str(path), "--model", str(human_model), "--species", "mouse"]
    run = subprocess.run(
        [*cli, *args, "--csv", str(tmp_path / "out.csv")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["species"] == "mouse" and summary["orthology"]["species_source"] == "given"
