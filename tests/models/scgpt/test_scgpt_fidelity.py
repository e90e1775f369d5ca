"""Our scGPT embeddings against the official scgpt 0.2.4 code on the same published-format checkpoint."""

from __future__ import annotations

from typing import Any

import anndata as ad
import numpy as np
import pytest
import torch
from scgpt_reference import load_pretrained_like_official, reference_embed

from cellfoundry.models.scgpt import ScGPTModel

TOL = 1e-5


def _official_inputs(adata: ad.AnnData, vocab: dict[str, int]) -> tuple[Any, np.ndarray]:
    """embed_data: var symbols -> vocab ids, out-of-vocab columns dropped, adata.X used as is."""
    ids = np.array([vocab.get(s, -1) for s in adata.var["gene_symbols"].astype(str)])
    keep = ids >= 0
    return adata.X[:, keep], ids[keep]


@pytest.fixture(scope="module")
def official_embeddings(
    ref: Any, reference_checkpoint: dict[str, Any], pbmc_cells: ad.AnnData
) -> np.ndarray:
    """scgpt's embedding path (Dataset, DataCollator, TransformerModel._encode, L2) on real cells."""
    ck = reference_checkpoint
    counts, gene_ids = _official_inputs(pbmc_cells, ck["vocab"])
    return reference_embed(ref, ck["model"], counts, gene_ids, ck["vocab"], seed=11, batch_size=16)


@pytest.mark.parametrize("layout", ["Wqkv", "in_proj", "_impl.Wqkv"])
def test_embeddings_match_official_model(
    layout: str,
    reference_checkpoint: dict[str, Any],
    official_embeddings: np.ndarray,
    pbmc_cells: ad.AnnData,
) -> None:
    ck = reference_checkpoint
    folder = ck["folders"][layout]
    ours = ScGPTModel.load(folder)
    assert ours.load_report.ok and ours.load_report.messages[0] == f"attention key layout: {layout}"
    # the official loader reads this same file to the same weights (non-strict by design: it
    # drops flag_encoder only), so one reference run serves all three layouts
    official = ck["model"]
    before = {k: v.clone() for k, v in official.state_dict().items()}
    dropped = load_pretrained_like_official(
        official, torch.load(folder / "best_model.pt", weights_only=True)
    )
    assert dropped == ["flag_encoder.weight"]
    assert all(torch.equal(v, official.state_dict()[k]) for k, v in before.items())

    got = ours.embed(pbmc_cells, batch_size=7, seed=11)
    assert got.shape == (pbmc_cells.n_obs, 32) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    diff = float(np.abs(got - official_embeddings).max())
    assert diff <= TOL, f"max abs diff {diff:.2e} > {TOL}"
    # the embedding is a real function of the cell, not a constant
    assert np.abs(got[0] - got[1]).max() > 1e-2


def test_same_batch_through_both_networks(
    ref: Any, reference_checkpoint: dict[str, Any], pbmc_cells: ad.AnnData
) -> None:
    """Network-only check (PyTorch's default nested-tensor fast path on the official side) with
    padding and a subsampled 1,200-token cell in one batch."""
    ck = reference_checkpoint
    ours = ScGPTModel.load(ck["folders"]["Wqkv"])
    nnz = np.diff(pbmc_cells.X.indptr)
    pick = [int(np.argmax(nnz)), *np.argsort(nnz)[:3].tolist()]
    batch = ours.collate(ours.tokenize(pbmc_cells[pick], seed=5))
    assert batch["gene_ids"].shape[1] == 1200
    assert batch["padding_mask"].any()
    official = ck["model"]
    load_pretrained_like_official(official, ck["state"])
    official.eval()
    with torch.no_grad():
        full = official._encode(
            batch["gene_ids"], batch["values"], src_key_padding_mask=batch["padding_mask"]
        )
        want = torch.nn.functional.normalize(full[:, 0], dim=1)
        got = ours.forward_embeddings(batch)
        per_token = ours.network.encode(batch["gene_ids"], batch["values"], batch["padding_mask"])
    assert float((got - want).abs().max()) <= TOL
    keep = ~batch["padding_mask"]
    assert float((per_token - full)[keep].abs().max()) <= 1e-4  # every real token, not only <cls>
