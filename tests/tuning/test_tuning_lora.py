"""LoRA guard: adapters train, the base does not move; target validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cellfoundry.errors import ModelError
from cellfoundry.tuning.heads import ClassifierHead
from cellfoundry.tuning.lora import apply_lora, count_parameters, match_targets
from cellfoundry.tuning.losses import cross_entropy, triplet_loss
from tests.tuning.helpers import TinyNet, labelled_blobs, real_gene_adata


def _lora_two_steps(
    network: nn.Module, embed, batch, y: torch.Tensor, targets: list[str], strict: bool = True
):
    """Attach LoRA, take optimisation steps, and check the guard conditions."""
    base_before = {n: p.detach().clone() for n, p in network.named_parameters()}
    buffers_before = {n: b.detach().clone() for n, b in network.named_buffers()}
    _peft_model, match = apply_lora(
        network, targets, r=4, alpha=8, strict=strict, probe=(embed, batch)
    )
    assert match.modules, "no module matched"
    lora = {n: p for n, p in network.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    assert not any(p.requires_grad for n, p in network.named_parameters() if "lora_" not in n)
    lora_init = {n: p.detach().clone() for n, p in lora.items()}
    network.eval()  # base kept in evaluation mode, as the training loop does for LoRA
    head = ClassifierHead(int(embed(batch).shape[1]), int(y.max()) + 1)
    opt = torch.optim.AdamW([*lora.values(), *head.parameters()], lr=1e-2, weight_decay=0.0)

    def step() -> None:
        opt.zero_grad()
        emb = embed(batch)
        loss = cross_entropy(head(emb), y) + triplet_loss(emb, y)
        loss.backward()

    step()
    # LoRA's B starts at zero, so at the very first backward only B receives a gradient
    b_grads = [p.grad for n, p in lora.items() if "lora_B" in n]
    assert all(g is not None and g.abs().sum() > 0 for g in b_grads)
    opt.step()
    step()
    for n, p in lora.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"LoRA parameter {n} has no gradient"
    opt.step()
    for n, p in lora.items():
        assert not torch.equal(p.detach(), lora_init[n]), f"LoRA parameter {n} did not change"
    after = {
        n.replace("base_model.model.", "").replace(".base_layer", ""): p
        for n, p in network.named_parameters()
        if "lora_" not in n
    }
    for n, p in after.items():
        assert torch.equal(p.detach(), base_before[n]), f"base weight {n} changed"
    for n, b in network.named_buffers():
        key = n.replace(".base_layer", "")
        if key in buffers_before:
            assert torch.equal(b, buffers_before[key]), f"base buffer {n} changed"
    return match


def test_lora_guard_custom_module() -> None:
    torch.manual_seed(0)
    net = TinyNet()
    x, y = labelled_blobs()
    _lora_two_steps(net, net, x, y, ["query", "value", "ff.0", "ff.2"])


def test_lora_guard_scimilarity_scratch() -> None:
    from cellfoundry.tuning.backbone import SCimilarityScratch

    adata = real_gene_adata(64, 120)
    bb = SCimilarityScratch(list(adata.var_names), "symbol", hidden=[16, 16], latent=8, seed=0)
    batch = bb.collate(bb.tokenize(adata))
    y = torch.tensor(adata.obs["cell_type"].cat.codes.to_numpy(), dtype=torch.long)
    _lora_two_steps(bb.network, bb.embed, batch, y, bb.default_lora_targets)


@pytest.mark.parametrize("family", ["geneformer", "scgpt", "scimilarity"])
def test_lora_guard_each_family(family: str) -> None:
    """Every family's default targets (tiny random model): adapters train, base weights frozen."""
    from cellfoundry.models.foundation import foundation_class

    try:
        cls = foundation_class(family)
    except ImportError as exc:  # pragma: no cover - family not in this build
        pytest.skip(f"family {family} not yet available: {exc}")
    adata = real_gene_adata(48, 150)
    genes = list(adata.var["gene_ids"]) if cls.gene_key_kind == "ensembl" else list(adata.var_names)
    fm = cls.from_random(genes, variant="tiny" if family != "geneformer" else None, seed=0)
    cells = fm.tokenize(adata)
    batch = fm.collate(cells)
    y = torch.tensor(adata.obs["cell_type"].cat.codes.to_numpy(), dtype=torch.long)
    match = _lora_two_steps(
        fm.network, fm.forward_embeddings, batch, y, list(fm.default_lora_targets), strict=False
    )
    if family == "geneformer":
        # the embedding is read at the penultimate layer: the last layer's adapters could never train
        n_layers = fm.network.config.num_hidden_layers
        assert match.unreachable and all(f"layer.{n_layers - 1}." in m for m in match.unreachable)
    else:
        assert match.unreachable == []


def test_user_target_that_cannot_train_is_refused() -> None:
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(4, 4)
            self.unused = nn.Linear(4, 4)

    net = TwoHeads()
    x = torch.randn(8, 4)
    with pytest.raises(ModelError, match="do not influence the cell embedding"):
        apply_lora(net, ["used", "unused"], probe=(net.used, x))


def test_parameter_accounting() -> None:
    net = TinyNet()
    full = count_parameters(net)
    assert full.trainable == full.total == sum(p.numel() for p in net.parameters())
    apply_lora(net, ["query", "value"], r=2, alpha=4)
    c = count_parameters(net)
    # query and value are 16x16: each adapter adds A (2x16) and B (16x2)
    assert c.trainable == 2 * (2 * 16 + 16 * 2)
    assert c.total == full.total + c.trainable
    assert 0 < c.share < 0.2


def test_unmatched_target_is_refused() -> None:
    with pytest.raises(ModelError, match="match no module"):
        match_targets(TinyNet(), ["query", "no_such_layer"])
    with pytest.raises(ModelError, match="cannot wrap"):
        match_targets(TinyNet(), ["norm"])


def test_multihead_attention_out_proj_alone_is_refused() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    with pytest.raises(ModelError, match="silently ignored"):
        match_targets(M(), ["out_proj"])
    assert match_targets(M(), ["attn", "out_proj"]).modules == ["attn", "attn.out_proj"]
