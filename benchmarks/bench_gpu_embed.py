"""Foundation-model embedding on a GPU, checked against the CPU path (nothing requires a GPU).

Random-weight Geneformer-V1-10M and scGPT whole-human (published shapes) over real PBMC 3k cells.
Each family embeds ``--cells`` cells on the CPU in float32 (the reference), then, when torch sees
a CUDA GPU, on the GPU in fp32, bf16 and fp16 autocast (SDPA attention, length-sorted batches;
scGPT packs cells without padding). Prints cells/s per run and the agreement with the CPU path:

* fp32 on the GPU: max |diff| <= 1e-4 (TF32 matmuls are off by default in torch);
* bf16 / fp16: the lowest per-cell cosine similarity >= 0.99.

Without a CUDA GPU it says so and prints the CPU figures only; with one it writes
``benchmarks/results/gpu_embed.json``.

    .venv/bin/python benchmarks/bench_gpu_embed.py [--cells 512] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CELLFOUNDRY_SHARED", ROOT.parent / "shared")).resolve()
RESULTS = ROOT / "benchmarks" / "results" / "gpu_embed.json"
TOLERANCE = {
    "fp32": ("max_abs_diff", 1e-4),
    "bf16": ("min_cosine", 0.99),
    "fp16": ("min_cosine", 0.99),
}


def models(adata: ad.AnnData) -> dict[str, Any]:
    from cellfoundry.models.geneformer import GeneformerModel
    from cellfoundry.models.scgpt import ScGPTModel

    symbols = [str(s) for s in adata.var["gene_symbols"]]
    return {
        "geneformer": GeneformerModel.from_random(
            list(adata.var_names), variant="Geneformer-V1-10M", seed=0
        ),
        "scgpt": ScGPTModel.from_random(
            list(dict.fromkeys(symbols)), variant="whole-human", seed=0
        ),
    }


def timed(
    model: Any, adata: ad.AnnData, batch_size: int, device: str, precision: str
) -> tuple[np.ndarray, float]:
    model.embed(
        adata[:8].copy(), batch_size=batch_size, device=device, precision=precision
    )  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    emb = np.asarray(model.embed(adata, batch_size=batch_size, device=device, precision=precision))
    if device == "cuda":
        torch.cuda.synchronize()
    return emb, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    pbmc = ad.read_h5ad(SHARED / "data" / "pbmc3k_labeled_counts.h5ad")
    cells = pbmc[: min(args.cells, pbmc.n_obs)].copy()
    cuda = torch.cuda.is_available()
    gpu = torch.cuda.get_device_name(0) if cuda else None
    print(
        f"torch {torch.__version__}; CUDA GPU: {gpu or 'none'}; cells {cells.n_obs}; load avg {os.getloadavg()[0]:.1f}"
    )
    if not cuda:
        print(
            "no CUDA GPU (torch.cuda.is_available() is False): GPU figures not measured, CPU only"
        )
    results: dict[str, Any] = {"gpu": gpu, "cells": cells.n_obs, "families": {}}
    for family, model in models(cells).items():
        ref, secs = timed(model, cells, args.batch_size, "cpu", "fp32")
        rows = {"cpu_fp32": {"cells_per_s": cells.n_obs / secs}}
        print(f"{family:<10} cpu  fp32: {cells.n_obs / secs:9.1f} cells/s")
        for precision in ("fp32", "bf16", "fp16") if cuda else ():
            emb, secs = timed(model, cells, args.batch_size, "cuda", precision)
            cos = (emb * ref).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(ref, axis=1)
            row = {
                "cells_per_s": cells.n_obs / secs,
                "max_abs_diff": float(np.abs(emb - ref).max()),
                "min_cosine": float(cos.min()),
            }
            metric, bound = TOLERANCE[precision]
            ok = row[metric] <= bound if metric == "max_abs_diff" else row[metric] >= bound
            row["within_tolerance"] = bool(ok)
            rows[f"cuda_{precision}"] = row
            print(
                f"{family:<10} cuda {precision}: {row['cells_per_s']:9.1f} cells/s, max |diff| "
                f"{row['max_abs_diff']:.2e}, min cosine {row['min_cosine']:.5f} "
                f"({metric} {'<=' if metric == 'max_abs_diff' else '>='} {bound}: {'OK' if ok else 'OUT'})"
            )
        results["families"][family] = rows
    if cuda:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
