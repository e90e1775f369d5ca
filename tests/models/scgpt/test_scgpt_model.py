"""ScGPTModel behaviour: streaming, order, batch independence, determinism, gradients, LoRA."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from cellfoundry.errors import ModelError
from cellfoundry.models.foundation import FoundationModel
from cellfoundry.models.scgpt import ScGPTModel

GENES = [f"GENE{i}" for i in range(300)]


def _counts(n_cells: int = 40, seed: int = 0) -> ad.AnnData:
    """Poisson counts over 250 of the model's genes plus 20 unknown ones, in shuffled column order."""
    rng = np.random.default_rng(seed)
    names = list(rng.permutation([*GENES[:250], *(f"OTHER{i}" for i in range(20))]))
    rates = rng.gamma(0.5, 1.0, len(names)) * rng.uniform(0.3, 3.0, (n_cells, 1))
    x = rng.poisson(rates * 4).astype(np.float32)
    return ad.AnnData(
        sp.csr_matrix(x),
        obs=pd.DataFrame(index=[f"c{i}" for i in range(n_cells)]),
        var=pd.DataFrame(index=names),
    )


@pytest.fixture(scope="module")
def model() -> ScGPTModel:
    return ScGPTModel.from_random(GENES, seed=0)


def test_protocol_attributes(model: ScGPTModel) -> None:
    assert isinstance(model, FoundationModel)
    assert (model.family, model.embedding_key, model.gene_key_kind) == (
        "scgpt",
        "X_scgpt",
        "symbol",
    )
    assert model.genes == GENES and model.embedding_dim == 32 and model.variant == "random-tiny"
    assert model.load_report.ok and "random weights" in model.load_report.messages[0]
    big = ScGPTModel.from_random(GENES, variant="whole-human")
    assert big.embedding_dim == 512 and len(big.network.transformer_encoder.layers) == 12
    with pytest.raises(ModelError, match="unknown scGPT variant"):
        ScGPTModel.from_random(GENES, variant="huge")


def test_same_seed_same_model_and_embeddings(model: ScGPTModel) -> None:
    again = ScGPTModel.from_random(GENES, seed=0)
    other = ScGPTModel.from_random(GENES, seed=1)
    sd, sd2 = model.network.state_dict(), again.network.state_dict()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert not torch.equal(
        sd["value_encoder.linear2.weight"],
        other.network.state_dict()["value_encoder.linear2.weight"],
    )
    a = _counts()
    e1, e2 = model.embed(a, seed=3), model.embed(a, seed=3)
    assert np.array_equal(e1, e2)
    assert not np.array_equal(e1, model.embed(a, seed=4))  # binning ties are seeded


def test_alone_batch_chunk_order_and_backed_agree(model: ScGPTModel, tmp_path: Path) -> None:
    a = _counts(40)
    ref = model.embed(a, batch_size=8, seed=0)
    assert ref.shape == (40, 32) and np.isfinite(ref).all()
    np.testing.assert_allclose(np.linalg.norm(ref, axis=1), 1.0, atol=1e-6)
    for i in (0, 39):  # a cell alone == the same cell inside a padded batch
        alone = model.embed(a[[i]].copy(), seed=0)
        np.testing.assert_allclose(alone[0], ref[i], atol=1e-5)
    np.testing.assert_allclose(model.embed(a, batch_size=40, chunk_size=7, seed=0), ref, atol=1e-5)
    perm = np.random.default_rng(1).permutation(40)  # input order is restored
    np.testing.assert_allclose(
        model.embed(a[perm].copy(), batch_size=5, seed=0), ref[perm], atol=1e-5
    )
    a.write_h5ad(tmp_path / "cells.h5ad")
    backed = ad.read_h5ad(tmp_path / "cells.h5ad", backed="r")
    try:
        np.testing.assert_allclose(model.embed(backed, chunk_size=16, seed=0), ref, atol=1e-5)
    finally:
        backed.file.close()


def test_streaming_reads_chunks(model: ScGPTModel, monkeypatch: pytest.MonkeyPatch) -> None:
    import cellfoundry.models.scgpt.model as mod

    seen: list[int] = []
    real = mod.iter_features

    def spy(adata, plan, chunk_size):  # type: ignore[no-untyped-def]
        for start, feats in real(adata, plan, chunk_size):
            seen.append(feats.shape[0])
            yield start, feats

    monkeypatch.setattr(mod, "iter_features", spy)
    out = model.embed(_counts(50), chunk_size=16)
    assert seen == [16, 16, 16, 2] and out.shape == (50, 32)


