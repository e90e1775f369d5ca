"""Test helpers: random-weight Geneformer checkpoints written in the published format (spec §1, §5).

The checkpoints are built here with ``transformers`` and ``safetensors`` directly (not with the
product code), so the loader is tested against files laid out the way the official ones are.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

N_GENES = 300
ENSEMBL = [f"ENSG{100000 + 7 * i:011d}" for i in range(N_GENES)]


def tiny_config(version: str, vocab_size: int, **over: Any) -> dict[str, Any]:
    """A config.json with the published keys (V1 or V2 flavour), tiny sizes."""
    cfg: dict[str, Any] = {
        "architectures": ["BertForMaskedLM"],
        "attention_probs_dropout_prob": 0.02,
        "hidden_act": "relu",
        "hidden_dropout_prob": 0.02,
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512,
        "model_type": "bert",
        "num_attention_heads": 4,
        "num_hidden_layers": 3,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "type_vocab_size": 2,
        "use_cache": True,
        "vocab_size": vocab_size,
    }
    if version == "V1":
        cfg.update({"gradient_checkpointing": False, "transformers_version": "4.6.0"})
    else:
        cfg.update(
            {"classifier_dropout": None, "torch_dtype": "float32", "transformers_version": "4.44.2"}
        )
    cfg.update(over)
    return cfg


def published_state_dict(cfg: dict[str, Any], seed: int, version: str) -> dict[str, torch.Tensor]:
    """Random weights with exactly the published tensor set (V1 adds the position_ids buffer)."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    keep = {k: v for k, v in cfg.items() if k not in ("architectures", "transformers_version")}
    net = BertForMaskedLM(BertConfig(**keep))
    sd = {}
    for k, v in net.state_dict().items():
        if k.startswith("cls.predictions.decoder.") or k.endswith("position_ids"):
            continue
        # spread LayerNorm / bias values too, so every tensor matters in the comparison
        sd[k] = (v + 0.05 * torch.randn_like(v)).contiguous()
    if version == "V1":
        sd["bert.embeddings.position_ids"] = torch.arange(cfg["max_position_embeddings"])[None, :]
    return sd


def write_dicts(
    folder: Path, version: str, genes: list[str], medians: dict[str, float], suffix: str = ""
) -> dict[str, int]:
    """token/median/name-id pickles as published (V1: np.int16 gene ids, only <pad>/<mask>)."""
    folder.mkdir(parents=True, exist_ok=True)
    if version == "V1":
        tok: dict[str, Any] = {"<pad>": 0, "<mask>": 1}
        for i, g in enumerate(genes):
            tok[g] = np.int16(2 + i)
    else:
        tok = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3}
        for i, g in enumerate(genes):
            tok[g] = 4 + i
    with (folder / f"token_dictionary{suffix}.pkl").open("wb") as fh:
        pickle.dump(tok, fh)
    with (folder / f"gene_median_dictionary{suffix}.pkl").open("wb") as fh:
        pickle.dump({g: np.float64(medians[g]) for g in genes}, fh)
    with (folder / f"gene_name_id_dict{suffix}.pkl").open("wb") as fh:
        pickle.dump({f"SYM{i}": g for i, g in enumerate(genes)}, fh)
    return {k: int(v) for k, v in tok.items()}


def build_checkpoint(
    folder: Path,
    version: str = "V1",
    *,
    genes: list[str] | None = None,
    medians: dict[str, float] | None = None,
    seed: int = 0,
    safetensors: bool = True,
    bin_file: bool = False,
    dict_folder: Path | None = None,
    dict_suffix: str = "",
    state_dict: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
    **cfg_over: Any,
) -> Path:
    """A tiny checkpoint folder in the published layout; returns the model folder."""
    from safetensors.torch import save_file

    genes = genes or ENSEMBL
    if medians is None:
        rng = np.random.default_rng(seed + 1)
        medians = {
            g: float(v) for g, v in zip(genes, rng.uniform(0.2, 5.0, len(genes)), strict=True)
        }
    n_special = 2 if version == "V1" else 4
    cfg = tiny_config(version, len(genes) + n_special, **cfg_over)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    sd = published_state_dict(cfg, seed, version)
    if state_dict is not None:
        sd = state_dict(sd)
    if safetensors:
        save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    if bin_file:
        full = dict(sd)
        full["cls.predictions.decoder.weight"] = sd["bert.embeddings.word_embeddings.weight"]
        full["cls.predictions.decoder.bias"] = sd["cls.predictions.bias"]
        torch.save(full, folder / "pytorch_model.bin")
    write_dicts(dict_folder or folder, version, genes, medians, dict_suffix)
    return folder


