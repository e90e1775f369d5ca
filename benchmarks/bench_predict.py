"""Throughput and latency of POST /predict at 32 connections, beside a hello-world ceiling (issue #11).

Starts `cellfoundry serve --api-workers N` (embedded defaults, the demo logistic-regression
model, no local job workers) in a temporary CELLFOUNDRY_HOME, or uses --url/--key of a running
server. Each request is one real PBMC 3k cell (raw counts of its expressed genes, keyed by
symbol; ../shared/data), or a cell of the packaged demo dataset when that file is absent.

The load generator is wrk when installed, else hey, else a Python asyncio client (slower than
the server it measures: its figures are a floor). In the same run and with the same generator,
connections, body and process count it measures three ceilings of the stack:

- ``fastapi_hello``: a FastAPI route that reads the body and answers a constant (what any
  FastAPI endpoint costs here);
- ``asgi_hello``: a bare ASGI app under the same uvicorn (httptools + uvloop): the transport alone;
- ``asgi_parse``: ``asgi_hello`` that also reads the JSON (orjson) and the cell's values into an
  array: the floor of any Python handler of this body, before genes, model and answer.

It prints requests/s, p50/p99 latency, the server's CPU time per request (all its processes,
less their idle rate measured just before; steadier than wall-clock figures on a loaded
machine), the load generator's CPU time per request, the requests/s that the machine's cores
could serve at those two costs (``cpu_bound_rps`` = cores / (server + generator CPU per request):
the load-independent figure; 5,000 req/s on 2 cores needs about 400 us for both together) and
the ratios to the ceilings, then the
latency of one client alone (the service time) and of one cell through the in-process library
call `cellfoundry.annotate` (the naive way to serve one cell). Results: benchmarks/results/predict.json.

By hand (wrk: `apt-get install wrk`; hey: `apt-get install hey`):

    python benchmarks/bench_predict.py                      # 2 API processes, 32 connections, 10 s
    python benchmarks/bench_predict.py --api-workers 1 --seconds 5 --tool hey
    cellfoundry serve --api-workers 2 &                     # or load a running server yourself:
    wrk -t1 -c32 -d10s --latency -s predict.lua http://127.0.0.1:8000/predict
        (predict.lua: wrk.method = "POST", wrk.body = the JSON, and the Authorization and
        Content-Type headers in wrk.headers; see run_wrk)

Targets (issue #11 §3): >= 5,000 requests/s with p99 <= 20 ms at 32 connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request  # module level: the hello route's annotations resolve
from fastapi.responses import Response

from results_io import write_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "predict.json"
PUBLIC_REFERENCE_MS = 95.0  # "95 ms per sample", a previous public attempt named in issue #5
TARGET_RPS, TARGET_P99_MS = 5000.0, 20.0
CLI = [sys.executable, "-m", "cellfoundry.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- the ceilings (same uvicorn stack)


def fastapi_hello() -> Any:
    """A FastAPI app whose POST /predict reads the body and answers a constant."""
    app = FastAPI()

    @app.post("/predict")
    async def hello(request: Request) -> Response:
        await request.body()
        return Response(b'{"ok":true}', media_type="application/json")

    return app


def asgi_hello() -> Any:
    """A bare ASGI app: reads the body, answers a constant (uvicorn's own cost per request)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"11")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"ok":true}'})

    return app


