"""Peak memory of `cellfoundry embed` as the number of cells grows (streaming check).

Builds two datasets by multinomial resampling of the real PBMC 3k counts (N and 4N cells), embeds
each with `cellfoundry embed` (a random-weight SCimilarity over the real 28,231-gene order: the
memory behaviour does not depend on the weights) in a fresh process, and reports the peak RSS.
Reference measured in the same run: peak RSS of a process that merely loads the large dataset
into memory (`anndata.read_h5ad`). Streaming means the embed peak grows by about the size of the
output embeddings, not with the input matrix.

    .venv/bin/python benchmarks/bench_embed_streaming.py [--cells 5000] [--shared ../shared]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]


def resample(src: ad.AnnData, n: int, seed: int) -> ad.AnnData:
    """``n`` cells, each a multinomial resample of a random real cell's counts (same depth)."""
    rng = np.random.default_rng(seed)
    x = sp.csr_matrix(src.X)
    pick = rng.integers(0, src.n_obs, n)
    rows, cols, vals = [], [], []
    for i, j in enumerate(pick):
        lo, hi = x.indptr[j], x.indptr[j + 1]
        counts = x.data[lo:hi].astype(np.float64)
        draw = rng.multinomial(int(counts.sum()), counts / counts.sum())
        keep = draw > 0
        rows.append(np.full(int(keep.sum()), i, dtype=np.int32))
        cols.append(x.indices[lo:hi][keep])
        vals.append(draw[keep].astype(np.float32))
    m = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, src.n_vars)
    )
    out = ad.AnnData(X=m, var=src.var.copy())
    out.obs_names = [f"cell{i}" for i in range(n)]
    out.obs["source_cell"] = src.obs_names[pick].to_numpy()
    return out


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd`` in a fresh process; (its peak RSS in MiB, wall seconds)."""
    script = (
        "import resource, subprocess, sys, json;"
        "t=__import__('time').time();"
        f"r=subprocess.run({cmd!r}, capture_output=True, text=True);"
        "w=__import__('time').time()-t;"
        "sys.stderr.write(r.stderr[-2000:] if r.returncode else '');"
        "print(json.dumps([r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, w]))"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    code, kb, wall = json.loads(res.stdout.strip().splitlines()[-1])
    if code:
        raise SystemExit(f"command failed ({code}): {' '.join(cmd)}\n{res.stderr}")
    return kb / 1024.0, float(wall)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cells", type=int, default=5000, help="N (the large set has 4N cells)")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = ap.parse_args()
    from cellfoundry.models.scimilarity import SCimilarityModel

    src = ad.read_h5ad(args.shared / "data" / "pbmc3k_labeled_counts.h5ad")
    genes = (args.shared / "vocab" / "scimilarity" / "gene_order.tsv").read_text().split("\n")
    cli = str(ROOT / ".venv" / "bin" / "cellfoundry")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        model = SCimilarityModel.from_random(genes, seed=0)
        model.save(d / "ckpt")
        dim = model.embedding_dim
        results = {}
        for n in (args.cells, 4 * args.cells):
            path = d / f"cells_{n}.h5ad"
            a = resample(src, n, seed=n)
            a.write_h5ad(path)
            nnz = a.X.nnz
            del a
            out = d / f"emb_{n}.h5ad"
            rss, wall = peak_rss_mb(
                [
                    cli,
                    "embed",
                    str(path),
                    "--model",
                    str(d / "ckpt"),
                    "--out",
                    str(out),
                    "--batch-size",
                    "256",
                ]
            )
            results[n] = (rss, wall, nnz)
            print(
                f"embed {n:>7,} cells ({nnz:,} non-zeros): peak RSS {rss:8.1f} MiB, "
                f"{wall:6.1f} s, {n / wall:7.1f} cells/s"
            )
        big, small = 4 * args.cells, args.cells
        ref = {}
        for n in (small, big):
            ref[n], _ = peak_rss_mb(
                [
                    sys.executable,
                    "-c",
                    f"import anndata; anndata.read_h5ad({str(d / f'cells_{n}.h5ad')!r})",
                ]
            )
            print(f"reference: loading the {n:,}-cell file into memory: peak RSS {ref[n]:.1f} MiB")
        grow = results[big][0] - results[small][0]
        ref_grow = ref[big] - ref[small]
        emb_mb = (big - small) * dim * 4 / 2**20
        print(
            f"peak RSS growth for +{big - small:,} cells: embed {grow:.1f} MiB "
            f"(its output embeddings grow by {emb_mb:.1f} MiB), in-memory load {ref_grow:.1f} MiB"
        )
        print(f"ratio of growths embed / in-memory load: {grow / ref_grow:.3f}")
        print(f"(measured {time.strftime('%Y-%m-%d %H:%M:%S')}; 2-core shared machine)")


if __name__ == "__main__":
    main()
