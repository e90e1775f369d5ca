"""LoRA vs full fine-tuning per family at realistic shapes (random weights): trainable-parameter
share, epoch time and peak memory.

Each (family, method) runs in its own subprocess so that the peak resident memory
(``resource.getrusage``) belongs to that configuration alone. One "epoch" is a pass over
``--cells`` real PBMC 3k cells with the training loop's own pieces (collate, differentiable
embedding, cross-entropy + triplet + reconstruction, AdamW step); one warm-up batch is not timed.

Shapes: Geneformer V1-10M (6 layers, 256 hidden, the real 25,424-gene V1 vocabulary);
scGPT whole-human width (512, 8 heads, d_hid 512, the 60,694-gene census vocabulary) at reduced
depth (``--scgpt-layers``, 12 in the release) to fit this CPU; SCimilarity v1.1 (28,231 genes,
1024x3 hidden, 128 latent). Targets: LoRA share <= 2 % of parameters, epoch time LoRA/full <= 0.6.

    .venv/bin/python benchmarks/bench_lora.py [--families geneformer,scgpt,scimilarity] [--cells 64]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def _pbmc_cells(n: int):
    import anndata as ad
    import numpy as np

    adata = ad.read_h5ad(SHARED / "data" / "pbmc3k_labeled_counts.h5ad")
    idx = np.random.default_rng(0).choice(adata.n_obs, n, replace=False)
    sub = adata[np.sort(idx)].copy()
    sub.var["gene_ids"] = list(sub.var_names)
    sub.var_names = [str(s) for s in sub.var["gene_symbols"]]
    sub.var_names_make_unique()
    return sub


def _backbone(family: str, scgpt_layers: int):
    from cellfoundry.models.foundation import foundation_class
    from cellfoundry.models.safe_pickle import safe_load_pickle
    from cellfoundry.tuning.backbone import FoundationBackbone

    cls = foundation_class(family)
    if family == "geneformer":
        tok = safe_load_pickle(SHARED / "vocab" / "geneformer_v1" / "token_dictionary.pkl")
        genes = [g for g in tok if not str(g).startswith("<")]
        fm = cls.from_random(genes, variant="Geneformer-V1-10M", seed=0)
    elif family == "scgpt":
        import cellfoundry.models.scgpt.model as sm

        sm.VARIANTS["whole-human-reduced"] = dict(sm.VARIANTS["whole-human"], nlayers=scgpt_layers)
        genes = list(
            json.loads((SHARED / "vocab" / "scgpt" / "default_census_vocab.json").read_text())
        )
        fm = cls.from_random(genes, variant="whole-human-reduced", seed=0)
    else:
        genes = (SHARED / "vocab" / "scimilarity" / "gene_order.tsv").read_text().split("\n")
        fm = cls.from_random([g.strip() for g in genes if g.strip()], variant="model_v1.1", seed=0)
    return FoundationBackbone(fm)


def run_one(family: str, method: str, n_cells: int, batch_size: int, scgpt_layers: int) -> dict:
    import numpy as np
    import torch

    from cellfoundry.tuning.heads import ClassifierHead
    from cellfoundry.tuning.lora import apply_lora, count_parameters
    from cellfoundry.tuning.losses import cross_entropy, embedding_anchor_loss, triplet_loss

    torch.manual_seed(0)
    adata = _pbmc_cells(n_cells + batch_size)
    bb = _backbone(family, scgpt_layers)
    cells = bb.tokenize(adata)
    y = torch.tensor(
        adata.obs["cell_type"].astype("category").cat.codes.to_numpy(), dtype=torch.long
    )
    n_classes = int(y.max()) + 1
    head = ClassifierHead(bb.embedding_dim, n_classes)
    if method == "lora":
        apply_lora(
            bb.network,
            bb.default_lora_targets,
            strict=False,
            probe=(bb.embed, bb.collate(cells[:8])),
        )
        params = [p for p in bb.network.parameters() if p.requires_grad]
        bb.network.eval()
    else:
        for p in bb.network.parameters():
            p.requires_grad = True
        params = list(bb.network.parameters())
        bb.network.train()
    count = count_parameters(bb.network)
    opt = torch.optim.AdamW([*params, *head.parameters()], lr=1e-4)
    base = torch.zeros(len(cells), bb.embedding_dim)

    def step(idx: np.ndarray) -> None:
        batch = bb.collate([cells[i] for i in idx])
        emb = bb.embed(batch)
        recon = bb.reconstruction_loss(batch, emb)
        if recon is None:
            recon = embedding_anchor_loss(emb, base[idx])
        loss = cross_entropy(head(emb), y[idx]) + 0.1 * triplet_loss(emb, y[idx]) + 0.1 * recon
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(np.arange(n_cells, n_cells + batch_size))  # warm-up, not timed
    t0 = time.perf_counter()
    for s in range(0, n_cells, batch_size):
        step(np.arange(s, min(s + batch_size, n_cells)))
    secs = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "family": family,
        "method": method,
        "trainable": count.trainable,
        "total": count.total,
        "share": count.share,
        "epoch_seconds": secs,
        "cells": n_cells,
        "peak_rss_mib": peak_mib,
        "name": bb.name,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--families", default="geneformer,scgpt,scimilarity")
    ap.add_argument("--cells", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--scgpt-layers", type=int, default=4)
    ap.add_argument("--one", nargs=2, metavar=("FAMILY", "METHOD"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_one(a.one[0], a.one[1], a.cells, a.batch_size, a.scgpt_layers)))
        return
    if not (SHARED / "data").is_dir():
        sys.exit(
            f"needs the real data folder {SHARED} (PBMC 3k cells and the published vocabularies)"
        )
    rows = []
    for fam in a.families.split(","):
        res = {}
        for method in ("full", "lora"):
            cmd = [
                sys.executable,
                __file__,
                "--one",
                fam,
                method,
                "--cells",
                str(a.cells),
                "--batch-size",
                str(a.batch_size),
                "--scgpt-layers",
                str(a.scgpt_layers),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(f"{fam}/{method} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            res[method] = json.loads(out.stdout.strip().splitlines()[-1])
        if len(res) == 2:
            lo, fu = res["lora"], res["full"]
            rows.append(
                {
                    "family": fam,
                    "model": lo["name"],
                    "total_params": fu["total"],
                    "lora_trainable": lo["trainable"],
                    "lora_share": lo["trainable"] / fu["total"],
                    "full_trainable": fu["trainable"],
                    "epoch_s_lora": lo["epoch_seconds"],
                    "epoch_s_full": fu["epoch_seconds"],
                    "time_ratio": lo["epoch_seconds"] / fu["epoch_seconds"],
                    "peak_mib_lora": lo["peak_rss_mib"],
                    "peak_mib_full": fu["peak_rss_mib"],
                }
            )
    print(
        f"{'family':<12} {'params':>11} {'LoRA train':>10} {'share':>7} {'epoch LoRA':>10} {'epoch full':>10} "
        f"{'ratio':>6} {'peak LoRA':>10} {'peak full':>10}"
    )
    for r in rows:
        print(
            f"{r['family']:<12} {r['total_params']:>11,} {r['lora_trainable']:>10,} {r['lora_share']:>7.2%} "
            f"{r['epoch_s_lora']:>9.1f}s {r['epoch_s_full']:>9.1f}s {r['time_ratio']:>6.2f} "
            f"{r['peak_mib_lora']:>8.0f}Mi {r['peak_mib_full']:>8.0f}Mi"
        )
    print(
        f"targets: LoRA share <= 2 % of parameters; epoch time ratio LoRA/full <= 0.6 "
        f"({a.cells} cells per epoch, batch {a.batch_size}, scGPT at {a.scgpt_layers} layers)"
    )
    print(json.dumps(rows))
    # keep the latest measured row of every family in one results file
    dest = Path(__file__).resolve().parent / "results" / "lora.json"
    stored = json.loads(dest.read_text()) if dest.is_file() else {}
    by_family = {r["family"]: r for r in stored.get("rows", [])}
    note = f"--cells {a.cells} --batch-size {a.batch_size} --scgpt-layers {a.scgpt_layers}"
    for r in rows:
        by_family[r["family"]] = r | {"note": note, "load_average_1min": os.getloadavg()[0]}
    dest.write_text(
        json.dumps(
            {
                "command": "benchmarks/bench_lora.py (arguments per row)",
                "rows": list(by_family.values()),
            },
            indent=2,
        )
    )
    print(f"written {dest}")


if __name__ == "__main__":
    main()
