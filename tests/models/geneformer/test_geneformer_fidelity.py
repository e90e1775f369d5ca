"""Embeddings agree with the official pipeline (transformers BertForMaskedLM + official pooling)."""

from __future__ import annotations

import pickle
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch
from gf_testlib import ENSEMBL, build_checkpoint, counts_adata, reference_embed, reference_tokenize

from cellfoundry.models.geneformer import GeneformerModel

TOL = 1e-5


def _reference(
    folder: Path, dict_folder: Path, adata: ad.AnnData, version: str, **kw
) -> np.ndarray:
    suffix = "_gc104M" if (dict_folder / "token_dictionary_gc104M.pkl").exists() else ""
    with (dict_folder / f"token_dictionary{suffix}.pkl").open("rb") as fh:
        tok = pickle.load(fh)  # our own test file
    with (dict_folder / f"gene_median_dictionary{suffix}.pkl").open("rb") as fh:
        med = pickle.load(fh)
    size = 512
    seqs = reference_tokenize(adata.X, list(adata.var_names), tok, med, size, version == "V2")
    return reference_embed(folder, seqs, tok, **kw)


def test_v1_embeddings_match_official_mean_pooling(v1_folder: Path, adata: ad.AnnData) -> None:
    model = GeneformerModel.load(v1_folder)
    assert model.emb_mode == "cell" and model.embedding_dim == 32
    ours = model.embed(adata, batch_size=4)
    ref = _reference(v1_folder, v1_folder, adata, "V1")
    assert ours.shape == (adata.n_obs, 32) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() <= TOL
    assert np.abs(ref).max() > 0.1  # not a trivially small comparison


def test_v2_embeddings_match_official_cls_pooling(v2_repo: Path, adata: ad.AnnData) -> None:
    folder = v2_repo / "Geneformer-V2-tiny"
    model = GeneformerModel.load(folder)
    assert model.emb_mode == "cls"
    ours = model.embed(adata, batch_size=3, max_tokens=200)
    ref = _reference(folder, v2_repo / "geneformer", adata, "V2")
    assert np.abs(ours - ref).max() <= TOL


@pytest.mark.parametrize(("emb_layer", "emb_mode"), [(0, None), (-2, "cell")])
def test_v2_other_layers_and_cell_mode_match(
    v2_repo: Path, adata: ad.AnnData, emb_layer: int, emb_mode: str | None
) -> None:
    folder = v2_repo / "Geneformer-V2-tiny"
    model = GeneformerModel.load(folder, emb_layer=emb_layer, emb_mode=emb_mode)
    ours = model.embed(adata)
    ref = _reference(
        folder, v2_repo / "geneformer", adata, "V2", emb_layer=emb_layer, emb_mode=emb_mode
    )
    assert np.abs(ours - ref).max() <= TOL


def test_bin_only_checkpoint_gives_same_embeddings(tmp_path: Path, adata: ad.AnnData) -> None:
    a = GeneformerModel.load(build_checkpoint(tmp_path / "st", "V1", seed=5)).embed(adata)
    only_bin = build_checkpoint(tmp_path / "bin", "V1", seed=5, safetensors=False, bin_file=True)
    model = GeneformerModel.load(only_bin)
    assert "bert.embeddings.position_ids" in model.load_report.ignored_keys
    assert np.abs(model.embed(adata) - a).max() <= TOL


def test_cell_alone_equals_cell_in_batch(v1_folder: Path, v2_repo: Path, adata: ad.AnnData) -> None:
    for folder in (v1_folder, v2_repo / "Geneformer-V2-tiny"):
        model = GeneformerModel.load(folder)
        full = model.embed(adata, batch_size=16)
        for i in (0, 5, adata.n_obs - 1):
            alone = model.embed(adata[i : i + 1].copy(), batch_size=1)
            assert np.abs(alone[0] - full[i]).max() <= TOL


def test_batching_and_chunking_do_not_change_results(v1_folder: Path, adata: ad.AnnData) -> None:
    model = GeneformerModel.load(v1_folder)
    a = model.embed(adata, batch_size=64, max_tokens=100_000)
    b = model.embed(adata, batch_size=2, max_tokens=50, chunk_size=5)
    assert np.abs(a - b).max() <= TOL


def test_order_is_restored(v1_folder: Path, adata: ad.AnnData) -> None:
    model = GeneformerModel.load(v1_folder)
    perm = np.random.default_rng(1).permutation(adata.n_obs)
    a = model.embed(adata)
    b = model.embed(adata[perm].copy())
    assert np.abs(a[perm] - b).max() <= TOL


def test_gradient_flows_through_forward_embeddings(v2_repo: Path, adata: ad.AnnData) -> None:
    model = GeneformerModel.load(v2_repo / "Geneformer-V2-tiny")
    cells = model.tokenize(adata[:4].copy())
    batch = model.collate(cells)
    assert batch["input_ids"].shape[0] == 4
    model.network.train()
    emb = model.forward_embeddings(batch)
    assert emb.shape == (4, model.embedding_dim) and emb.requires_grad
    emb.pow(2).sum().backward()
    grad = model.network.bert.encoder.layer[0].attention.self.query.weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0
    model.network.eval()
    with torch.no_grad():
        again = model.forward_embeddings(batch).numpy()
    assert np.abs(again - model.embed(adata[:4].copy())).max() <= TOL


