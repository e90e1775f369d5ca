"""Cost of one /predict rate-limit check, per limiter (issue #10: the limiter must stay tiny
next to the /predict target of 5,000 requests/s from one key on 2 cores, i.e. 400 µs of CPU
per request).

Measured in the same run: the per-process dict bucket (the reference, not shared), the
shared-memory file shared by the API processes of one host (the default), and Redis (when
``--redis`` answers; tokens taken in chunks, so most calls stay local). Reported: wall and CPU
µs per call, and the ratio to the reference. One key, buckets never empty (the common path).

Usage: python benchmarks/bench_ratelimit.py [--calls 200000] [--redis redis://127.0.0.1:6379/13]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from cellfoundry.service.ratelimit import RedisBuckets, SharedBuckets, TokenBuckets
from results_io import write_result

RATE, BURST = 1e9, 10**9  # never refuses: the cost of the allowed path
OUT = Path(__file__).resolve().parent / "results" / "ratelimit.json"


def per_call(take: object, calls: int) -> tuple[float, float]:
    """(wall µs, CPU µs) per call of ``take("Bearer key")``, best of 3."""
    best = (float("inf"), float("inf"))
    for _ in range(3):
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(calls):
            take("Bearer cf_bench_key")  # type: ignore[operator]
        w, c = time.perf_counter() - w0, time.process_time() - c0
        best = min(best, (w / calls * 1e6, c / calls * 1e6))
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    args = ap.parse_args()
    limiters: dict[str, object] = {"process (reference)": TokenBuckets(RATE, BURST)}
    with tempfile.TemporaryDirectory() as tmp:
        limiters["shared file (default)"] = SharedBuckets(Path(tmp) / "rl.bin", RATE, BURST)
        try:
            # the default rate (chunks of 100 tokens) and a bucket that never empties
            r = RedisBuckets(args.redis, 20_000, BURST, prefix=f"cf-bench-{uuid.uuid4().hex}:")
            r._client.ping()
            limiters[f"redis (chunk {r.chunk})"] = r
        except Exception as exc:
            print(f"redis skipped: {exc}")
        rows = {}
        for name, lim in limiters.items():
            wall, cpu = per_call(lim.take, args.calls)  # type: ignore[attr-defined]
            rows[name] = {"wall_us": round(wall, 3), "cpu_us": round(cpu, 3)}
    ref = rows["process (reference)"]["cpu_us"]
    print(f"{'limiter':<24}{'wall µs/call':>14}{'CPU µs/call':>14}{'CPU x ref':>11}")
    for name, row in rows.items():
        row["cpu_ratio_to_reference"] = round(row["cpu_us"] / ref, 2)
        print(
            f"{name:<24}{row['wall_us']:>14.2f}{row['cpu_us']:>14.2f}{row['cpu_ratio_to_reference']:>11.2f}"
        )
    budget = 2 * 1e6 / 5_000
    print(f"budget at 5,000 req/s on 2 cores: {budget:.0f} µs CPU per request")
    write_result(OUT, {"calls": args.calls, "limiters": rows})


if __name__ == "__main__":
    main()
