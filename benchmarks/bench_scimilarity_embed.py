"""SCimilarity embedding throughput on CPU: cellfoundry vs the official pipeline.

Builds a random-weight checkpoint folder with the published model_v1.1 shapes (28,231 genes ->
1024x3 -> 128, real gene order from ``../shared/vocab/scimilarity``), then embeds real PBMC 3k
cells (raw counts, optionally resampled to more cells) with

(a) the official pipeline of ``scimilarity==0.4.1``: ``align_dataset`` -> ``lognorm_counts``
    (scanpy) -> ``CellEmbedding.get_embeddings`` (chunks of 10,000 cells, inference mode);
(b) ``SCimilarityModel.embed`` (streamed row chunks, alignment + log1p-CP10k per chunk).

Both start from the same in-memory AnnData of raw counts. Prints cells/s of both, their ratio
and the max abs difference of the embeddings.

    .venv/bin/python benchmarks/bench_scimilarity_embed.py [--cells 2638] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CELLFOUNDRY_SHARED", ROOT.parent / "shared")).resolve()


def official(module: str) -> types.ModuleType:
    """A module of the installed scimilarity package, without running its ``__init__``."""
    name = "_scimilarity_official"
    if name not in sys.modules:
        spec = importlib.util.find_spec("scimilarity")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(
                "needs the reference package: pip install --no-deps scimilarity==0.4.1"
            )
        pkg = types.ModuleType(name)
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules[name] = pkg
    return importlib.import_module(f"{name}.{module}")


def resample(adata: ad.AnnData, n: int, seed: int = 0) -> ad.AnnData:
    """``n`` cells: the real cells, then multinomial resamples of random real cells (same depth)."""
    x = sp.csr_matrix(adata.X, dtype=np.float32)
    if n <= x.shape[0]:
        return ad.AnnData(X=x[:n].copy(), var=adata.var.copy())
    rng = np.random.default_rng(seed)
    rows = [x]
    pick = rng.integers(0, x.shape[0], n - x.shape[0])
    extra = []
    for i in pick:
        r = x[i]
        p = r.data / r.data.sum()
        extra.append(
            sp.csr_matrix(
                (rng.multinomial(int(r.data.sum()), p).astype(np.float32), r.indices, [0, r.nnz]),
                shape=(1, x.shape[1]),
            )
        )
    rows.append(sp.vstack(extra, format="csr"))
    return ad.AnnData(X=sp.vstack(rows, format="csr"), var=adata.var.copy())


def official_embed(folder: Path, adata: ad.AnnData) -> np.ndarray:
    """align_dataset -> lognorm_counts -> CellEmbedding.get_embeddings, as the tutorial does."""
    utils = official("utils")
    ce = official("cell_embedding").CellEmbedding(str(folder))
    q = ad.AnnData(X=adata.X.copy(), var=pd.DataFrame(index=adata.var["gene_symbols"].tolist()))
    q.layers["counts"] = q.X.copy()
    q = utils.lognorm_counts(utils.align_dataset(q, ce.gene_order))
    return np.asarray(ce.get_embeddings(sp.csr_matrix(q.X)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--cells", type=int, default=2638, help="cells (beyond 2,638: resampled real cells)"
    )
    ap.add_argument("--batch-size", type=int, default=256, help="cellfoundry forward batch size")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of each (best is reported)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import zarr

    if not hasattr(getattr(zarr, "core", None), "Array"):  # official code targets zarr<3
        zarr.core.Array = type("_NoZarrArray", (), {})  # type: ignore[attr-defined]

    from cellfoundry.models.scimilarity import SCimilarityModel

    data = SHARED / "data" / "pbmc3k_labeled_counts.h5ad"
    order = SHARED / "vocab" / "scimilarity" / "gene_order.tsv"
    if not data.is_file() or not order.is_file():
        raise SystemExit(f"needs {data} and {order} (the shared folder)")
    genes = order.read_text().split("\n")
    adata = resample(ad.read_h5ad(data), args.cells)
    with tempfile.TemporaryDirectory() as tmp:
        folder = SCimilarityModel.from_random(genes, variant="model_v1.1", seed=0).save(
            Path(tmp) / "m"
        )
        model = SCimilarityModel.load(folder)
        print(
            f"model {model.variant} ({model.load_report.variant}); cells {adata.n_obs}; "
            f"torch threads {torch.get_num_threads()}; cpu count {os.cpu_count()}; "
            f"load avg {os.getloadavg()[0]:.1f}"
        )
        warm = adata[:64].copy()
        official_embed(folder, warm)  # scanpy/numba compilation is not timed
        model.embed(warm, batch_size=args.batch_size)
        t_ref, t_ours = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ref = official_embed(folder, adata)
            t_ref.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ours = model.embed(adata, batch_size=args.batch_size)
            t_ours.append(time.perf_counter() - t0)
    n = adata.n_obs
    ref_rate, ours_rate = n / min(t_ref), n / min(t_ours)
    diff = float(np.abs(ours - ref).max())
    print(
        f"official (align_dataset + lognorm_counts + get_embeddings, 10k chunks): "
        f"{ref_rate:.1f} cells/s ({min(t_ref):.2f} s, runs {[round(t, 2) for t in t_ref]})"
    )
    print(
        f"cellfoundry (streamed chunks, batch {args.batch_size}): "
        f"{ours_rate:.1f} cells/s ({min(t_ours):.2f} s, runs {[round(t, 2) for t in t_ours]})"
    )
    print(f"ratio: {ours_rate / ref_rate:.2f}x   max abs diff: {diff:.2e} (tolerance 1e-5)")


if __name__ == "__main__":
    main()
