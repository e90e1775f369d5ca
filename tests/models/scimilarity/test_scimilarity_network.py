"""SCimilarity network: the published key layout, and embeddings equal to the official Encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scim_helpers import lognorm_rows, official, synthetic_genes, write_official_checkpoint

from cellfoundry.models.scimilarity import Decoder, Encoder, SCimilarityModel
from cellfoundry.models.scimilarity.network import decoder_shapes, encoder_shapes


@pytest.mark.parametrize(
    ("n_genes", "hidden", "latent"), [(50, [16, 12, 10], 8), (28231, [1024, 1024, 1024], 128)]
)
def test_state_dict_layout_equals_official(n_genes: int, hidden: list[int], latent: int) -> None:
    nn_models = official("nn_models")
    with torch.device("meta"):
        theirs_enc = nn_models.Encoder(n_genes, latent_dim=latent, hidden_dim=hidden)
        theirs_dec = nn_models.Decoder(
            n_genes, latent_dim=latent, hidden_dim=list(reversed(hidden))
        )
    ours_enc = encoder_shapes(n_genes, hidden, latent)
    ours_dec = decoder_shapes(n_genes, hidden, latent)
    assert list(ours_enc) == list(theirs_enc.state_dict())  # same keys, same order
    assert ours_enc == {k: tuple(v.shape) for k, v in theirs_enc.state_dict().items()}
    assert ours_dec == {k: tuple(v.shape) for k, v in theirs_dec.state_dict().items()}


def test_published_v11_shapes() -> None:
    s = encoder_shapes(28231, [1024, 1024, 1024], 128)
    assert s["network.0.1.weight"] == (1024, 28231)
    assert s["network.1.1.weight"] == s["network.2.1.weight"] == (1024, 1024)
    assert s["network.0.2.running_var"] == (1024,) and s["network.0.2.num_batches_tracked"] == ()
    assert s["network.2.3.weight"] == (1,)  # PReLU: one shared slope
    assert s["network.3.weight"] == (128, 1024) and s["network.3.bias"] == (128,)
    assert len(s) == 3 * 8 + 2
    d = decoder_shapes(28231, [1024, 1024, 1024], 128)
    assert d["network.0.0.weight"] == (1024, 128) and d["network.3.weight"] == (28231, 1024)


def test_embeddings_match_official_encoder(tmp_path: Path) -> None:
    """Random weights in the published format: our load + forward == official Encoder, ≤ 1e-5."""
    genes = synthetic_genes(300)
    folder = write_official_checkpoint(tmp_path / "m", genes, [64, 48, 32], 16, seed=11)
    nn_models = official("nn_models")
    ref = nn_models.Encoder(len(genes), latent_dim=16, hidden_dim=[64, 48, 32])
    ref.load_state(str(folder / "encoder.ckpt"))
    ref.eval()
    x = lognorm_rows(np.random.default_rng(0), 257, len(genes))
    with torch.inference_mode():
        expected = ref(torch.from_numpy(x)).numpy()
    ours = SCimilarityModel.load(folder)
    with torch.inference_mode():
        got = ours.network(torch.from_numpy(x)).numpy()
    assert got.dtype == np.float32 and got.shape == (257, 16)
    assert np.abs(got - expected).max() <= 1e-5
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # the decoder is loaded too and reproduces the official Decoder
    dref = nn_models.Decoder(len(genes), latent_dim=16, hidden_dim=[32, 48, 64])
    dref.load_state(str(folder / "decoder.ckpt"))
    dref.eval()
    assert ours.decoder is not None
    with torch.inference_mode():
        z = torch.from_numpy(expected)
        assert torch.abs(ours.decoder(z) - dref(z)).max() <= 1e-5


def test_eval_mode_is_deterministic_and_cells_are_independent(tiny_folder: Path) -> None:
    m = SCimilarityModel.load(tiny_folder)
    x = torch.from_numpy(lognorm_rows(np.random.default_rng(1), 40, len(m.genes)))
    with torch.inference_mode():
        a = m.network(x)
        b = m.network(x)
        alone = torch.cat([m.network(x[i : i + 1]) for i in range(len(x))])
    assert torch.equal(a, b)
    assert torch.abs(alone - a).max() <= 1e-6


def test_train_mode_uses_dropout_and_gradients_flow(tiny_folder: Path) -> None:
    m = SCimilarityModel.load(tiny_folder)
    x = torch.from_numpy(lognorm_rows(np.random.default_rng(2), 16, len(m.genes)))
    m.network.train()
    torch.manual_seed(0)
    out = m.forward_embeddings({"x": x})
    out.sum().backward()
    assert m.network.network[0][1].weight.grad is not None
    torch.manual_seed(1)
    assert not torch.allclose(out, m.forward_embeddings({"x": x}))  # dropout is active
    m.network.eval()


def test_networks_build_from_sizes_alone() -> None:
    enc = Encoder(12, hidden=[8], latent=4, dropout=0.1, input_dropout=0.2)
    assert [k for k in enc.state_dict() if k.endswith("weight")] == [
        "network.0.1.weight",
        "network.0.2.weight",
        "network.0.3.weight",
        "network.1.weight",
    ]
    assert enc.network[0][0].p == 0.2
    dec = Decoder(12, hidden=[8, 6], latent=4)
    assert dec.hidden == [6, 8] and dec(torch.zeros(2, 4)).shape == (2, 12)
    with pytest.raises(ValueError, match="hidden"):
        Encoder(12, hidden=[], latent=4)


def test_sparse_first_layer_equals_dense_forward(tiny_folder: Path) -> None:
    import scipy.sparse as sp

    m = SCimilarityModel.load(tiny_folder)
    x = lognorm_rows(np.random.default_rng(4), 30, len(m.genes))
    x[5] = 0  # an empty cell
    csr = sp.csr_matrix(x)
    enc = m.network
    args = [
        torch.from_numpy(a.astype(dt))
        for a, dt in ((csr.indptr, np.int64), (csr.indices, np.int64), (csr.data, np.float32))
    ]
    with torch.inference_mode():
        dense = enc(torch.from_numpy(x))
        assert torch.abs(enc.forward_sparse(*args) - dense).max() <= 1e-6
    with torch.no_grad():  # an in-place weight update invalidates the cached transpose
        enc.network[0][1].weight.mul_(2.0)
        assert torch.abs(enc.forward_sparse(*args) - enc(torch.from_numpy(x))).max() <= 1e-6
    enc.train()
    assert not enc.supports_sparse()
    with pytest.raises(RuntimeError, match="eval mode"):
        enc.forward_sparse(*args)
    enc.eval()
