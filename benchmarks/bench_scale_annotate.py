"""`cellfoundry annotate` at 100k / 300k / 1M cells: wall time, peak RSS, linearity, flatness.

Inputs are made by `../shared/tools/make_scale_h5ad.py` (real PBMC 3k cells resampled by
multinomial at each cell's own depth; 1M cells x 32,738 genes is about 5 GB) and cached under
`benchmarks/.data/` (gitignored; `--clean` deletes them afterwards). The model is the
logistic-regression baseline trained on PBMC 3k (cached there too).

Each run is `cellfoundry annotate FILE --model M --out OUT` in a fresh process; its wall time and
peak RSS come from the kernel (`os.wait4` of that child). Two outputs per size: an annotated
`.h5ad` (the input copied as bytes + obs/obsm/uns) and a predictions-only `.parquet`.
Reference measured in the same run: the previous path, which loads the file into memory,
annotates it and writes `result.to_adata(adata).write_h5ad(out, compression="gzip")`, on the
smallest size. Prints the figures, the R² of time vs cells, the RSS spread, and the ratios, and
writes `benchmarks/results/scale_annotate.json`.

    .venv/bin/python benchmarks/bench_scale_annotate.py [--sizes 100000 300000 1000000] [--clean]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from results_io import write_result

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / ".data"
RESULTS = ROOT / "benchmarks" / "results" / "scale_annotate.json"

OLD_PATH = """
import sys, anndata as ad, cellfoundry as cf
adata = ad.read_h5ad(sys.argv[1])
result = cf.annotate(adata, sys.argv[2])
result.to_adata(adata).write_h5ad(sys.argv[3], compression="gzip")
"""


def run_measured(cmd: list[str]) -> tuple[float, float, float]:
    """Run ``cmd``; (wall seconds, peak RSS in MiB, CPU seconds user+system) of that process."""
    with tempfile.TemporaryFile("w+") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code:
            log.seek(0)
            raise SystemExit(f"failed ({code}): {' '.join(cmd)}\n{log.read()[-3000:]}")
    return wall, usage.ru_maxrss / 1024.0, usage.ru_utime + usage.ru_stime


def ensure_inputs(shared: Path, sizes: list[int]) -> tuple[dict[int, Path], Path]:
    DATA.mkdir(parents=True, exist_ok=True)
    src = shared / "data" / "pbmc3k_labeled_counts.h5ad"
    files = {}
    for n in sizes:
        path = DATA / f"pbmc_{n}.h5ad"
        if not path.exists():
            print(f"making {path.name} ...", flush=True)
            tmp = path.with_suffix(".tmp")
            subprocess.run(
                [
                    sys.executable,
                    str(shared / "tools" / "make_scale_h5ad.py"),
                    str(src),
                    str(tmp),
                    str(n),
                ],
                check=True,
                stderr=subprocess.DEVNULL,
            )
            tmp.rename(path)
        files[n] = path
    return files, ensure_model(shared)


def ensure_model(shared: Path) -> Path:
    """The logistic-regression baseline trained on PBMC 3k (cached under benchmarks/.data)."""
    DATA.mkdir(parents=True, exist_ok=True)
    src = shared / "data" / "pbmc3k_labeled_counts.h5ad"
    model = DATA / "model_logreg"
    if not (model / "manifest.json").exists():
        print("training the logreg model on PBMC 3k ...", flush=True)
        train = ["train", str(src), "--label-key", "cell_type", "--model", "logreg"]
        subprocess.run(
            [sys.executable, "-m", "cellfoundry.cli", *train, "--out", str(model)],
            check=True,
            capture_output=True,
        )
    return model


def r_squared(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    slope, intercept = np.polyfit(x, y, 1)
    pred = slope * x + intercept
    ss_res = float(((y - pred) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return float(slope), float(intercept), 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--clean", action="store_true", help="delete the cached inputs afterwards")
    args = ap.parse_args()
    sizes = sorted(args.sizes)
    files, model = ensure_inputs(args.shared, sizes)
    cli = [sys.executable, "-m", "cellfoundry.cli", "annotate"]
    load_before = os.getloadavg()
    rows = []
    for n in sizes:
        row: dict[str, float | int] = {"cells": n, "input_gb": files[n].stat().st_size / 1e9}
        for kind, suffix in (("h5ad", ".h5ad"), ("parquet", ".parquet")):
            out = DATA / f"out_{n}{suffix}"
            wall, rss, cpu = run_measured(
                [*cli, str(files[n]), "--model", str(model), "--out", str(out)]
            )
            out.unlink()
            row[f"{kind}_seconds"], row[f"{kind}_peak_rss_mib"] = wall, rss
            row[f"{kind}_cpu_seconds"] = cpu
        rows.append(row)
        print(
            f"{n:>9,} cells ({row['input_gb']:.2f} GB): annotated .h5ad {row['h5ad_seconds']:6.1f} s "
            f"(CPU {row['h5ad_cpu_seconds']:5.1f} s), peak RSS {row['h5ad_peak_rss_mib']:7.1f} MiB | "
            f"predictions-only .parquet {row['parquet_seconds']:6.1f} s "
            f"(CPU {row['parquet_cpu_seconds']:5.1f} s), {row['parquet_peak_rss_mib']:7.1f} MiB",
            flush=True,
        )
    small = sizes[0]
    old_out = DATA / f"old_{small}.h5ad"
    old_wall, old_rss, old_cpu = run_measured(
        [sys.executable, "-c", OLD_PATH, str(files[small]), str(model), str(old_out)]
    )
    old_out.unlink()
    load_after = os.getloadavg()
    print(
        f"reference (previous in-memory path) {small:,} cells: {old_wall:.1f} s "
        f"(CPU {old_cpu:.1f} s), peak RSS {old_rss:.1f} MiB"
    )
    cells = np.array([r["cells"] for r in rows], dtype=float)
    summary: dict[str, object] = {"rows": rows}
    for kind in ("h5ad", "parquet"):
        secs = np.array([r[f"{kind}_seconds"] for r in rows], dtype=float)
        cpu_secs = np.array([r[f"{kind}_cpu_seconds"] for r in rows], dtype=float)
        cpu_r2 = r_squared(cells, cpu_secs)[2] if len(rows) > 2 else np.nan
        rss = np.array([r[f"{kind}_peak_rss_mib"] for r in rows], dtype=float)
        slope, intercept, r2 = r_squared(cells, secs) if len(rows) > 2 else (np.nan, np.nan, np.nan)
        summary[kind] = {
            "seconds_per_million_cells": slope * 1e6,
            "intercept_seconds": intercept,
            "r2_time_vs_cells": r2,
            "r2_cpu_time_vs_cells": cpu_r2,
            "peak_rss_max_mib": float(rss.max()),
            "peak_rss_max_over_min": float(rss.max() / rss.min()),
        }
        print(
            f"{kind}: time = {slope * 1e6:.1f} s per 1M cells + {intercept:.1f} s, R² {r2:.4f} "
            f"(CPU time R² {cpu_r2:.4f}); "
            f"peak RSS {rss.min():.0f}-{rss.max():.0f} MiB (max/min {rss.max() / rss.min():.2f})"
        )
    first = rows[0]
    summary["reference"] = {
        "what": "previous path: read_h5ad into memory, annotate, to_adata().write_h5ad(gzip)",
        "cells": small,
        "seconds": old_wall,
        "cpu_seconds": old_cpu,
        "peak_rss_mib": old_rss,
        "speedup_h5ad": old_wall / float(first["h5ad_seconds"]),
        "cpu_ratio_h5ad": old_cpu / float(first["h5ad_cpu_seconds"]),
        "rss_ratio_h5ad": old_rss / float(first["h5ad_peak_rss_mib"]),
    }
    print(
        f"ratio to the previous path at {small:,} cells: {old_wall / float(first['h5ad_seconds']):.2f}x "
        f"faster ({old_cpu / float(first['h5ad_cpu_seconds']):.2f}x less CPU time), "
        f"{old_rss / float(first['h5ad_peak_rss_mib']):.2f}x less peak memory"
    )
    summary["load_average_before"] = list(load_before)
    summary["load_average_after"] = list(load_after)
    summary["cpu_count"] = os.cpu_count()
    summary["measured"] = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"load average before {load_before}, after {load_after} ({os.cpu_count()} CPUs)")
    write_result(RESULTS, summary)
    if args.clean:
        for path in files.values():
            path.unlink()


if __name__ == "__main__":
    main()
