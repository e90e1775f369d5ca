"""Whole-human scGPT shapes (512-d, 12 layers, 8 heads, 60,697 tokens): keys and shapes only, on meta."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from scgpt_reference import build_reference_model

from cellfoundry.models.foundation import LoadReport
from cellfoundry.models.scgpt.checkpoint import check_state_dict, identify
from cellfoundry.models.scgpt.config import ScGPTConfig
from cellfoundry.models.scgpt.network import ScGPTNetwork
from cellfoundry.models.scgpt.vocab import ScGPTVocab

# spec §2.2: the published args.json (architecture part and neighbours, verbatim values)
PUBLISHED_ARGS = {
    "pad_token": "<pad>", "input_style": "binned", "input_emb_style": "continuous", "n_bins": 51,
    "max_seq_len": 1200, "mask_ratio": [0.25, 0.5, 0.75], "no_cls": True, "fast_transformer": True,
    "nlayers": 12, "nheads": 8, "embsize": 512, "d_hid": 512, "dropout": 0.2, "n_layers_cls": 3,
    "mask_value": -1, "pad_value": -2, "USE_CLS": False, "MVC": True, "world_size": 16,
}  # fmt: skip


def published_shapes(
    V: int = 60_697, d: int = 512, h: int = 512, L: int = 12
) -> dict[str, tuple[int, ...]]:
    """The best_model.pt tensor set of spec §2.4, written out independently of our network."""
    s: dict[str, tuple[int, ...]] = {
        "encoder.embedding.weight": (V, d), "encoder.enc_norm.weight": (d,), "encoder.enc_norm.bias": (d,),
        "flag_encoder.weight": (2, d),
        "value_encoder.linear1.weight": (d, 1), "value_encoder.linear1.bias": (d,),
        "value_encoder.linear2.weight": (d, d), "value_encoder.linear2.bias": (d,),
        "value_encoder.norm.weight": (d,), "value_encoder.norm.bias": (d,),
        "decoder.fc.0.weight": (d, d), "decoder.fc.0.bias": (d,), "decoder.fc.2.weight": (d, d),
        "decoder.fc.2.bias": (d,), "decoder.fc.4.weight": (1, d), "decoder.fc.4.bias": (1,),
        "mvc_decoder.gene2query.weight": (d, d), "mvc_decoder.gene2query.bias": (d,),
        "mvc_decoder.W.weight": (d, d),
    }  # fmt: skip
    for i in range(L):
        p = f"transformer_encoder.layers.{i}."
        s |= {
            p + "self_attn.Wqkv.weight": (3 * d, d), p + "self_attn.Wqkv.bias": (3 * d,),
            p + "self_attn.out_proj.weight": (d, d), p + "self_attn.out_proj.bias": (d,),
            p + "linear1.weight": (h, d), p + "linear1.bias": (h,),
            p + "linear2.weight": (d, h), p + "linear2.bias": (d,),
            p + "norm1.weight": (d,), p + "norm1.bias": (d,), p + "norm2.weight": (d,), p + "norm2.bias": (d,),
        }  # fmt: skip
    return s


def _meta_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def test_our_network_has_the_published_keys_and_shapes() -> None:
    cfg = ScGPTConfig.from_dict(PUBLISHED_ARGS)
    with torch.device("meta"):
        net = ScGPTNetwork(cfg, 60_697, 60_694)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert ours == published_shapes()
    # 51,330,049 fp32 parameters = the published 196 MB best_model.pt (spec §2.1)
    assert sum(v.numel() for v in net.state_dict().values()) == 51_330_049


def test_official_model_keys_remap_onto_ours(ref: Any) -> None:
    vocab = {f"g{i}": i for i in range(60_694)} | {
        "<pad>": 60_694,
        "<cls>": 60_695,
        "<eoc>": 60_696,
    }
    with torch.device("meta"):
        official = build_reference_model(ref, PUBLISHED_ARGS, vocab)
    theirs = {
        k.replace("self_attn.in_proj_", "self_attn.Wqkv."): tuple(v.shape)
        for k, v in official.state_dict().items()
        if not k.startswith("cls_decoder.")
    }
    want = published_shapes()
    want.pop(
        "flag_encoder.weight"
    )  # only in pretrained files; the released model has no such module
    assert theirs == want


def test_whole_human_checkpoint_shapes_pass_strict_check(shared_dir: Path) -> None:
    census = json.loads((shared_dir / "vocab" / "scgpt" / "default_census_vocab.json").read_text())
    vocab = ScGPTVocab.from_dict(census)  # specials appended in the published order
    assert len(vocab) == 60_697 and (vocab.pad_id, vocab.cls_id, vocab["<eoc>"]) == (
        60_694,
        60_695,
        60_696,
    )
    assert vocab.is_whole_human()
    cfg = ScGPTConfig.from_dict(PUBLISHED_ARGS)
    for layout in ("Wqkv", "in_proj", "_impl.Wqkv"):
        shapes = published_shapes()
        if layout == "in_proj":
            shapes = {
                k.replace("self_attn.Wqkv.", "self_attn.in_proj_"): s for k, s in shapes.items()
            }
        elif layout == "_impl.Wqkv":
            shapes = {k.replace(".self_attn.", ".self_attn._impl."): s for k, s in shapes.items()}
        report = LoadReport(family="scgpt", variant=None)
        kept, _ = check_state_dict(_meta_state(shapes), cfg, vocab, report)
        assert report.ok, report
        assert report.optional_keys_absent == ["cls_decoder.*"]
        assert set(kept) == set(published_shapes())
        assert identify(cfg, vocab, {"best_model.pt": "0" * 64}, report) == "whole-human"
    # one missing layer and a wrong embedding size are reported by name
    shapes = published_shapes()
    shapes.pop("transformer_encoder.layers.11.norm2.bias")
    shapes["encoder.embedding.weight"] = (60_694, 512)
    report = LoadReport(family="scgpt", variant=None)
    check_state_dict(_meta_state(shapes), cfg, vocab, report)
    assert report.missing_keys == ["transformer_encoder.layers.11.norm2.bias"]
    assert report.shape_mismatches == [
        "encoder.embedding.weight: file [60694, 512] vs expected [60697, 512]"
    ]