def test_tokenize_matches_embed_input(v1_folder: Path, adata: ad.AnnData) -> None:
    model = GeneformerModel.load(v1_folder)
    cells = model.tokenize(adata)
    assert len(cells) == adata.n_obs
    with torch.no_grad():
        emb = model.forward_embeddings(model.collate(cells)).numpy()
    assert np.abs(emb - model.embed(adata)).max() <= TOL


def test_from_random_builds_a_working_model(tmp_path: Path) -> None:
    data = counts_adata(n_cells=6)
    model = GeneformerModel.from_random(ENSEMBL, seed=2)
    assert model.genes == ENSEMBL and "random" in model.variant
    emb = model.embed(data)
    assert emb.shape == (6, model.embedding_dim) and np.isfinite(emb).all()
    again = GeneformerModel.from_random(ENSEMBL, seed=2).embed(data)
    assert np.abs(emb - again).max() == 0
    reloaded = GeneformerModel.load(model.save_pretrained(tmp_path / "rnd"))
    assert np.abs(reloaded.embed(data) - emb).max() <= TOL


def test_from_random_variant_has_published_shapes() -> None:
    model = GeneformerModel.from_random(ENSEMBL[:50], variant="Geneformer-V1-10M")
    bert = model.network.bert
    assert len(bert.encoder.layer) == 6 and model.embedding_dim == 256
    assert bert.embeddings.position_embeddings.weight.shape == (2048, 256)
    assert model.emb_mode == "cell"


def test_default_lora_targets_wrap_attention_and_feed_forward(v1_folder: Path) -> None:
    from peft import LoraConfig, get_peft_model

    model = GeneformerModel.load(v1_folder, verify=False)
    cfg = LoraConfig(r=2, lora_alpha=4, target_modules=model.default_lora_targets)
    peft_model = get_peft_model(model.network, cfg)
    wrapped = {n for n, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    per_layer = {n.split(".layer.")[1].split(".", 1)[1] for n in wrapped}
    assert per_layer == {
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    }
    assert len(wrapped) == 6 * 3  # every layer, nothing in the MLM head
    cells = model.tokenize(counts_adata(n_cells=3))
    batch = model.collate(cells)
    emb = model.forward_embeddings(batch)  # goes through the injected LoRA modules
    emb.sum().backward()
    grads = [p.grad for n, p in peft_model.named_parameters() if "lora_A" in n and "layer.0." in n]
    assert grads and all(g is not None for g in grads)


@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_fused_inference_layers_equal_the_bert_layers(act: str) -> None:
    """The inference path (one q/k/v GEMM, in-place activations) computes what BertLayer does."""
    from transformers.activations import ACT2FN

    from cellfoundry.models.geneformer.model import _fused_layer

    model = GeneformerModel.from_random([f"ENSG{i:011d}" for i in range(1, 80)], seed=1)
    for layer in model._bert.encoder.layer:  # same weights, the requested activation
        layer.intermediate.intermediate_act_fn = ACT2FN[act]
        assert _fused_layer(layer) is not None
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 80, (3, 9), generator=g)
    for lengths in ([9, 9, 9], [9, 6, 2]):
        mask = (torch.arange(9)[None, :] < torch.tensor(lengths)[:, None]).long()
        with torch.no_grad():
            fused = model._hidden(ids, mask)
        with torch.enable_grad():
            plain = model._hidden(ids, mask).detach()  # the transformers layers
        for i, n in enumerate(lengths):
            assert (fused[i, :n] - plain[i, :n]).abs().max() <= 1e-6


def test_wrapped_layers_take_the_transformers_path() -> None:
    from cellfoundry.models.geneformer.model import _fused_layer

    model = GeneformerModel.from_random([f"ENSG{i:011d}" for i in range(1, 20)], seed=1)
    layer = model._bert.encoder.layer[0]
    assert _fused_layer(layer) is not None
    layer.attention.self.query = torch.nn.Sequential(layer.attention.self.query)  # e.g. LoRA
    assert _fused_layer(layer) is None


def test_onednn_packed_layers_equal_the_bert_layers() -> None:
    """Inference in embed() packs the float32 CPU GEMM weights for oneDNN; same values."""
    from cellfoundry.models.onednn import can_pack

    model = GeneformerModel.from_random([f"ENSG{i:011d}" for i in range(1, 80)], seed=2)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 80, (3, 9), generator=g)
    lengths = [9, 6, 2]
    mask = (torch.arange(9)[None, :] < torch.tensor(lengths)[:, None]).long()
    with torch.inference_mode():
        fused = model._fused_layers(pack_rows=64)
        assert fused is not None
        assert all(f.packed for f in fused) == can_pack(
            model._bert.embeddings.word_embeddings.weight
        )
        packed = model._hidden(ids, mask, fused)
    with torch.enable_grad():
        plain = model._hidden(ids, mask).detach()  # the transformers layers
    for i, n in enumerate(lengths):
        assert (packed[i, :n] - plain[i, :n]).abs().max() <= 1e-5
