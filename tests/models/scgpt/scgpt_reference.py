"""The official scGPT 0.2.4 code, loaded module by module (its package ``__init__`` imports absent deps).

Used by the scGPT tests and ``benchmarks/bench_scgpt_embed.py`` as the reference implementation:
``TransformerModel`` (scgpt/model/model.py), ``binning`` (scgpt/preprocess.py) and ``DataCollator``
(scgpt/data_collator.py) run unmodified. ``reference_embed`` re-creates
``scgpt.tasks.cell_emb.get_batch_cell_embeddings`` (Dataset, collator, ``_encode``, <cls>, L2 norm)
without its DataLoader workers and CUDA autocast.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

PKG = "_cellfoundry_scgpt_ref"


def scgpt_dir() -> Path | None:
    spec = importlib.util.find_spec("scgpt")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def load_reference() -> types.SimpleNamespace:
    """Modules of the installed scgpt==0.2.4 under a private package name."""
    root = scgpt_dir()
    if root is None:
        raise ImportError("scgpt==0.2.4 is not installed (pip install --no-deps scgpt==0.2.4)")
    if PKG not in sys.modules:
        pkg = types.ModuleType(PKG)
        pkg.__path__ = [str(root)]
        pkg.logger = logging.getLogger("scGPT")  # type: ignore[attr-defined]
        sys.modules[PKG] = pkg
        sub = types.ModuleType(f"{PKG}.model")
        sub.__path__ = [str(root / "model")]
        sys.modules[f"{PKG}.model"] = sub
        # preprocess.py does `from scgpt import logger`: alias our shell while it executes
        saved = sys.modules.get("scgpt")
        sys.modules["scgpt"] = pkg
        try:
            importlib.import_module(f"{PKG}.preprocess")
        finally:
            if saved is None:
                sys.modules.pop("scgpt", None)
            else:
                sys.modules["scgpt"] = saved
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model_mod = importlib.import_module(f"{PKG}.model.model")
    pre = importlib.import_module(f"{PKG}.preprocess")
    coll = importlib.import_module(f"{PKG}.data_collator")
    return types.SimpleNamespace(
        TransformerModel=model_mod.TransformerModel,
        binning=pre.binning,
        digitize=pre._digitize,
        DataCollator=coll.DataCollator,
        collator_module=coll,
    )


def build_reference_model(
    ref: Any, cfg: Mapping[str, Any], vocab: Mapping[str, int]
) -> torch.nn.Module:
    """``TransformerModel`` as ``embed_data`` builds it (flash-attn absent -> PyTorch layers)."""
    return ref.TransformerModel(
        ntoken=len(vocab),
        d_model=cfg["embsize"],
        nhead=cfg["nheads"],
        d_hid=cfg["d_hid"],
        nlayers=cfg["nlayers"],
        nlayers_cls=cfg.get("n_layers_cls", 3),
        n_cls=1,
        vocab=vocab,
        dropout=cfg.get("dropout", 0.2),
        pad_token=cfg.get("pad_token", "<pad>"),
        pad_value=cfg.get("pad_value", -2),
        do_mvc=True,
        do_dab=False,
        use_batch_labels=False,
        domain_spec_batchnorm=False,
        explicit_zero_prob=False,
        use_fast_transformer=False,
        pre_norm=False,
    )


def load_pretrained_like_official(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor]
) -> list[str]:
    """scgpt.utils.load_pretrained (0.2.4, non-flash): ``Wqkv.`` -> ``in_proj_``, keep name+shape matches.

    ``_impl.`` (the 2025 compat layout) is mapped as HEAD's loader does. Returns the dropped keys.
    """
    params = {k.replace("_impl.", "").replace("Wqkv.", "in_proj_"): v for k, v in state.items()}
    own = model.state_dict()
    keep = {k: v for k, v in params.items() if k in own and v.shape == own[k].shape}
    own.update(keep)
    model.load_state_dict(own)
    return sorted(set(params) - set(keep))


def randomize_(model: torch.nn.Module, seed: int, scale: float = 0.3) -> None:
    """Give every parameter (LayerNorms included) random values, so no default init hides a bug."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or (".norm" in name and name.endswith("weight")):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=g))