def asgi_parse() -> Any:
    """``asgi_hello`` that also parses the body with orjson and turns the cell's values into a
    float32 array (the least any Python handler of this body does): the floor of /predict's
    CPU per request in this stack, before any gene lookup, model or answer."""
    import orjson

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        n = 0
        if raw:
            cell = orjson.loads(raw)["expression"]
            n = len(np.fromiter(cell.values(), dtype=np.float32, count=len(cell)))
        body = b'{"n":%d}' % n
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def start_hello(factory: str, workers: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [
        *[sys.executable, "-m", "uvicorn", f"bench_predict:{factory}", "--factory"],
        *["--app-dir", str(ROOT / "benchmarks"), "--port", str(port)],
        *["--workers", str(workers), "--log-level", "warning", "--no-access-log"],
    ]
    proc = subprocess.Popen(
        cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    _wait(url + "/predict", proc, log, method="POST")
    return proc, url


# ---------------------------------------------------------------- the server and the request


def request_cells(shared: Path, n: int = 64) -> tuple[list[dict[str, float]], object, list[int]]:
    """Real cells as {symbol: count}: pbmc3k when present, else the demo dataset's raw counts."""
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


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, method: str = "GET") -> None:
    import httpx

    for _ in range(1200):
        try:
            if httpx.request(method, url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(log.read_text())
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer:\n{log.read_text()[-3000:]}")


def start_server(home: Path, api_workers: int = 1) -> tuple[subprocess.Popen[bytes], str, str]:
    """`cellfoundry serve` in ``home`` (trains the demo model at first start); (process, url, key)."""
    port = free_port()
    env = {**os.environ, "CELLFOUNDRY_HOME": str(home), "CELLFOUNDRY_LOCAL_WORKERS": "0"}
    log = home / "serve.log"
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port), "--api-workers", str(api_workers)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    _wait(url + "/health", proc, log)
    return proc, url, (home / "local-api-key").read_text().strip()


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of ``pid`` and all its descendants (Linux /proc; 0 without it)."""
    if pid is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, cpu seconds)
    for f in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = f.read_text().rsplit(")", 1)[1].split()
            stats[int(f.parent.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
        except (OSError, ValueError, IndexError):
            continue  # the process ended meanwhile
    tree, grew = {pid}, True
    while grew:
        more = {p for p, (parent, _) in stats.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(stats.get(p, (0, 0.0))[1] for p in tree)


# ---------------------------------------------------------------- load generators


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def run_wrk(
    url: str, key: str, body: bytes, conns: int, seconds: float, tmp: Path
) -> dict[str, Any]:
    lua = tmp / "predict.lua"
    (tmp / "body.json").write_bytes(body)
    lua.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        + (f'wrk.headers["Authorization"] = "Bearer {key}"\n' if key else "")
        + f'local f = io.open("{tmp / "body.json"}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
    )
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(lua)]
    out = subprocess.run([*cmd, url + "/predict"], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"wrk failed ({out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    text = out.stdout
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", text, re.M))

    def pct(p: str) -> float:
        m = re.fullmatch(r"([\d.]+)(us|ms|s)", lat[p])
        assert m is not None, text
        return _ms(m.group(1), m.group(2))

    reqs = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: (.*)", text)
    return {
        "requests": reqs,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),  # type: ignore[union-attr]
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "errors": int(bad.group(1)) if bad else 0,
        "socket_errors": sock.group(1).strip() if sock else None,
    }


def run_hey(
    url: str, key: str, body: bytes, conns: int, seconds: float, tmp: Path
) -> dict[str, Any]:
    (tmp / "body.json").write_bytes(body)
    cmd = ["hey", "-z", f"{max(1, round(seconds))}s", "-c", str(conns), "-m", "POST"]
    cmd += ["-T", "application/json", "-D", str(tmp / "body.json")]
    if key:
        cmd += ["-H", f"Authorization: Bearer {key}"]
    text = subprocess.run(
        [*cmd, url + "/predict"], capture_output=True, text=True, check=True
    ).stdout
    lat = dict(re.findall(r"(50|99)% in ([\d.]+) secs", text))
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)}
    return {
        "requests": sum(codes.values()),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),  # type: ignore[union-attr]
        "p50_ms": float(lat["50"]) * 1e3,
        "p99_ms": float(lat["99"]) * 1e3,
        "errors": sum(n for c, n in codes.items() if c != 200),
        "socket_errors": None,
    }


async def _client(
    host: str, port: int, req: bytes, until: float, lat: list[float], bad: list[str]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    while time.perf_counter() < until:
        t0 = time.perf_counter()
        writer.write(req)
        await writer.drain()
        status = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        lat.append(time.perf_counter() - t0)
        if b" 200 " not in status:
            bad.append(status.decode())
    writer.close()


def run_python(
    url: str, key: str, body: bytes, conns: int, seconds: float, tmp: Path
) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split(":")
    req = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\n"
        + (f"Authorization: Bearer {key}\r\n" if key else "")
        + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    lat: list[float] = []
    bad: list[str] = []

    async def main() -> None:
        until = time.perf_counter() + seconds
        await asyncio.gather(
            *[_client(host, int(port), req, until, lat, bad) for _ in range(conns)]
        )

    asyncio.run(main())
    ms = np.asarray(lat) * 1000
    return {
        "requests": len(lat),
        "rps": len(lat) / seconds,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": len(bad),
        "socket_errors": None,
    }


TOOLS = {"wrk": run_wrk, "hey": run_hey, "python": run_python}


def pick_tool(name: str) -> str:
    if name != "auto":
        if name != "python" and shutil.which(name) is None:
            raise SystemExit(
                f"{name} is not installed (apt-get install {name}), or use --tool auto"
            )
        return name
    return next((t for t in ("wrk", "hey") if shutil.which(t)), "python")


def settle(pid: int | None, timeout: float = 120.0) -> None:
    """Wait until the server's processes are idle (start-up work such as preparing the upload
    sandbox would otherwise count in the CPU time per request)."""
    deadline = time.monotonic() + timeout
    while pid is not None and time.monotonic() < deadline:
        c0 = cpu_seconds(pid)
        time.sleep(1.0)
        if cpu_seconds(pid) - c0 < 0.05:
            return


def measure(
    tool: str,
    url: str,
    key: str,
    body: bytes,
    conns: int,
    seconds: float,
    pid: int | None,
    tmp: Path,
) -> dict[str, Any]:
    """A short warm-up, then the measured run with the server's CPU time per request."""
    settle(pid)
    idle0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(2.0)  # the server's own background work (reaper, model sync), to subtract
    idle_rate = (cpu_seconds(pid) - idle0) / (time.monotonic() - t0)
    TOOLS[tool](url, key, body, conns, 1.0, tmp)
    cpu0, t0, client0 = cpu_seconds(pid), time.monotonic(), client_cpu_seconds(tool)
    out = TOOLS[tool](url, key, body, conns, seconds, tmp)
    cpu, wall = cpu_seconds(pid) - cpu0, time.monotonic() - t0
    client = client_cpu_seconds(tool) - client0
    n = max(1, out["requests"])
    server = (cpu - idle_rate * wall) / n * 1e6 if pid else None
    out["server_cpu_us_per_request"] = server
    out["server_cpu_us_per_request_raw"] = cpu / n * 1e6 if pid else None
    out["server_idle_cpu_share"] = idle_rate if pid else None
    out["client_cpu_us_per_request"] = client / n * 1e6
    # what the machine's cores could serve if the server and the load generator had them all
    # (load-independent, unlike requests/s on a shared machine)
    out["cpu_bound_rps"] = (
        (os.cpu_count() or 1) / ((server + out["client_cpu_us_per_request"]) * 1e-6)
        if server
        else None
    )
    return out


