"""Sharded annotation on PostgreSQL + Redis + Celery with 1, 2 and 4 workers: wall time, speedup.

The fault matrix's harness (``tests/service/fault_matrix.py``): its own PostgreSQL cluster and
redis-server on free ports, `cellfoundry serve` and `cellfoundry worker --pool solo` processes
(the real CLI). The input is ``--cells`` resampled PBMC 3k cells (``bench_scale_annotate.py``'s
cached file), uploaded once; the model is the logistic-regression baseline trained on PBMC 3k.
For each worker count the workers are started and seen in /health, then one annotation run
(``layout: none``, ``--shards`` shards) is submitted and timed from submit to ``succeeded``
(and by the run's own started/finished times), with the CPU seconds the workers spent on it.
Speedup = time with 1 worker / time with k.

On dedicated cores the speedup is at most min(workers, cores) (2 cores here), less the serial
merge. On a machine shared with other jobs (load above the core count) more worker processes also
win more of the scheduler's share, so ratios measured there overstate what idle cores give.

    PYTHONPATH=src python benchmarks/bench_workers.py [--cells 300000] [--workers 1 2 4]
        [--shards 8]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

from results_io import write_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "workers.json"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
NOTE = (
    "on dedicated cores the speedup is at most min(workers, cores) and the merge is serial; on a "
    "machine shared with other jobs (load above the core count) more worker processes also win "
    "more of the scheduler's share, so ratios measured there overstate what idle cores give"
)


def _seconds(a: str | None, b: str | None) -> float | None:
    if not a or not b:
        return None
    return (dt.datetime.fromisoformat(b) - dt.datetime.fromisoformat(a)).total_seconds()


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children so far."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cells", type=int, default=300_000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--shards", type=int, default=8, help="shards per run")
    ap.add_argument(
        "--layout",
        choices=["none", "pca", "umap"],
        default="none",
        help="the run's layout (not none: the merge lays out every cell; GET /runs/{id}/layout "
        "is then timed and the figures go to workers_layout_<method>.json)",
    )
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = ap.parse_args()
    from tests.service.conftest import Server, Workers, base_env, wait_for
    from tests.service.fault_matrix import OwnPostgres, OwnRedis

    from bench_scale_annotate import ensure_inputs

    files, model = ensure_inputs(args.shared, [args.cells])
    data = files[args.cells]
    shard_size = -(-args.cells // args.shards)
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cf-bench-workers-") as tmp:
        root = Path(tmp)
        pg, redis = OwnPostgres().start(), OwnRedis().start()
        server = None
        try:
            env = base_env(
                root,
                CELLFOUNDRY_DATABASE_URL=pg.url,
                CELLFOUNDRY_QUEUE_BACKEND="celery",
                CELLFOUNDRY_BROKER_URL=redis.url,
                CELLFOUNDRY_QUEUE_NAME="cf-bench-workers",
                CELLFOUNDRY_SHARD_SIZE=str(shard_size),
                CELLFOUNDRY_UPLOAD_LIMIT_MB=str(int(data.stat().st_size / 2**20) + 64),
                CELLFOUNDRY_DEMO_MODEL="false",
                CELLFOUNDRY_HEARTBEAT_S="2",
                CELLFOUNDRY_STALE_AFTER_S="120",  # loaded machine: no false take-overs
            )
            server = Server(root, env, ["--model", str(model)]).start(timeout=300)
            server.key = server.key or server.new_key("bench")
            c = server.client()
            c.timeout = 3600
            model_id = next(m["id"] for m in c.get("/models").json() if m["family"] == "logreg")
            t0 = time.perf_counter()
            with open(data, "rb") as fh:
                r = c.post("/upload", files={"file": (data.name, fh)})
            assert r.status_code == 200, r.text
            dataset_id = r.json()["id"]
            print(
                f"uploaded {data.name} ({data.stat().st_size / 1e9:.2f} GB, {args.cells:,} cells) "
                f"in {time.perf_counter() - t0:.0f} s; {args.shards} shards of {shard_size:,}",
                flush=True,
            )
            for k in args.workers:
                workers = Workers(env, root)
                procs = workers.start(k)
                try:
                    pids = {p.pid for p in procs}

                    def ready(pids: set[int] = pids, k: int = k) -> bool:
                        seen = {w["pid"] for w in c.get("/health").json().get("workers", [])}
                        return len(pids & seen) >= k

                    wait_for(ready, 300, f"{k} workers")
                    cpu0 = {p.pid: _cpu_s(p.pid) for p in procs}
                    body = {
                        "dataset_id": dataset_id,
                        "model_id": model_id,
                        "params": {"layout": args.layout},
                    }
                    t0 = time.perf_counter()
                    r = c.post("/submit", json=body)
                    assert r.status_code == 201, r.text
                    rid = r.json()["run_id"]

                    def final(rid: str = rid) -> dict | None:
                        st = c.get(f"/status/{rid}").json()
                        return st if st["state"] in ("succeeded", "failed", "cancelled") else None

                    st = wait_for(final, 3600, f"run {rid}", interval=0.5)
                    wall = time.perf_counter() - t0
                    assert st["state"] == "succeeded", st
                    cpu = sum(_cpu_s(p.pid) for p in procs) - sum(cpu0.values())
                    view = None
                    if args.layout != "none":
                        t1 = time.perf_counter()
                        r = c.get(f"/runs/{rid}/layout", params={"bins": 256})
                        assert r.status_code == 200, r.text
                        body = r.json()
                        view = {
                            "first_request_seconds": time.perf_counter() - t1,
                            "answer_mb": len(r.content) / 1e6,
                            "mode": body["mode"],
                            "n_cells": body["n_cells"],
                        }
                        assert body["n_cells"] == args.cells, body["n_cells"]
                finally:
                    workers.stop()
                row = {
                    "workers": k,
                    "seconds": wall,
                    "run_seconds": _seconds(st.get("started_at"), st.get("finished_at")),
                    "workers_cpu_seconds": cpu,
                    "layout_view": view,
                    "load_average": list(os.getloadavg()),
                }
                rows.append(row)
                if view is not None:
                    print(
                        f"  GET /runs/{{id}}/layout: {view['n_cells']:,} cells laid out, first "
                        f"request {view['first_request_seconds']:.1f} s, {view['mode']} "
                        f"{view['answer_mb']:.2f} MB",
                        flush=True,
                    )
                print(
                    f"{k} worker(s): {wall:6.1f} s from submit to succeeded "
                    f"(run {row['run_seconds'] or float('nan'):.1f} s), workers' CPU {cpu:.1f} s; "
                    f"load {row['load_average'][0]:.1f}",
                    flush=True,
                )
        finally:
            if server is not None:
                server.stop()
            redis.stop()
            pg.stop()
    base = rows[0]["seconds"]
    for row in rows:
        row["speedup"] = base / row["seconds"]
    print(
        "speedup vs 1 worker: "
        + ", ".join(f"{r['workers']}: {r['speedup']:.2f}x" for r in rows)
        + f" (dedicated {os.cpu_count()} CPUs: at most {os.cpu_count()}x; at load "
        f"{load_before[0]:.1f} more processes also get more scheduler share)"
    )
    summary = {
        "cells": args.cells,
        "shards": args.shards,
        "shard_size": shard_size,
        "rows": rows,
        "cpu_count": os.cpu_count(),
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
        "note": NOTE,
    }
    summary["layout"] = args.layout
    out = (
        RESULTS
        if args.layout == "none"
        else RESULTS.with_name(f"workers_layout_{args.layout}.json")
    )
    write_result(out, summary)


if __name__ == "__main__":
    main()
