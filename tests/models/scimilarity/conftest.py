"""Fixtures of the SCimilarity tests (helpers live in ``scim_helpers``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from scim_helpers import synthetic_genes, write_official_checkpoint


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    """hidden [16, 12, 10], latent 8 over 64 synthetic genes."""
    return write_official_checkpoint(
        tmp_path / "tiny", synthetic_genes(64), [16, 12, 10], 8, seed=3
    )
