"""Geneformer embedding throughput on CPU: cellfoundry vs the reference pipeline.

Builds a random-weight checkpoint with the published Geneformer-V1-10M shapes and the real gc30M
dictionaries (``../shared/vocab/geneformer_v1``), then embeds real PBMC 3k cells with

(a) the reference pipeline of the official EmbExtractor: cells in their original order, a fixed
    batch size, padding to the longest cell of each batch, eager attention,
    ``BertForMaskedLM(output_hidden_states=True)``, mean of the gene tokens of the
    second-to-last layer;
(b) ``GeneformerModel.embed`` (length-sorted token-budget batches cut where padding costs more
    than a pass, SDPA, inference mode, oneDNN-packed GEMM weights, only the layers the
    embedding needs).

Prints cells/s of both, their wall-clock and CPU-time ratios measured in the same run (target
>= 10x, issue #11 §4) and the max abs difference on the cells both embedded (tolerance 1e-5);
writes them to ``--out`` (default benchmarks/results/geneformer_embed.json).

    .venv/bin/python benchmarks/bench_geneformer_embed.py [--ref-cells 48] [--cells 384]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch

from results_io import RESULTS, write_result

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CELLFOUNDRY_SHARED", ROOT.parent / "shared")).resolve()


def build_v1_10m(folder: Path, vocab: Path, seed: int = 0) -> Path:
    """Random weights, published V1-10M tensor set (incl. position_ids), real dictionaries."""
    from safetensors.torch import save_file
    from transformers import BertConfig, BertForMaskedLM

    cfg = json.loads((vocab / "config_6L.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    torch.manual_seed(seed)
    keep = {k: v for k, v in cfg.items() if k not in ("architectures", "transformers_version")}
    net = BertForMaskedLM(BertConfig(**keep))
    sd = {
        k: v.contiguous()
        for k, v in net.state_dict().items()
        if not k.startswith("cls.predictions.decoder.") and not k.endswith("position_ids")
    }
    sd["bert.embeddings.position_ids"] = torch.arange(cfg["max_position_embeddings"])[None, :]
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    for name in ("token_dictionary", "gene_median_dictionary", "gene_name_id_dict"):
        (folder / f"{name}.pkl").write_bytes((vocab / f"{name}.pkl").read_bytes())
    return folder


def reference_tokens(adata: ad.AnnData, token_dict: dict, medians: dict) -> list[np.ndarray]:
    """TranscriptomeTokenizer (V1): rank genes by count / n_counts * 1e4 / median, first 2048."""
    ids = [str(e).upper() for e in adata.var_names]
    loc = np.array([i for i, e in enumerate(ids) if e in token_dict])
    norm = np.array([medians[ids[i]] for i in loc], dtype=np.float64)
    toks = np.array([int(token_dict[ids[i]]) for i in loc])
    x = sp.csr_matrix(adata.X, dtype=np.float64)
    n_counts = np.asarray(x.sum(axis=1)).ravel()
    xv = x[:, loc].tocsr()
    out = []
    for r in range(x.shape[0]):
        row = xv[r].toarray().ravel() / n_counts[r] * 10_000 / norm
        nz = np.nonzero(row)[0]
        out.append(toks[nz][np.argsort(-row[nz])][:2048])
    return out


def reference_embed(folder: Path, adata: ad.AnnData, batch_size: int) -> np.ndarray:
    """The official embedding pipeline (EmbExtractor, V1, emb_layer=-1, emb_mode='cell')."""
    import pickle

    from transformers import BertForMaskedLM

    # our own freshly copied official dictionaries (trusted files)
    token_dict = pickle.loads((folder / "token_dictionary.pkl").read_bytes())
    medians = pickle.loads((folder / "gene_median_dictionary.pkl").read_bytes())
    model = BertForMaskedLM.from_pretrained(
        str(folder), output_hidden_states=True, attn_implementation="eager"
    ).eval()
    layer = model.config.num_hidden_layers - 1
    seqs = reference_tokens(adata, token_dict, medians)
    embs = []
    with torch.no_grad():
        for i in range(0, len(seqs), batch_size):
            batch = seqs[i : i + batch_size]
            width = max(len(s) for s in batch)
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for j, s in enumerate(batch):
                ids[j, : len(s)] = torch.from_numpy(s.astype(np.int64))
                mask[j, : len(s)] = 1
            h = model(input_ids=ids, attention_mask=mask).hidden_states[layer]
            for j, s in enumerate(batch):
                embs.append(h[j, : len(s)].mean(dim=0).numpy())
    return np.stack(embs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref-cells", type=int, default=48, help="cells for the (slow) reference")
    ap.add_argument("--cells", type=int, default=384, help="cells for cellfoundry")
    ap.add_argument("--ref-batch-size", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=RESULTS / "geneformer_embed.json")
    args = ap.parse_args()

    from cellfoundry.models.geneformer import GeneformerModel
    from cellfoundry.models.geneformer.model import DEFAULT_MAX_TOKENS

    if args.threads:
        torch.set_num_threads(args.threads)
    vocab = SHARED / "vocab" / "geneformer_v1"
    data = SHARED / "data" / "pbmc3k_labeled_counts.h5ad"
    if not vocab.is_dir() or not data.is_file():
        raise SystemExit(f"needs {vocab} and {data} (the shared folder)")
    adata = ad.read_h5ad(data)
    n = min(args.cells, adata.n_obs)
    n_ref = min(args.ref_cells, n)
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_v1_10m(Path(tmp) / "Geneformer-V1-10M", vocab)
        model = GeneformerModel.load(folder)
        print(
            f"model {model.variant}; torch threads {torch.get_num_threads()}; "
            f"cpu count {os.cpu_count()}; load avg {os.getloadavg()[0]:.1f}"
        )
        max_tokens = args.max_tokens or DEFAULT_MAX_TOKENS
        ours_in = adata[:n].copy()
        c0, t0 = time.process_time(), time.perf_counter()
        ours = model.embed(ours_in, batch_size=args.batch_size, max_tokens=max_tokens)
        t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
        ref_in = adata[:n_ref].copy()
        c0, t0 = time.process_time(), time.perf_counter()
        ref = reference_embed(folder, ref_in, args.ref_batch_size)
        t_ref, c_ref = time.perf_counter() - t0, time.process_time() - c0
        load_after = os.getloadavg()[0]
    lengths = [len(s) for s in model.tokenizer.tokenize(ours_in)]
    ours_rate = n / t_ours
    ref_rate = n_ref / t_ref
    diff = float(np.abs(ours[:n_ref] - ref).max())
    print(
        f"cells: ours {n}, reference {n_ref}; mean tokens/cell {np.mean(lengths):.0f}, "
        f"max {max(lengths)}"
    )
    print(
        f"reference (eager, pad to longest, batch {args.ref_batch_size}, MLM head): "
        f"{ref_rate:.2f} cells/s ({t_ref:.1f} s)"
    )
    print(
        f"cellfoundry (sorted, token budget {max_tokens}, batch ≤{args.batch_size}, SDPA): "
        f"{ours_rate:.2f} cells/s ({t_ours:.1f} s)"
    )
    print(f"ratio: {ours_rate / ref_rate:.1f}x   max abs diff: {diff:.2e} (tolerance 1e-5)")
    # on a shared machine wall time depends on other load; CPU time of this process is steadier
    cpu_ours, cpu_ref = n / c_ours, n_ref / c_ref
    print(
        f"per CPU-second: reference {cpu_ref:.2f} cells, cellfoundry {cpu_ours:.2f} cells, "
        f"ratio {cpu_ours / cpu_ref:.1f}x   (load avg at end {load_after:.1f})"
    )
    result = {
        "benchmark": "benchmarks/bench_geneformer_embed.py",
        "model": model.variant,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_avg_end": load_after,
        "tokens_per_cell_mean": float(np.mean(lengths)),
        "tokens_per_cell_max": int(max(lengths)),
        "ours": {"cells": n, "wall_s": t_ours, "cpu_s": c_ours, "cells_per_s": ours_rate,
                 "batch_size": args.batch_size, "max_tokens": max_tokens},
        "reference": {"cells": n_ref, "wall_s": t_ref, "cpu_s": c_ref, "cells_per_s": ref_rate,
                      "batch_size": args.ref_batch_size},
        "ratio_wall": ours_rate / ref_rate,
        "ratio_cpu": cpu_ours / cpu_ref,
        "target_ratio": 10.0,
        "max_abs_diff": diff,
        "tolerance": 1e-5,
    }  # fmt: skip
    write_result(args.out, result)


if __name__ == "__main__":
    main()