def test_cls_output_only_path_equals_full_encode(model: ScGPTModel) -> None:
    batch = model.collate(model.tokenize(_counts(6), seed=0))
    with torch.no_grad():
        full = model.network.encode(batch["gene_ids"], batch["values"], batch["padding_mask"])[:, 0]
        fast = model.network.cell_embedding(
            batch["gene_ids"], batch["values"], batch["padding_mask"]
        )
    torch.testing.assert_close(fast, full, atol=1e-6, rtol=1e-5)


def test_gradient_flows_through_forward_embeddings() -> None:
    m = ScGPTModel.from_random(GENES, seed=2)
    m.network.train()
    batch = m.collate(m.tokenize(_counts(4), seed=0))
    emb = m.forward_embeddings(batch)
    assert emb.shape == (4, 32) and emb.requires_grad
    emb[:, 0].sum().backward()
    net = m.network
    for name in (
        "encoder.embedding.weight",
        "value_encoder.linear1.weight",
        "transformer_encoder.layers.0.self_attn.Wqkv.weight",
        "transformer_encoder.layers.1.linear2.weight",
        "transformer_encoder.layers.1.self_attn.out_proj.weight",
    ):
        g = net.get_parameter(name).grad
        assert g is not None and float(g.abs().sum()) > 0, name
    assert (
        net.get_parameter("decoder.fc.0.weight").grad is None
    )  # heads are not on the embedding path


def test_lora_wraps_attention_and_feed_forward_and_changes_output() -> None:
    peft = pytest.importorskip("peft")
    m = ScGPTModel.from_random(GENES, seed=5)
    batch = m.collate(m.tokenize(_counts(3), seed=0))
    with torch.no_grad():
        before = m.forward_embeddings(batch)
    cfg = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=m.default_lora_targets, lora_dropout=0.0
    )
    wrapped = peft.inject_adapter_in_model(cfg, m.network)
    lora = sorted(
        {n.rsplit(".lora_", 1)[0] for n, _ in wrapped.named_parameters() if ".lora_" in n}
    )
    want = sorted(
        f"transformer_encoder.layers.{i}.{s}"
        for i in range(2)
        for s in ("self_attn.Wqkv", "self_attn.out_proj", "linear1", "linear2")
    )
    assert lora == want  # value_encoder.linear1/2 are not targets
    with torch.no_grad():
        torch.testing.assert_close(
            m.forward_embeddings(batch), before, atol=1e-6, rtol=1e-5
        )  # B = 0
        # a non-zero adapter on out_proj alone must change the output (not silently bypassed)
        lora_b = wrapped.get_submodule("transformer_encoder.layers.1.self_attn.out_proj").lora_B[
            "default"
        ]
        lora_b.weight.copy_(
            torch.randn(lora_b.weight.shape, generator=torch.Generator().manual_seed(0))
        )
        after = m.forward_embeddings(batch)
    assert float((after - before).abs().max()) > 1e-3
    m.network.train()
    target = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    (m.forward_embeddings(batch) * target).sum().backward()
    g = wrapped.get_submodule("transformer_encoder.layers.0.linear1").lora_B["default"].weight.grad
    assert g is not None and float(g.abs().sum()) > 0


def test_empty_cell_and_bad_sizes(model: ScGPTModel) -> None:
    a = _counts(3)
    a.X = sp.csr_matrix(a.X.toarray() * np.array([[1], [0], [1]], dtype=np.float32))
    cells = model.tokenize(a)
    assert len(cells[1]["gene_ids"]) == 1  # only <cls>
    assert np.isfinite(model.embed(a)).all()
    with pytest.raises(ModelError, match="batch_size"):
        model.embed(a, batch_size=0)