def counts_adata(
    n_cells: int = 24, genes: list[str] | None = None, seed: int = 0, extra_genes: int = 20
) -> ad.AnnData:
    """Synthetic integer counts over vocabulary genes plus some genes outside the vocabulary."""
    genes = list(genes or ENSEMBL)
    rng = np.random.default_rng(seed)
    names = genes + [f"ENSG{990000 + i:011d}" for i in range(extra_genes)]
    rates = rng.gamma(0.3, 2.0, (n_cells, len(names))) * rng.uniform(0.3, 3, (n_cells, 1))
    x = rng.poisson(rates).astype(np.float32)
    x[0, :] = 0
    x[0, :5] = [9, 1, 4, 4, 2]  # a short cell
    cols = rng.permutation(len(names))  # genes not in vocabulary order
    obs = pd.DataFrame(index=[f"c{i}" for i in range(n_cells)])
    return ad.AnnData(
        X=sp.csr_matrix(x[:, cols]), obs=obs, var=pd.DataFrame(index=[names[c] for c in cols])
    )


# --- independent reference of the official pipeline (spec §1.6, §1.7), written literally -----


def reference_tokenize(
    x_counts: sp.spmatrix | np.ndarray,
    ensembl_ids: list[str],
    token_dict: dict[str, Any],
    medians: dict[str, float],
    model_input_size: int,
    special_token: bool,
) -> list[list[int]]:
    """TranscriptomeTokenizer on an h5ad-like matrix (identity ensembl mapping, no duplicates)."""
    ids = [str(e).upper() for e in ensembl_ids]
    coding_loc = np.array([i for i, e in enumerate(ids) if e in token_dict], dtype=np.int64)
    norm_factor_vector = np.array([medians[ids[i]] for i in coding_loc], dtype=np.float64)
    coding_tokens = np.array([int(token_dict[ids[i]]) for i in coding_loc], dtype=np.int64)
    x = sp.csr_matrix(x_counts, dtype=np.float64)
    n_counts = np.asarray(x.sum(axis=1)).ravel()  # total over all genes of the cell
    x_view = x[:, coding_loc].tocsr()
    out: list[list[int]] = []
    for r in range(x.shape[0]):
        row = x_view[r].toarray().ravel()
        x_norm = row / n_counts[r] * 10_000 / norm_factor_vector
        nonzero = np.nonzero(x_norm)[0]
        values = x_norm[nonzero]
        tokens = coding_tokens[nonzero]
        ranked = tokens[np.argsort(-values)]
        if special_token:
            seq = [int(token_dict["<cls>"])] + [int(t) for t in ranked[: model_input_size - 2]]
            seq.append(int(token_dict["<eos>"]))
        else:
            seq = [int(t) for t in ranked[:model_input_size]]
        out.append(seq)
    return out


def reference_embed(
    folder: Path,
    sequences: list[list[int]],
    token_dict: dict[str, Any],
    batch_size: int = 5,
    emb_layer: int = -1,
    emb_mode: str | None = None,
) -> np.ndarray:
    """EmbExtractor: BertForMaskedLM(output_hidden_states) in eager attention, pad to longest."""
    from transformers import BertForMaskedLM

    model = BertForMaskedLM.from_pretrained(
        str(folder), output_hidden_states=True, attn_implementation="eager"
    ).eval()
    n_layers = model.config.num_hidden_layers
    layer_to_quant = n_layers + emb_layer
    has_cls = "<cls>" in token_dict
    has_eos = "<eos>" in token_dict
    mode = emb_mode or ("cls" if has_cls else "cell")
    pad = int(token_dict["<pad>"])
    embs = []
    with torch.no_grad():
        for i in range(0, len(sequences), batch_size):
            batch = sequences[i : i + batch_size]
            lens = [len(s) for s in batch]
            width = max(lens)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for j, s in enumerate(batch):
                ids[j, : len(s)] = torch.tensor(s)
                mask[j, : len(s)] = 1
            h = model(input_ids=ids, attention_mask=mask).hidden_states[layer_to_quant]
            for j, n in enumerate(lens):
                if mode == "cls":
                    embs.append(h[j, 0].numpy())
                elif has_cls:
                    m = n - 2 if has_eos else n - 1
                    embs.append(h[j, 1 : 1 + m].mean(dim=0).numpy())
                else:
                    embs.append(h[j, :n].mean(dim=0).numpy())
    return np.stack(embs).astype(np.float32)
