"""Fixtures for the scGPT tests: the official reference code, published-format checkpoints, real cells."""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import scgpt_reference

SPECIALS = ["<pad>", "<cls>", "<eoc>"]

TINY_ARGS: dict[str, Any] = {
    # a few keys of the published args.json (spec §2.2) plus the tiny architecture
    "data_source": "/scratch/ssd004/datasets/cellxgene/scb_strict/human",
    "pad_token": "<pad>",
    "input_style": "binned",
    "input_emb_style": "continuous",
    "n_bins": 51,
    "max_seq_len": 1200,
    "mask_ratio": [0.25, 0.5, 0.75],
    "fast_transformer": True,
    "nlayers": 3,
    "nheads": 4,
    "embsize": 32,
    "d_hid": 48,
    "dropout": 0.2,
    "n_layers_cls": 3,
    "mask_value": -1,
    "pad_value": -2,
    "MVC": True,
    "some_future_key": {"nested": 1},
}


def census_genes(shared: Path) -> list[str]:
    v = json.loads((shared / "vocab" / "scgpt" / "default_census_vocab.json").read_text())
    return sorted(v, key=v.get)


def write_checkpoint(
    folder: Path,
    state: Mapping[str, torch.Tensor],
    args: Mapping[str, Any],
    vocab: Mapping[str, int],
    *,
    shuffle_seed: int | None = 0,
) -> Path:
    """args.json, vocab.json (keys shuffled) and best_model.pt = torch.save(OrderedDict)."""
    from collections import OrderedDict

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "args.json").write_text(json.dumps(dict(args)))
    items = list(vocab.items())
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(items)
    (folder / "vocab.json").write_text(json.dumps(dict(items)))
    torch.save(OrderedDict(state), folder / "best_model.pt")
    return folder


def vocab_of(genes: list[str]) -> dict[str, int]:
    v = {g: i for i, g in enumerate(genes)}
    for s in SPECIALS:
        v[s] = len(v)
    return v


@pytest.fixture(scope="session")
def ref() -> Any:
    """The official scgpt==0.2.4 modules (skip when the package is not installed)."""
    try:
        return scgpt_reference.load_reference()
    except ImportError as e:
        pytest.skip(f"reference implementation unavailable: {e}")


@pytest.fixture(scope="session")
def real_genes(shared_dir: Path) -> list[str]:
    """The whole-human vocabulary's 60,694 gene symbols, in id order."""
    return census_genes(shared_dir)


@pytest.fixture(scope="session")
def pbmc_cells(pbmc3k: ad.AnnData) -> ad.AnnData:
    """32 real PBMC cells: a spread of sizes including cells with more than 1,199 expressed genes."""
    nnz = np.diff(pbmc3k.X.indptr)
    big = np.nonzero(nnz > 1300)[0][:4]
    rest = np.random.default_rng(0).choice(
        np.setdiff1d(np.arange(pbmc3k.n_obs), big), 28, replace=False
    )
    idx = np.sort(np.concatenate([big, rest]))
    return pbmc3k[idx].copy()


@pytest.fixture(scope="session")
def reference_checkpoint(
    ref: Any, real_genes: list[str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A random-weight reference ``TransformerModel`` over the real vocab, saved in all three layouts."""
    vocab = vocab_of(real_genes)
    torch.manual_seed(0)
    model = scgpt_reference.build_reference_model(ref, TINY_ARGS, vocab)
    scgpt_reference.randomize_(model, seed=1)
    model.eval()
    flash = scgpt_reference.published_state_dict(model, seed=2)
    root = tmp_path_factory.mktemp("scgpt_ckpt")
    folders = {}
    for layout in ("Wqkv", "in_proj", "_impl.Wqkv"):
        state = {}
        for k, v in flash.items():
            if layout == "in_proj":
                k = k.replace("self_attn.Wqkv.", "self_attn.in_proj_")
            elif layout == "_impl.Wqkv":
                k = k.replace("self_attn.Wqkv.", "self_attn._impl.Wqkv.").replace(
                    "self_attn.out_proj.", "self_attn._impl.out_proj."
                )
            state[k] = v
        folders[layout] = write_checkpoint(root / layout.replace(".", "_"), state, TINY_ARGS, vocab)
    return {"model": model, "vocab": vocab, "folders": folders, "state": flash}


@pytest.fixture
def make_tiny_checkpoint(tmp_path: Path) -> Callable[..., Path]:
    """Independent builder of a tiny flash-layout checkpoint from the §2.4 key list (no reference code)."""

    def build(
        genes: list[str] | None = None,
        *,
        drop: tuple[str, ...] = (),
        add: Mapping[str, torch.Tensor] | None = None,
        reshape: Mapping[str, tuple[int, ...]] | None = None,
        args: Mapping[str, Any] | None = None,
        name: str = "ckpt",
    ) -> Path:
        genes = genes or [f"GENE{i}" for i in range(40)]
        a = dict(TINY_ARGS if args is None else args)
        d, h, n = a["embsize"], a["d_hid"], a["nlayers"]
        vocab = vocab_of(genes)
        shapes: dict[str, tuple[int, ...]] = {
            "encoder.embedding.weight": (len(vocab), d),
            "encoder.enc_norm.weight": (d,),
            "encoder.enc_norm.bias": (d,),
            "flag_encoder.weight": (2, d),
            "value_encoder.linear1.weight": (d, 1),
            "value_encoder.linear1.bias": (d,),
            "value_encoder.linear2.weight": (d, d),
            "value_encoder.linear2.bias": (d,),
            "value_encoder.norm.weight": (d,),
            "value_encoder.norm.bias": (d,),
        }
        for i in range(n):
            p = f"transformer_encoder.layers.{i}."
            shapes |= {
                p + "self_attn.Wqkv.weight": (3 * d, d),
                p + "self_attn.Wqkv.bias": (3 * d,),
                p + "self_attn.out_proj.weight": (d, d),
                p + "self_attn.out_proj.bias": (d,),
                p + "linear1.weight": (h, d),
                p + "linear1.bias": (h,),
                p + "linear2.weight": (d, h),
                p + "linear2.bias": (d,),
                p + "norm1.weight": (d,),
                p + "norm1.bias": (d,),
                p + "norm2.weight": (d,),
                p + "norm2.bias": (d,),
            }
        shapes |= {
            "decoder.fc.0.weight": (d, d),
            "decoder.fc.0.bias": (d,),
            "decoder.fc.2.weight": (d, d),
            "decoder.fc.2.bias": (d,),
            "decoder.fc.4.weight": (1, d),
            "decoder.fc.4.bias": (1,),
            "mvc_decoder.gene2query.weight": (d, d),
            "mvc_decoder.gene2query.bias": (d,),
            "mvc_decoder.W.weight": (d, d),
        }
        shapes |= dict(reshape or {})
        g = torch.Generator().manual_seed(3)
        state = {k: 0.2 * torch.randn(s, generator=g) for k, s in shapes.items() if k not in drop}
        state |= dict(add or {})
        return write_checkpoint(tmp_path / name, state, a, vocab)

    return build