def client_cpu_seconds(tool: str) -> float:
    """CPU time of the load generator so far: the finished child processes (wrk, hey), or this
    process (the Python client runs here)."""
    if tool == "python":
        return time.process_time()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


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
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--api-workers", type=int, default=2, help="API processes (and hello ones)")
    ap.add_argument("--connections", "--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--tool", choices=["auto", "wrk", "hey", "python"], default="auto")
    ap.add_argument("--url", help="a running server (no ceilings, no CPU figures)")
    ap.add_argument("--key")
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--no-ceiling", action="store_true", help="skip the hello-world ceilings")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    tool = pick_tool(args.tool)
    cells, adata, idx = request_cells(Path(args.shared))
    cell = min(cells, key=lambda c: abs(len(c) - 782))  # a typical PBMC 3k cell (~780 genes)
    body = json.dumps({"expression": cell, "top_k": 3}).encode()
    conns, secs, nw = args.connections, args.seconds, args.api_workers
    tmp_dir = tempfile.TemporaryDirectory()
    tmp = Path(tmp_dir.name)
    out: dict[str, Any] = {
        "tool": tool,
        "connections": conns,
        "seconds": secs,
        "api_workers": nw,
        "genes_in_request": len(cell),
        "body_bytes": len(body),
        "real_cell": (Path(args.shared) / "data" / "pbmc3k_labeled_counts.h5ad").is_file(),
    }
    ceilings: dict[str, dict[str, Any]] = {}
    if not args.url and not args.no_ceiling:
        for name in ("asgi_hello", "asgi_parse", "fastapi_hello"):
            hello, hello_url = start_hello(name, nw, tmp / f"{name}.log")
            try:
                ceilings[name] = measure(tool, hello_url, "", body, conns, secs, hello.pid, tmp)
            finally:
                stop(hello)
    proc: subprocess.Popen[bytes] | None = None
    model_dir = None
    if args.url:
        url, key = args.url, args.key or ""
    else:
        home = tmp / "home"
        home.mkdir()
        proc, url, key = start_server(home, nw)
        model_dir = home / "storage" / "models" / "demo-logreg-pbmc68k"
    try:
        pred = measure(tool, url, key, body, conns, secs, proc.pid if proc else None, tmp)
        one = TOOLS[tool](url, key, body, 1, min(secs, 5.0), tmp)  # one client: the service time
    finally:
        stop(proc)
    ref = reference_ms(adata, idx, model_dir) if model_dir is not None else float("nan")
    out["predict"] = pred
    out["ceilings"] = ceilings
    for name, c in ceilings.items():
        out[f"rps_ratio_to_{name}"] = pred["rps"] / c["rps"]
        if pred["server_cpu_us_per_request"] and c["server_cpu_us_per_request"]:
            out[f"cpu_ratio_to_{name}"] = (
                pred["server_cpu_us_per_request"] / c["server_cpu_us_per_request"]
            )
    out["one_client"] = one
    out["reference_inprocess_annotate_one_cell_ms"] = ref
    out["ratio_reference_over_one_client_p50"] = ref / one["p50_ms"]
    out["public_reference_ms"] = PUBLIC_REFERENCE_MS
    out["targets"] = {"rps": TARGET_RPS, "p99_ms": TARGET_P99_MS}
    out["meets_targets"] = pred["rps"] >= TARGET_RPS and pred["p99_ms"] <= TARGET_P99_MS
    out["cpus"] = os.cpu_count()
    out["load_average_at_end"] = os.getloadavg()
    print(json.dumps(out, indent=2))
    write_result(Path(args.out), out)

    def line(name: str, r: dict[str, Any]) -> str:
        cpu = r.get("server_cpu_us_per_request")
        return (
            f"  {name:<14} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms"
            + (
                f"  CPU/request: server {cpu:5.0f} us, {tool} {r['client_cpu_us_per_request']:4.0f} us"
                f" -> {r['cpu_bound_rps']:6.0f} req/s on {os.cpu_count()} cores"
                if cpu
                else ""
            )
            + (f"  ({r['errors']} non-200)" if r["errors"] else "")
        )

    print(f"\n{tool}, {conns} connections, {secs:.0f} s, {nw} API process(es), {len(cell)} genes:")
    for name, c in ceilings.items():
        print(line(name, c))
    print(line("/predict", pred))
    for name in ceilings:
        print(
            f"  /predict / {name}: {out[f'rps_ratio_to_{name}']:.2f} of its req/s"
            + (
                f", {out[f'cpu_ratio_to_{name}']:.1f}x its CPU per request"
                if f"cpu_ratio_to_{name}" in out
                else ""
            )
        )
    print(
        f"  one client alone: p50 {one['p50_ms']:.2f} ms, p99 {one['p99_ms']:.2f} ms; in-process "
        f"annotate of one cell {ref:.1f} ms; target >= {TARGET_RPS:.0f} req/s with p99 <= "
        f"{TARGET_P99_MS:.0f} ms: {'met' if out['meets_targets'] else 'not met'} "
        f"(load average {out['load_average_at_end'][0]:.1f} on {out['cpus']} CPUs)"
    )


if __name__ == "__main__":
    main()
