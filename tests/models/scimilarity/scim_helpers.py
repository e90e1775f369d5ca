"""SCimilarity test helpers (imported by the tests as ``scim_helpers``): the official reference code and checkpoints in the published format.

The official ``scimilarity==0.4.1`` package is installed --no-deps; its ``__init__`` imports
modules whose dependencies are absent, so its files are loaded as a stand-alone package
(``_scimilarity_official``) without running that ``__init__``.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

OFFICIAL_PKG = "_scimilarity_official"


def official(module: str) -> Any:
    """A module of the installed official package (nn_models, utils, cell_annotation, …), or skip."""
    if OFFICIAL_PKG not in sys.modules:
        spec = importlib.util.find_spec("scimilarity")
        if spec is None or not spec.submodule_search_locations:
            pytest.skip(
                "the reference package scimilarity==0.4.1 is not installed (make install adds it)"
            )
        pkg = types.ModuleType(OFFICIAL_PKG)
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules[OFFICIAL_PKG] = pkg
    return importlib.import_module(f"{OFFICIAL_PKG}.{module}")


def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Give every parameter and BatchNorm buffer non-trivial random values (eval mode uses them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(int(torch.randint(1, 10_000, (1,), generator=g)))
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 1.5 + 0.25)
            elif name.endswith(".3.weight") and t.numel() == 1:  # PReLU slope
                t.copy_(torch.rand(t.shape, generator=g) * 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            else:
                scale = 1.0 / max(t.shape[-1], 1) ** 0.5 if t.ndim == 2 else 0.1
                t.copy_(torch.randn(t.shape, generator=g) * scale)


def write_official_checkpoint(
    folder: Path,
    genes: list[str],
    hidden: list[int],
    latent: int,
    *,
    seed: int = 0,
    labels: dict[int, str] | None = None,
    decoder: bool = True,
    hyperparameters: bool = True,
) -> Path:
    """A random-weight model folder written the way the official training code writes it."""
    nn_models = official("nn_models")
    folder.mkdir(parents=True, exist_ok=True)
    enc = nn_models.Encoder(len(genes), latent_dim=latent, hidden_dim=hidden)
    randomize_(enc, seed)
    enc.save_state(str(folder / "encoder.ckpt"))
    if decoder:
        dec = nn_models.Decoder(len(genes), latent_dim=latent, hidden_dim=list(reversed(hidden)))
        randomize_(dec, seed + 1)
        dec.save_state(str(folder / "decoder.ckpt"))
    sd = enc.state_dict()
    (folder / "layer_sizes.json").write_text(json.dumps({k: list(sd[k].size()) for k in sd}))
    (folder / "gene_order.tsv").write_text("\n".join(genes))
    labels = labels if labels is not None else {0: "T cell", 1: "B cell", 2: "natural killer cell"}
    pd.Series(labels).to_csv(folder / "label_ints.csv", quoting=csv.QUOTE_NONNUMERIC)
    if hyperparameters:
        hp = {
            "latent_dim": latent,
            "hidden_dim": hidden,
            "dropout": 0.5,
            "input_dropout": 0.4,
            "margin": 0.05,
            "triplet_loss_weight": 0.001,
            "negative_selection": "semihard",
            "sample_across_studies": True,
            "perturb_labels": False,
            "perturb_labels_fraction": 0.5,
            "lr": 0.005,
            "l1_lambda": 0.0001,
            "l2_lambda": 0.01,
            "batch_size": 1000,
            "max_epochs": 500,
        }
        (folder / "hyperparameters.json").write_text(json.dumps(hp))
    return folder


def synthetic_genes(n: int) -> list[str]:
    return sorted(f"GENE{i:05d}" for i in range(n))


def real_gene_order(shared_dir: Path) -> list[str]:
    return (shared_dir / "vocab" / "scimilarity" / "gene_order.tsv").read_text().split("\n")


def lognorm_rows(rng: np.random.Generator, n: int, g: int) -> np.ndarray:
    counts = rng.poisson(rng.gamma(0.5, 2.0, (n, g))).astype(np.float32)
    tot = counts.sum(1, keepdims=True)
    return np.log1p(np.divide(counts, tot, out=np.zeros_like(counts), where=tot > 0) * 1e4)
