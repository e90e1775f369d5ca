"""Throughput of a 100k-cell batch annotation job through the service, 1 vs 2 local workers (issue #5).

The dataset is built by multinomial resampling of real PBMC 3k cells (each new cell keeps the
profile and depth of a randomly chosen real cell). For each worker count, `cellfoundry serve
--workers N` runs in one CELLFOUNDRY_HOME (shards of --shard-size cells), the file is uploaded
once through POST /upload, and the job is timed from POST /submit until GET /status says
succeeded (layout off: annotation, merge, result files). The reference measured in the same run
is the in-process library call `cellfoundry.annotate(file, model)` on the same file.

Usage: python benchmarks/bench_batch_jobs.py [--cells 100000] [--shard-size 25000] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_annotate_throughput import resample_cells  # noqa: E402
from bench_predict import free_port  # noqa: E402


def serve(home: Path, workers: int, shard_size: int) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    env = {
        **os.environ,
        "CELLFOUNDRY_HOME": str(home),
        "CELLFOUNDRY_SHARD_SIZE": str(shard_size),
        "CELLFOUNDRY_UPLOAD_LIMIT_MB": "100000",
    }
    log = open(home / f"serve-{workers}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cellfoundry.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            h = httpx.get(url + "/health", timeout=2).json()
            if len(h["workers"]) >= workers:
                break
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        if proc.poll() is not None:
            raise SystemExit((home / f"serve-{workers}.log").read_text())
        time.sleep(0.5)
    return proc, url, (home / "local-api-key").read_text().strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--cells", type=int, default=100_000)
    ap.add_argument("--shard-size", type=int, default=25_000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    src = ad.read_h5ad(Path(args.shared) / "data" / "pbmc3k_labeled_counts.h5ad")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        t0 = time.perf_counter()
        big = resample_cells(src, args.cells)
        path = tmp / f"pbmc3k_resampled_{args.cells}.h5ad"
        big.write_h5ad(path)
        build_s = time.perf_counter() - t0
        home = tmp / "home"
        home.mkdir()
        results: dict[str, object] = {
            "cells": args.cells,
            "genes": int(big.n_vars),
            "nnz": int(big.X.nnz),
            "file_mb": path.stat().st_size / 1e6,
            "build_s": build_s,
            "shard_size": args.shard_size,
            "cpus": os.cpu_count(),
        }
        del big
        model_dir = None
        for n in args.workers:
            proc, url, key = serve(home, n, args.shard_size)
            try:
                c = httpx.Client(
                    base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600
                )
                t_up = time.perf_counter()
                with open(path, "rb") as fh:
                    ds = c.post("/upload", files={"file": (path.name, fh)}).json()
                upload_s = time.perf_counter() - t_up
                model_id = c.get("/models").json()[0]["id"]
                t1 = time.perf_counter()
                rid = c.post(
                    "/submit",
                    json={
                        "dataset_id": ds["id"],
                        "model_id": model_id,
                        "params": {"layout": "none"},
                    },
                ).json()["run_id"]
                while True:
                    st = c.get(f"/status/{rid}").json()
                    if st["state"] in ("succeeded", "failed", "cancelled"):
                        break
                    time.sleep(0.2)
                job_s = time.perf_counter() - t1
                assert st["state"] == "succeeded", st
                n_cells = c.get(f"/results/{rid}", params={"page_size": 1}).json()["summary"][
                    "n_cells"
                ]
                assert n_cells == args.cells
                results[f"workers_{n}"] = {
                    "job_s": job_s,
                    "cells_per_s": args.cells / job_s,
                    "upload_s": upload_s,
                    "duplicate_upload": ds.get("duplicate"),
                }
                model_dir = home / "storage" / "models" / model_id
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(60)
        import cellfoundry as cf

        t2 = time.perf_counter()
        res = cf.annotate(path, model_dir)
        ref_s = time.perf_counter() - t2
        assert res.n_cells == args.cells
        results["reference_inprocess_annotate_s"] = ref_s
        results["reference_cells_per_s"] = args.cells / ref_s
        results["load_average_at_end"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    line = [f"{args.cells:,}-cell batch job (shards of {args.shard_size:,}):"]
    for n in args.workers:
        r = results[f"workers_{n}"]
        line.append(f"{n} worker(s) {r['job_s']:.1f} s = {r['cells_per_s']:,.0f} cells/s;")  # type: ignore[index]
    one = results.get("workers_1")
    if one is not None and "workers_2" in results:
        speed = one["job_s"] / results["workers_2"]["job_s"]  # type: ignore[index]
        line.append(f"speed-up of 2 workers over 1: {speed:.2f}x;")
    base = one or results[f"workers_{args.workers[0]}"]
    line.append(
        f"reference in-process cellfoundry.annotate {ref_s:.1f} s = {args.cells / ref_s:,.0f} cells/s "
        f"(service with {1 if one else args.workers[0]} worker(s) / reference: "
        f"{base['cells_per_s'] / (args.cells / ref_s):.2f})"  # type: ignore[index]
    )
    print(" ".join(line))


if __name__ == "__main__":
    main()