def test_token_budget_batches_equal_fixed_batches_in_input_order(
    model: ScGPTModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _counts(40, seed=5)
    lengths = np.array([len(c["gene_ids"]) for c in model.tokenize(a, seed=0)])
    assert lengths.max() > 1.5 * lengths.min()  # a real spread of lengths to sort and budget
    fixed = model.embed(a, batch_size=8, max_tokens=10**9, seed=0)

    shapes: list[tuple[int, int]] = []
    real = ScGPTModel.forward_embeddings

    def spy(self, batch, **kw):  # type: ignore[no-untyped-def]
        shapes.append(tuple(batch["gene_ids"].shape))
        return real(self, batch, **kw)

    monkeypatch.setattr(ScGPTModel, "forward_embeddings", spy)
    budget = int(lengths.max()) * 3
    perm = np.random.default_rng(2).permutation(40)
    got = model.embed(a[perm].copy(), batch_size=40, max_tokens=budget, chunk_size=25, seed=0)
    # every batch within the budget, sizes vary with the lengths, every cell embedded once
    assert all(b * w <= budget for b, w in shapes)
    assert len({b for b, _ in shapes}) > 1 and sum(b for b, _ in shapes) == 40
    np.testing.assert_allclose(got, fixed[perm], atol=1e-6, rtol=0)
    shapes.clear()
    one = model.embed(a, batch_size=40, max_tokens=1, seed=0)  # a budget below any cell
    assert shapes == [(1, int(n)) for n in sorted(lengths, reverse=True)]  # alone, longest first
    np.testing.assert_allclose(one, fixed, atol=1e-6, rtol=0)
    with pytest.raises(ModelError, match="max_tokens"):
        model.embed(a, max_tokens=0)


def test_padded_path_equals_packed_path(model: ScGPTModel) -> None:
    """The unpacked path (the default on a GPU: one masked SDPA call per layer) gives the packed
    path's embeddings on the same padded batch."""
    batch = model.collate(model.tokenize(_counts(9, seed=3), seed=0))
    assert batch["padding_mask"].any()
    args = (batch["gene_ids"], batch["values"], batch["padding_mask"])
    with torch.inference_mode():
        packed = model.network.cell_embedding(*args, packed=True)
        padded = model.network.cell_embedding(*args, packed=False)
        auto = model.network.cell_embedding(*args)  # CPU tensors: packed
    torch.testing.assert_close(padded, packed, atol=1e-6, rtol=0)
    assert torch.equal(auto, packed)


@pytest.mark.parametrize("pre_norm", [False, True])
def test_onednn_packed_layers_equal_the_module_layers(pre_norm: bool) -> None:
    """Inference in embed() runs the layers on oneDNN-packed weights (bias, ReLU and residual
    adds inside the GEMMs); same embeddings as the nn.Module layers, padded or not."""
    from cellfoundry.models.onednn import can_pack
    from cellfoundry.models.scgpt.config import ScGPTConfig
    from cellfoundry.models.scgpt.network import ScGPTNetwork

    cfg = ScGPTConfig(embsize=64, nheads=4, d_hid=96, nlayers=3, pre_norm=pre_norm)
    torch.manual_seed(3)
    net = ScGPTNetwork(cfg, 300, 0).eval()
    for p in net.parameters():  # non-trivial norms and biases, not the init's ones and zeros
        p.data.add_(0.1 * torch.randn_like(p))
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([17, 11, 4, 1])
    pad = torch.arange(17)[None, :] >= lengths[:, None]
    ids = torch.randint(3, 300, (4, 17), generator=g).masked_fill(pad, 0)
    values = torch.randint(0, 51, (4, 17), generator=g).float().masked_fill(pad, -2.0)
    with torch.inference_mode():
        layers = net.packed_layers(64)
        if not can_pack(net.transformer_encoder.layers[0].linear1.weight):
            assert layers is None
            pytest.skip("no oneDNN float32 linear on this build")
        assert layers is not None and len(layers) == 3
        fast = net.cell_embedding(ids, values, pad, layers=layers)
        plain = net.cell_embedding(ids, values, pad, packed=False)
        torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0)
        # a batch without padding
        one = net.cell_embedding(ids[:1], values[:1], pad[:1], layers=layers)
        torch.testing.assert_close(one, net.encode(ids[:1], values[:1])[:, 0], atol=1e-5, rtol=0)


def test_packed_layers_only_for_plain_inference(model: ScGPTModel) -> None:
    """Training, gradients or a wrapped projection (LoRA) keep the nn.Module path."""
    net = model.network
    with torch.enable_grad():
        assert net.packed_layers(64) is None
    with torch.inference_mode():
        net.train()
        try:
            assert net.packed_layers(64) is None
        finally:
            net.eval()
        layer = net.transformer_encoder.layers[1]
        plain = layer.linear2
        layer.linear2 = torch.nn.Sequential(plain)  # e.g. a LoRA wrapper
        try:
            assert net.packed_layers(64) is None
        finally:
            layer.linear2 = plain
