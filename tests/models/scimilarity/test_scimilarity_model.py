"""SCimilarityModel behind the FoundationModel protocol: embed, fine-tuning hooks, random, save."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from scim_helpers import synthetic_genes

from cellfoundry.errors import ModelError
from cellfoundry.models.foundation import FoundationModel
from cellfoundry.models.scimilarity import SCimilarityModel


def _query(genes: list[str], n: int = 90, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(rng.gamma(0.6, 2.0, (n, len(genes)))).astype(np.float32)
    counts[3] = 0  # an empty cell stays a valid (all-zero) input
    names = list(reversed(genes))  # another column order than the model's
    return ad.AnnData(
        X=sp.csr_matrix(counts[:, ::-1]),
        var=pd.DataFrame(index=names),
        obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]),
    )


def test_protocol_attributes(tiny_folder: Path) -> None:
    m = SCimilarityModel.load(tiny_folder)
    assert isinstance(m, FoundationModel)
    assert (m.family, m.embedding_key, m.gene_key_kind) == (
        "scimilarity",
        "X_scimilarity",
        "symbol",
    )
    assert m.checkpoint_dir == tiny_folder and m.embedding_dim == 8
    assert m.default_lora_targets == ["network.0.1", "network.1.1", "network.2.1", "network.3"]
    modules = dict(m.network.named_modules())
    assert all(isinstance(modules[t], torch.nn.Linear) for t in m.default_lora_targets)


def test_embed_equals_tokenize_collate_forward(tiny_folder: Path) -> None:
    m = SCimilarityModel.load(tiny_folder)
    q = _query(m.genes)
    emb = m.embed(q, batch_size=16)
    assert emb.shape == (90, 8) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb[[0, 1, 2, 4]], axis=1), 1.0, atol=1e-5)
    cells = m.tokenize(q)
    assert len(cells) == 90
    batch = m.collate(cells[:16])
    assert batch["x"].shape == (16, 64) and batch["x"].dtype == torch.float32
    with torch.no_grad():
        direct = m.forward_embeddings(batch).numpy()
    assert np.abs(direct - emb[:16]).max() <= 1e-6
    # cell order and batch size do not change a cell's embedding
    assert np.abs(m.embed(q[::-1].copy(), batch_size=1)[::-1] - emb).max() <= 1e-6
    assert np.array_equal(m.embed(q, batch_size=16), emb)  # deterministic
    with pytest.raises(ModelError, match="batch_size"):
        m.embed(q, batch_size=0)


def test_decoder_reconstruction_hook(tiny_folder: Path) -> None:
    m = SCimilarityModel.load(tiny_folder)
    batch = m.collate(m.tokenize(_query(m.genes, 10)))
    assert m.reconstruct(batch).shape == (10, 64)
    assert m.decoder is not None and m.decoder(m.forward_embeddings(batch)).shape == (10, 64)


def test_from_random_save_and_reload(tmp_path: Path) -> None:
    genes = synthetic_genes(40)
    a = SCimilarityModel.from_random(genes, seed=7)
    b = SCimilarityModel.from_random(genes, seed=7)
    assert a.variant == "random-tiny" and a.embedding_dim == 16 and a.network.hidden == [32, 32, 32]
    assert any("RANDOM" in msg for msg in a.load_report.messages)
    for (k, v), w in zip(
        a.network.state_dict().items(), b.network.state_dict().values(), strict=True
    ):
        assert torch.equal(v, w), k
    q = _query(genes, 30)
    folder = a.save(tmp_path / "saved")
    assert (folder / "gene_order.tsv").read_text() == "\n".join(genes)
    back = SCimilarityModel.load(folder)
    assert back.load_report.ok and back.decoder is not None
    assert np.abs(back.embed(q) - a.embed(q)).max() <= 1e-6
    big = SCimilarityModel.from_random(genes, variant="model_v1.1")
    assert big.embedding_dim == 128 and big.network.hidden == [1024, 1024, 1024]
    with pytest.raises(ModelError, match="unknown SCimilarity variant"):
        SCimilarityModel.from_random(genes, variant="v9")


def test_set_reference_and_annotate(tiny_folder: Path) -> None:
    m = SCimilarityModel.load(tiny_folder)
    with pytest.raises(ModelError, match="no labelled reference"):
        m.annotate(_query(m.genes, 5))
    ref = _query(m.genes, 60, seed=1)
    ref.obs["cell_type"] = [f"t{i % 3}" for i in range(60)]
    m.set_reference(ref, "cell_type")
    res = m.annotate(ref, k=1)
    assert (res.stats["min_dist"] <= 1e-5).all()  # each cell finds itself (or an identical twin)
    emb = m.reference.embeddings if m.reference is not None else None
    assert emb is not None
    for i, (j, label) in enumerate(zip(res.nn_idxs[:, 0], res.predictions, strict=True)):
        assert label == ref.obs["cell_type"].iloc[j] and np.abs(emb[i] - emb[j]).max() <= 1e-3
    res5 = m.annotate(_query(m.genes, 12, seed=2), k=5)
    assert len(res5.predictions) == 12 and res5.nn_idxs.shape == (12, 5)
    with pytest.raises(ModelError, match="no column 'nope'"):
        m.set_reference(ref, "nope")
