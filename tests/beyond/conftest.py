"""Baselines trained once on a stratified 75 % of the real PBMC 3k cells; the rest is the query."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from sklearn.model_selection import train_test_split

import cellfoundry as cf


@pytest.fixture(scope="session")
def pbmc_split(pbmc3k: ad.AnnData) -> tuple[ad.AnnData, ad.AnnData]:
    y = pbmc3k.obs["cell_type"].astype(str)
    tr, te = train_test_split(np.arange(pbmc3k.n_obs), test_size=0.25, stratify=y, random_state=0)
    return pbmc3k[tr].copy(), pbmc3k[te].copy()


@pytest.fixture(scope="session")
def pbmc_models(pbmc_split, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Artifact folders of logreg and kNN trained on the reference part of the split."""
    ref, _ = pbmc_split
    root = tmp_path_factory.mktemp("beyond_models")
    out = {}
    for family in ("logreg", "knn"):
        cf.train(ref, "cell_type", family, out=root / family)
        out[family] = root / family
    return out
