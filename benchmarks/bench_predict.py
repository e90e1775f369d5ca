"""Latency of POST /predict under load: 32 concurrent keep-alive clients for 30 s (issue #5).

Starts `cellfoundry serve` (embedded defaults, demo logistic-regression model, no local workers)
in a temporary CELLFOUNDRY_HOME, or uses --url/--key of a running server. Each request is one
real PBMC cell (raw counts of all its expressed genes, keyed by symbol). Prints p50/p99 latency,
throughput, the reference measured in the same run (one cell through the in-process library
call `cellfoundry.annotate`, the naive way to serve one cell) and the ratio, and the figure of a
previous public attempt (95 ms per sample).

Usage: python benchmarks/bench_predict.py [--clients 32] [--seconds 30] [--url URL --key KEY]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_REFERENCE_MS = 95.0  # "95 ms per sample", a previous public attempt named in the issue


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request_cells(shared: Path, n: int = 64) -> tuple[list[dict[str, float]], object, list[int]]:
    """Real cells as {symbol: count}: pbmc3k when present, else the demo dataset's log values."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    path = shared / "data" / "pbmc3k_labeled_counts.h5ad"
    if path.is_file():
        a = ad.read_h5ad(path)
        symbols = a.var["gene_symbols"].astype(str).to_numpy()
    else:
        from cellfoundry.demo import demo_dataset

        a = demo_dataset().raw.to_adata()
        symbols = a.var_names.astype(str).to_numpy()
    dup = pd.Series(symbols).duplicated(keep=False).to_numpy()
    x = sp.csr_matrix(a.X)
    cells, idx = [], []
    for i in range(a.n_obs):
        row = x[i]
        if dup[row.indices].any():
            continue
        cells.append({symbols[j]: float(v) for j, v in zip(row.indices, row.data, strict=True)})
        idx.append(i)
        if len(cells) == n:
            break
    return cells, a, idx


def start_server(home: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    env = {**os.environ, "CELLFOUNDRY_HOME": str(home), "CELLFOUNDRY_LOCAL_WORKERS": "0"}
    log = open(home / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "cellfoundry.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit((home / "serve.log").read_text())
        time.sleep(0.5)
    return proc, url, (home / "local-api-key").read_text().strip()


async def client(
    host: str,
    port: int,
    bodies: list[bytes],
    key: str,
    until: float,
    lat: list[float],
    errors: list[str],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    heads = [
        (
            f"POST /predict HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(b)}\r\n\r\n"
        ).encode()
        + b
        for b in bodies
    ]
    i = 0
    while time.perf_counter() < until:
        req = heads[i % len(heads)]
        i += 1
        t0 = time.perf_counter()
        writer.write(req)
        await writer.drain()
        status = await reader.readline()
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await reader.readexactly(length)
        lat.append(time.perf_counter() - t0)
        if b" 200 " not in status:
            errors.append(status.decode() + body[:200].decode(errors="replace"))
    writer.close()


async def load(
    url: str, key: str, bodies: list[bytes], clients: int, seconds: float
) -> tuple[list[float], list[str]]:
    host, port = url.removeprefix("http://").split(":")
    lat: list[float] = []
    errors: list[str] = []
    until = time.perf_counter() + seconds
    await asyncio.gather(
        *[
            client(host, int(port), bodies[c:] + bodies[:c], key, until, lat, errors)
            for c in range(clients)
        ]
    )
    return lat, errors


def reference_ms(adata: object, idx: list[int], model_dir: Path, n: int = 20) -> float:
    """Median time of one cell through the in-process library call (`cellfoundry.annotate`)."""
    import cellfoundry as cf

    model = cf.load_model(model_dir)
    times = []
    for k in range(n):
        one = adata[idx[k % len(idx)] : idx[k % len(idx)] + 1].copy()  # type: ignore[index]
        t0 = time.perf_counter()
        cf.annotate(one, model)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--url")
    ap.add_argument("--key")
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    args = ap.parse_args()
    cells, adata, idx = request_cells(Path(args.shared))
    bodies = [json.dumps({"expression": c, "top_k": 3}).encode() for c in cells]
    tmp = tempfile.TemporaryDirectory()
    proc = None
    if args.url:
        url, key = args.url, args.key
        model_dir = None
    else:
        proc, url, key = start_server(Path(tmp.name))
        model_dir = Path(tmp.name) / "storage" / "models" / "demo-logreg-pbmc68k"
    try:
        asyncio.run(load(url, key, bodies, args.clients, 2.0))  # warm-up
        lat, errors = asyncio.run(load(url, key, bodies, args.clients, args.seconds))
        lat1, _ = asyncio.run(load(url, key, bodies, 1, 5.0))  # one client: the service time alone
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    ms = np.asarray(lat) * 1000
    p50, p99 = float(np.percentile(ms, 50)), float(np.percentile(ms, 99))
    ref = reference_ms(adata, idx, model_dir) if model_dir is not None else float("nan")
    out = {
        "clients": args.clients,
        "seconds": args.seconds,
        "requests": len(lat),
        "errors": len(errors),
        "throughput_rps": len(lat) / args.seconds,
        "p50_ms": p50,
        "p99_ms": p99,
        "mean_ms": float(ms.mean()),
        "genes_per_request_median": int(np.median([len(c) for c in cells])),
        "reference_inprocess_annotate_one_cell_ms": ref,
        "ratio_reference_over_p50": ref / p50,
        "public_reference_ms": PUBLIC_REFERENCE_MS,
        "ratio_public_over_p50": PUBLIC_REFERENCE_MS / p50,
        "one_client_p50_ms": float(np.percentile(np.asarray(lat1) * 1000, 50)),
        "one_client_p99_ms": float(np.percentile(np.asarray(lat1) * 1000, 99)),
        "targets": {"p50_ms": 5, "p99_ms": 20},
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
    }
    if errors:
        out["first_error"] = errors[0]
    print(json.dumps(out, indent=2))
    print(
        f"/predict with {args.clients} clients for {args.seconds:.0f} s: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"{out['throughput_rps']:.0f} req/s; reference (in-process annotate of one cell, same run) "
        f"{ref:.1f} ms -> ratio {ref / p50:.1f}x; public attempt {PUBLIC_REFERENCE_MS:.0f} ms -> "
        f"{PUBLIC_REFERENCE_MS / p50:.1f}x; one client alone: p50 {out['one_client_p50_ms']:.1f} ms, "
        f"p99 {out['one_client_p99_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