def published_state_dict(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """The reference model's weights in the published flash layout, with ``flag_encoder`` added
    and ``cls_decoder`` removed (spec §2.4)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        if k.startswith("cls_decoder."):
            continue
        out[k.replace("self_attn.in_proj_", "self_attn.Wqkv.")] = v.clone()
    d = out["encoder.embedding.weight"].shape[1]
    out["flag_encoder.weight"] = torch.randn(2, d, generator=torch.Generator().manual_seed(seed))
    return out


def seeded_collator(ref: Any, seed: int, **kw: Any) -> Any:
    """The official ``DataCollator`` whose random draws come from the same per-cell seeds as ours.

    Binning runs the official ``binning`` after ``np.random.seed(cell_seed(...))``; subsampling
    draws ``np.random.permutation`` from the state binning left (instead of ``torch.randperm``).
    """
    from cellfoundry.models.scgpt.tokenizer import cell_seed

    class Seeded(ref.DataCollator):  # type: ignore[misc,name-defined]
        def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
            seeds = [
                cell_seed(seed, ex["genes"][1:].numpy(), ex["expressions"][1:].numpy())
                for ex in examples
            ]
            it = iter(seeds)
            official = ref.binning

            def binning(row: Any, n_bins: int) -> Any:
                np.random.seed(next(it))
                return official(row=row, n_bins=n_bins)

            ref.collator_module.binning = binning
            try:
                return super().__call__(examples)  # type: ignore[no-any-return]
            finally:
                ref.collator_module.binning = official

        def _sample(self, genes: torch.Tensor, expressions: torch.Tensor, max_length: int) -> Any:
            n = self.keep_first_n_tokens
            idx = torch.from_numpy(np.random.permutation(len(genes) - n)[: max_length - n] + n)
            idx = torch.cat([torch.arange(n), idx])
            return genes[idx], expressions[idx]

    return Seeded(**kw)


def official_cell(
    counts_row: np.ndarray, gene_ids: np.ndarray, cls_id: int, pad_value: float
) -> dict[str, Any]:
    """``Dataset.__getitem__`` of cell_emb.py: non-zero genes in column order, <cls> first with pad_value."""
    nz = np.nonzero(counts_row)[0]
    genes = np.insert(gene_ids[nz], 0, cls_id)
    values = np.insert(counts_row[nz], 0, pad_value)
    return {
        "genes": torch.from_numpy(genes).long(),
        "expressions": torch.from_numpy(values).float(),
    }


def reference_embed(
    ref: Any,
    model: torch.nn.Module,
    counts: Any,
    gene_ids: np.ndarray,
    vocab: Mapping[str, int],
    *,
    seed: int | None = 0,
    batch_size: int = 64,
    max_length: int = 1200,
    pad_value: float = -2,
    pad_token: str = "<pad>",
    fastpath: bool = False,
) -> np.ndarray:
    """``get_batch_cell_embeddings`` (cls mode): sequential batches, official collator, _encode, L2.

    ``counts``: cells x genes (vocab genes only, data column order); ``seed=None`` keeps the
    official global-RNG draws. ``fastpath=False`` turns off PyTorch's nested-tensor inference
    fast path of ``nn.TransformerEncoderLayer`` (same math, and far faster on CPU).
    """
    kw = dict(
        do_padding=True,
        pad_token_id=vocab[pad_token],
        pad_value=pad_value,
        do_mlm=False,
        do_binning=True,
        max_length=max_length,
        sampling=True,
        keep_first_n_tokens=1,
    )
    collator = ref.DataCollator(**kw) if seed is None else seeded_collator(ref, seed, **kw)
    dense = counts if isinstance(counts, np.ndarray) else counts.toarray()
    model.eval()
    out = np.zeros((dense.shape[0], model.d_model), dtype=np.float32)
    prev = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(fastpath)
    try:
        _run_batches(model, collator, dense, gene_ids, vocab, out, batch_size, pad_value, pad_token)
    finally:
        torch.backends.mha.set_fastpath_enabled(prev)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _run_batches(
    model: Any,
    collator: Any,
    dense: np.ndarray,
    gene_ids: np.ndarray,
    vocab: Mapping[str, int],
    out: np.ndarray,
    batch_size: int,
    pad_value: float,
    pad_token: str,
) -> None:
    with torch.no_grad():
        for s in range(0, dense.shape[0], batch_size):
            ex = [
                official_cell(dense[i], gene_ids, vocab["<cls>"], pad_value)
                for i in range(s, min(s + batch_size, dense.shape[0]))
            ]
            batch = collator(ex)
            ids = batch["gene"]
            emb = model._encode(ids, batch["expr"], src_key_padding_mask=ids.eq(vocab[pad_token]))
            out[s : s + len(ex)] = emb[:, 0, :].cpu().numpy()
