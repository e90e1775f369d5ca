"""Peak RSS of `cellfoundry annotate` on a backed .h5ad with and without a big layer and kNN graph.

A million-cell file often carries `layers["counts"]` beside X and a neighbour graph in `obsp`.
anndata's backed reader loads layers/obsp/varm/varp into memory; `cellfoundry.data.io` keeps them
on disk. For each size N this benchmark takes the scale input of `bench_scale_annotate.py`
(real PBMC 3k cells resampled, `benchmarks/.data/pbmc_N.h5ad`) and makes a sibling with
`layers["counts"]` (an HDF5 group copy of X: as large as X, nothing decoded) and
`obsp["connectivities"]` (15 random neighbours per cell, CSR, written in chunks). Then, each in a
fresh process whose peak RSS and CPU time come from the kernel (`os.wait4`):

- bare: `annotate pbmc_N.h5ad --out labels.parquet`
- layers: the same on the file with the layer and graph
- layers, .h5ad out: `--out annotated.h5ad` (the input copied as bytes, layer and graph included)
- reference (sizes up to `--reference-max`): the layers run with anndata's backed reader
  (`anndata.read_h5ad(path, backed="r")`, which loads the layer and graph), measured in the same
  run for the ratio.

Prints the figures and writes `benchmarks/results/scale_layers.json`.

    .venv/bin/python benchmarks/bench_scale_layers.py [--sizes 100000 300000] [--clean]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from bench_scale_annotate import DATA, ROOT, ensure_inputs, run_measured
from results_io import write_result

RESULTS = ROOT / "benchmarks" / "results" / "scale_layers.json"
NEIGHBOURS = 15

# the CLI with anndata's own backed reader (layers/obsp/varm/varp loaded into memory)
ANNDATA_READER = """
import sys, anndata
import cellfoundry.data.io as io
io.read_h5ad_backed = lambda path: anndata.read_h5ad(path, backed="r")
from cellfoundry.cli import main
sys.argv = ["cellfoundry", *sys.argv[1:]]
main()
"""


def with_layer_and_graph(src: Path, n: int) -> Path:
    """``src`` + layers['counts'] (group copy of X) + obsp['connectivities'] (kNN-like CSR)."""
    out = DATA / f"{src.stem}_layers.h5ad"
    if out.exists():
        return out
    tmp = out.with_suffix(".tmp")
    print(f"making {out.name} ...", flush=True)
    shutil.copyfile(src, tmp)
    with h5py.File(tmp, "r+") as g:
        layers = g.require_group("layers")
        layers.attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})
        g.copy(g["X"], layers, name="counts")  # HDF5 object copy: stored chunks, not decoded
        obsp = g.require_group("obsp")
        obsp.attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})
        knn = obsp.create_group("connectivities")
        knn.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0"})
        knn.attrs["shape"] = (n, n)
        nnz = n * NEIGHBOURS
        data = knn.create_dataset("data", (nnz,), "float32", chunks=(min(nnz, 1 << 20),))
        ind = knn.create_dataset("indices", (nnz,), "int32", chunks=(min(nnz, 1 << 20),))
        knn.create_dataset("indptr", data=np.arange(n + 1, dtype=np.int64) * NEIGHBOURS)
        rng = np.random.default_rng(0)
        step = 100_000
        for s in range(0, n, step):
            m = min(step, n - s)
            cols = np.sort(rng.integers(0, n, (m, NEIGHBOURS), dtype=np.int32), axis=1)
            ind[s * NEIGHBOURS : (s + m) * NEIGHBOURS] = cols.ravel()
            data[s * NEIGHBOURS : (s + m) * NEIGHBOURS] = rng.random(m * NEIGHBOURS, np.float32)
    tmp.rename(out)
    return out


def stored_mib(path: Path, group: str) -> float:
    with h5py.File(path, "r") as f:
        sizes: list[int] = []
        f[group].visititems(
            lambda _, o: (
                sizes.append(o.id.get_storage_size()) if isinstance(o, h5py.Dataset) else None
            )
        )
    return sum(sizes) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument(
        "--reference-max",
        type=int,
        default=300_000,
        help="largest size run with anndata's reader (it loads the whole layer)",
    )
    ap.add_argument("--clean", action="store_true", help="delete the made inputs afterwards")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes")
    args = ap.parse_args()
    sizes = sorted(args.sizes)
    files, model = ensure_inputs(args.shared, sizes)
    cli = [sys.executable, "-m", "cellfoundry.cli", "annotate"]
    ref = [sys.executable, "-c", ANNDATA_READER, "annotate"]
    load_before = os.getloadavg()
    rows = []
    for n in sizes:
        layered = with_layer_and_graph(files[n], n)
        row: dict[str, float | int] = {
            "cells": n,
            "x_stored_mib": stored_mib(files[n], "X"),
            "layer_stored_mib": stored_mib(layered, "layers"),
            "obsp_stored_mib": stored_mib(layered, "obsp"),
        }
        parquet, h5ad = DATA / f"labels_{n}.parquet", DATA / f"annotated_{n}.h5ad"
        runs = [
            ("bare", [*cli, str(files[n]), "--model", str(model), "--out", str(parquet)]),
            ("layers", [*cli, str(layered), "--model", str(model), "--out", str(parquet)]),
            ("layers_h5ad_out", [*cli, str(layered), "--model", str(model), "--out", str(h5ad)]),
        ]
        if n <= args.reference_max:
            runs.append(
                (
                    "anndata_reader",
                    [*ref, str(layered), "--model", str(model), "--out", str(parquet)],
                )
            )
        for name, cmd in runs:
            wall, rss, cpu = run_measured(cmd)
            row[f"{name}_peak_rss_mib"], row[f"{name}_cpu_seconds"] = rss, cpu
            row[f"{name}_seconds"] = wall
            for p in (parquet, h5ad):
                p.unlink(missing_ok=True)
        rows.append(row)
        line = (
            f"{n:>9,} cells (X {row['x_stored_mib']:.0f} MiB, layer {row['layer_stored_mib']:.0f} "
            f"MiB, obsp {row['obsp_stored_mib']:.0f} MiB stored): peak RSS bare "
            f"{row['bare_peak_rss_mib']:.0f} MiB, with layer+graph {row['layers_peak_rss_mib']:.0f} "
            f"MiB (.h5ad out {row['layers_h5ad_out_peak_rss_mib']:.0f} MiB); CPU "
            f"{row['bare_cpu_seconds']:.1f} s / {row['layers_cpu_seconds']:.1f} s"
        )
        if "anndata_reader_peak_rss_mib" in row:
            line += (
                f" | anndata's reader {row['anndata_reader_peak_rss_mib']:.0f} MiB "
                f"({row['anndata_reader_peak_rss_mib'] / row['layers_peak_rss_mib']:.2f}x), CPU "
                f"{row['anndata_reader_cpu_seconds']:.1f} s"
            )
        print(line, flush=True)
    load_after = os.getloadavg()
    summary: dict[str, object] = {
        "rows": rows,
        "what": "cellfoundry annotate (logreg, PBMC) peak RSS; layers = + layers['counts'] "
        f"(copy of X) + obsp kNN graph ({NEIGHBOURS} neighbours); anndata_reader = the same "
        "with anndata.read_h5ad(backed='r'), which loads layers/obsp",
        "layer_cost_mib": [r["layers_peak_rss_mib"] - r["bare_peak_rss_mib"] for r in rows],
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
        "cpu_count": os.cpu_count(),
        "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(f"load average before {load_before}, after {load_after} ({os.cpu_count()} CPUs)")
    write_result(args.results, summary)
    if args.clean:
        for n in sizes:
            (DATA / f"{files[n].stem}_layers.h5ad").unlink(missing_ok=True)
            files[n].unlink()


if __name__ == "__main__":
    main()
