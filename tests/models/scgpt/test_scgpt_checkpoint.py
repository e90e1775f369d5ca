"""Strict, safe loading of published-format scGPT checkpoint folders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cellfoundry.models.foundation import CheckpointError
from cellfoundry.models.scgpt import ScGPTModel
from cellfoundry.models.scgpt.config import ScGPTConfig
from cellfoundry.models.scgpt.vocab import ScGPTVocab


def _cells(n: int = 6, n_genes: int = 40, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = 3 + 5 * i
        g = rng.choice(n_genes, k, replace=False)
        v = rng.integers(1, 51, k).astype(np.float32)
        out.append({"gene_ids": np.r_[n_genes + 1, g], "values": np.r_[-2.0, v].astype(np.float32)})
    return out


def test_flash_layout_loads_with_report(make_tiny_checkpoint) -> None:
    folder = make_tiny_checkpoint()
    assert ScGPTModel.detect(folder)
    m = ScGPTModel.load(folder)
    rep = m.load_report
    assert rep.ok and rep.family == "scgpt"
    assert rep.optional_keys_absent == ["cls_decoder.*"]
    assert "attention key layout: Wqkv" in rep.messages
    for name, digest in rep.files.items():
        assert digest == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    assert rep.known_release is None
    assert any("match no known release" in msg for msg in rep.messages)
    assert m.variant == "custom-3L-32d-43v" and m.embedding_dim == 32
    assert m.genes == [f"GENE{i}" for i in range(40)]
    # the loaded weights are the file's, bit for bit
    state = torch.load(folder / "best_model.pt", weights_only=True)
    ours = m.network.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in state.items())
    assert not m.network.training


def test_three_layouts_give_identical_networks(make_tiny_checkpoint, tmp_path: Path) -> None:
    flash = make_tiny_checkpoint()
    state = torch.load(flash / "best_model.pt", weights_only=True)
    renames = {
        "in_proj": lambda k: k.replace("self_attn.Wqkv.", "self_attn.in_proj_"),
        "_impl": lambda k: k.replace("self_attn.", "self_attn._impl.") if ".self_attn." in k else k,
    }
    base = ScGPTModel.load(flash)
    batch = base.collate(_cells())
    want = base.forward_embeddings(batch)
    for name, fn in renames.items():
        folder = tmp_path / name
        folder.mkdir()
        for f in ("args.json", "vocab.json"):
            (folder / f).write_bytes((flash / f).read_bytes())
        torch.save({fn(k): v for k, v in state.items()}, folder / "best_model.pt")
        m = ScGPTModel.load(folder)
        assert m.load_report.ok
        assert (
            f"attention key layout: {'in_proj' if name == 'in_proj' else '_impl.Wqkv'}"
            in m.load_report.messages
        )
        assert torch.equal(m.forward_embeddings(batch), want)


def test_missing_unexpected_and_shape_errors_name_the_keys(make_tiny_checkpoint) -> None:
    key = "transformer_encoder.layers.1.linear2.bias"
    with pytest.raises(
        CheckpointError, match=r"missing keys: transformer_encoder\.layers\.1\.linear2\.bias"
    ):
        ScGPTModel.load(make_tiny_checkpoint(drop=(key,), name="a"))
    with pytest.raises(
        CheckpointError, match=r"unexpected keys: .*transformer_encoder\.layers\.3\.norm1\.weight"
    ):
        ScGPTModel.load(
            make_tiny_checkpoint(
                add={"transformer_encoder.layers.3.norm1.weight": torch.ones(32)}, name="b"
            )
        )
    with pytest.raises(
        CheckpointError, match=r"shape mismatches: value_encoder\.linear2\.weight: file \[32, 31\]"
    ):
        ScGPTModel.load(
            make_tiny_checkpoint(reshape={"value_encoder.linear2.weight": (32, 31)}, name="c")
        )
    # an embedding table that disagrees with vocab.json is a shape mismatch too
    with pytest.raises(
        CheckpointError, match=r"encoder\.embedding\.weight: file \[50, 32\] vs expected \[43, 32\]"
    ):
        ScGPTModel.load(
            make_tiny_checkpoint(reshape={"encoder.embedding.weight": (50, 32)}, name="d")
        )


def test_optional_and_ignored_keys_are_allowed_and_listed(make_tiny_checkpoint) -> None:
    no_heads = make_tiny_checkpoint(
        drop=(
            "flag_encoder.weight",
            "mvc_decoder.gene2query.weight",
            "mvc_decoder.gene2query.bias",
            "mvc_decoder.W.weight",
        ),
        name="a",
    )
    rep = ScGPTModel.load(no_heads).load_report
    assert rep.ok and set(rep.optional_keys_absent) == {
        "flag_encoder.*",
        "mvc_decoder.*",
        "cls_decoder.*",
    }
    extra = {
        "decoder.zero_logit.0.weight": torch.zeros(32, 32),
        "cls_decoder._decoder.0.weight": torch.zeros(32, 32),
        "cls_decoder._decoder.0.bias": torch.zeros(32),
        "cls_decoder._decoder.2.weight": torch.ones(32),
        "cls_decoder._decoder.2.bias": torch.zeros(32),
        "cls_decoder._decoder.3.weight": torch.zeros(32, 32),
        "cls_decoder._decoder.3.bias": torch.zeros(32),
        "cls_decoder._decoder.5.weight": torch.ones(32),
        "cls_decoder._decoder.5.bias": torch.zeros(32),
        "cls_decoder.out_layer.weight": torch.zeros(7, 32),
        "cls_decoder.out_layer.bias": torch.zeros(7),
    }
    m = ScGPTModel.load(make_tiny_checkpoint(add=extra, name="b"))
    assert m.load_report.ignored_keys == ["decoder.zero_logit.0.weight"]
    assert m.load_report.optional_keys_absent == []
    assert m.network.cls_decoder.out_layer.out_features == 7
    # a partial classifier head is an error naming the missing keys
    partial = {k: v for k, v in extra.items() if k != "cls_decoder._decoder.3.bias"}
    with pytest.raises(CheckpointError, match=r"missing keys: cls_decoder\._decoder\.3\.bias"):
        ScGPTModel.load(make_tiny_checkpoint(add=partial, name="c"))


def test_unsupported_and_mixed_layouts_are_refused(make_tiny_checkpoint) -> None:
    with pytest.raises(CheckpointError, match="batch-label conditioning"):
        ScGPTModel.load(
            make_tiny_checkpoint(
                add={"batch_encoder.embedding.weight": torch.zeros(3, 32)}, name="a"
            )
        )
    mixed = make_tiny_checkpoint(name="b")
    state = torch.load(mixed / "best_model.pt", weights_only=True)
    w = state.pop("transformer_encoder.layers.0.self_attn.Wqkv.weight")
    state["transformer_encoder.layers.0.self_attn.in_proj_weight"] = w
    torch.save(state, mixed / "best_model.pt")
    with pytest.raises(CheckpointError, match="mixes attention key layouts"):
        ScGPTModel.load(mixed)


class _Evil:
    def __reduce__(self):  # pragma: no cover - must never run
        return (print, ("pwned",))


def test_unsafe_pickles_and_non_state_dicts_are_refused(make_tiny_checkpoint) -> None:
    folder = make_tiny_checkpoint()
    torch.save({"encoder.embedding.weight": torch.zeros(1), "x": _Evil()}, folder / "best_model.pt")
    with pytest.raises(CheckpointError, match="tensors-only torch file") as e:
        ScGPTModel.load(folder)
    assert e.value.hint and "refused" in e.value.hint
    torch.save([torch.zeros(2)], folder / "best_model.pt")
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        ScGPTModel.load(folder)
    torch.save({"a": torch.zeros(2), "b": 3}, folder / "best_model.pt")
    with pytest.raises(CheckpointError, match="not tensors: b"):
        ScGPTModel.load(folder)


def test_folder_and_config_errors_say_what_to_fix(make_tiny_checkpoint, tmp_path: Path) -> None:
    folder = make_tiny_checkpoint()
    (folder / "vocab.json").rename(tmp_path / "vocab.json")
    assert not ScGPTModel.detect(folder)
    with pytest.raises(CheckpointError, match=r"lacks vocab\.json"):
        ScGPTModel.load(folder)
    (tmp_path / "vocab.json").rename(folder / "vocab.json")
    args = json.loads((folder / "args.json").read_text())
    del args["nheads"]
    (folder / "args.json").write_text(json.dumps(args))
    with pytest.raises(CheckpointError, match="lacks required keys: nheads"):
        ScGPTModel.load(folder)
    with pytest.raises(CheckpointError, match="'nlayers' has the invalid value 'x'"):
        ScGPTConfig.from_dict({**args, "nheads": 4, "nlayers": "x"})
    with pytest.raises(CheckpointError, match="not divisible"):
        ScGPTConfig.from_dict({**args, "nheads": 5})
    with pytest.raises(CheckpointError, match=r"ids must be 0\.\.2"):
        ScGPTVocab.from_dict({"A": 0, "B": 1, "<pad>": 5})
    with pytest.raises(CheckpointError, match="ids must be integers"):
        ScGPTVocab.from_dict({"A": "0"})


def test_config_keeps_unknown_keys_and_vocab_is_order_independent() -> None:
    cfg = ScGPTConfig.from_dict(
        {
            "embsize": 16,
            "nheads": 2,
            "d_hid": 8,
            "nlayers": 1,
            "pad_value": -2,
            "load_model": None,
            "lr": 1e-4,
        }
    )
    assert cfg.extra == {"load_model": None, "lr": 1e-4}
    assert cfg.cls_value == -2.0 and cfg.n_bins == 51 and cfg.max_seq_len == 1200
    assert ScGPTConfig.from_dict({**cfg.to_dict(), "cls_value": 0}).cls_value == 0.0
    a = ScGPTVocab.from_dict({"B": 1, "<pad>": 2, "A": 0, "<cls>": 3})
    b = ScGPTVocab.from_dict({"<cls>": 3, "A": 0, "B": 1, "<pad>": 2})
    assert a.tokens == b.tokens == ["A", "B", "<pad>", "<cls>", "<eoc>"]  # missing <eoc> appended
    assert a.fingerprint() == b.fingerprint() and (a.pad_id, a.cls_id) == (2, 3)
    assert a.genes == ["A", "B"]


@pytest.mark.parametrize("layout", ["Wqkv", "in_proj", "_impl.Wqkv"])
def test_save_load_roundtrip(layout: str, tmp_path: Path) -> None:
    m = ScGPTModel.from_random([f"G{i}" for i in range(30)], seed=4)
    folder = m.save(tmp_path / "m", layout=layout)
    keys = torch.load(folder / "best_model.pt", weights_only=True).keys()
    marker = {
        "Wqkv": ".self_attn.Wqkv.weight",
        "in_proj": ".self_attn.in_proj_weight",
        "_impl.Wqkv": "._impl.Wqkv.",
    }
    assert any(marker[layout] in k for k in keys)
    m2 = ScGPTModel.load(folder)
    batch = m.collate(_cells(n_genes=30))
    assert torch.equal(m.forward_embeddings(batch), m2.forward_embeddings(batch))
