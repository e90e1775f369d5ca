"""Fixtures: tiny random-weight Geneformer checkpoints in the published layouts (see gf_testlib)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import pytest
from gf_testlib import build_checkpoint, counts_adata


@pytest.fixture
def v1_folder(tmp_path: Path) -> Path:
    return build_checkpoint(tmp_path / "gf-v1", "V1", bin_file=True)


@pytest.fixture
def v2_repo(tmp_path: Path) -> Path:
    """A V2 repository-like layout: model in a subfolder, dictionaries in ../geneformer/."""
    root = tmp_path / "Geneformer"
    build_checkpoint(
        root / "Geneformer-V2-tiny",
        "V2",
        seed=3,
        dict_folder=root / "geneformer",
        dict_suffix="_gc104M",
    )
    return root


@pytest.fixture
def adata() -> ad.AnnData:
    return counts_adata()
