"""Cost of opening uploads in the intake sandbox, time to refuse hostile files, and /predict's
answer to the reported freeze body while /health keeps answering (issue #10 §2, §4).

1. Intake of the real PBMC 3k file: ``open_untrusted`` (separate limited process; first call
   starts the process, later calls find a spare one waiting, as a server has after ``prepare``) against the in-process reference
   ``validate(read_data(path, backed=True))`` measured in the same run.
2. Time until each hostile file is refused by ``open_untrusted`` (spare child waiting).
3. A real ``cellfoundry serve`` with the demo model: the 14 MB /predict body (5,000 cells x 100
   distinct gene names) is sent while another client polls /health; reported: status and time of
   the refusal, /health latencies during it against /health latencies at idle.

Usage: python benchmarks/bench_hostile.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.data_intake.hostile: the crafted files

from benchmarks.bench_predict import start_server  # noqa: E402
from tests.data_intake import hostile  # noqa: E402

from cellfoundry.data.io import read_data  # noqa: E402
from cellfoundry.data.report import validate  # noqa: E402
from cellfoundry.data.untrusted import open_untrusted, prepare  # noqa: E402
from cellfoundry.errors import CellfoundryError  # noqa: E402

SHARED = Path(os.environ.get("CELLFOUNDRY_SHARED", ROOT.parent / "shared"))
PBMC = SHARED / "data" / "pbmc3k_labeled_counts.h5ad"


def _ms(t: float) -> str:
    return f"{t * 1000:,.0f} ms"


def intake(repeats: int) -> dict[str, float]:
    t0 = time.perf_counter()
    open_untrusted(PBMC)
    cold = time.perf_counter() - t0
    warm, ref = [], []
    for _ in range(repeats):
        assert prepare()  # the spare child has its readers imported
        t0 = time.perf_counter()
        s = open_untrusted(PBMC)
        warm.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        a = read_data(PBMC, backed=True)
        r = validate(a)
        a.file.close()
        ref.append(time.perf_counter() - t0)
        assert (s.n_cells, s.n_genes) == (r.n_cells, r.n_genes)
    out = {
        "cold_s": cold,
        "warm_s": statistics.median(warm),
        "in_process_s": statistics.median(ref),
    }
    print(f"intake of {PBMC.name} ({s.n_cells:,} x {s.n_genes:,}), median of {repeats}:")
    print(f"  sandbox, first call (starts the process) {_ms(cold)}")
    print(f"  sandbox, spare process waiting           {_ms(out['warm_s'])}")
    print(f"  in-process read + validate (reference)   {_ms(out['in_process_s'])}")
    print(f"  ratio sandbox(spare) / reference         {out['warm_s'] / out['in_process_s']:.2f}")
    return out


def refusals(tmp: Path) -> dict[str, dict[str, object]]:
    secret = tmp / "local-api-key"
    secret.write_bytes(b"cf_secret_" + os.urandom(16).hex().encode())
    target = hostile.secret_h5(tmp / "other.h5", secret.read_bytes())
    n = len(secret.read_bytes())
    files = {
        "external storage .h5ad": hostile.external_storage_h5ad(tmp / "ext.h5ad", secret),
        "external link .h5ad": hostile.external_link_h5ad(tmp / "link.h5ad", target, n),
        "virtual dataset .h5ad": hostile.virtual_h5ad(tmp / "vds.h5ad", target, n),
        "declared 10^8 x 4*10^5 dense X": hostile.huge_dense_h5ad(tmp / "dense.h5ad"),
        "CSV with 10^6 columns": hostile.wide_csv(tmp / "wide.csv"),
        "gzip bomb (10 GB from 25 MB)": hostile.gzip_bomb_csv(tmp / "bomb.csv.gz"),
    }
    out: dict[str, dict[str, object]] = {}
    print("time to refusal (spare process waiting):")
    for name, path in files.items():
        assert prepare()
        t0 = time.perf_counter()
        try:
            open_untrusted(path)
            status, code = 200, "accepted"
        except CellfoundryError as exc:
            status, code = exc.status, exc.code
        dt = time.perf_counter() - t0
        out[name] = {"status": status, "code": code, "seconds": dt}
        print(f"  {name:<32} {status} {code:<16} {_ms(dt)}")
    return out


def predict_freeze(tmp: Path) -> dict[str, object]:
    (tmp / "home").mkdir()
    proc, url, key = start_server(tmp / "home")  # trains the demo model at first start
    try:
        h = httpx.Client(base_url=url, timeout=30)
        idle = []
        for _ in range(50):
            t0 = time.perf_counter()
            h.get("/health")
            idle.append(time.perf_counter() - t0)
        cells = [
            {f"NOVEL_GENE_{i * 100 + j:07d}": float(j % 7) for j in range(100)} for i in range(5000)
        ]
        body = json.dumps({"expression": cells}).encode()
        result: dict[str, object] = {}

        def send() -> None:
            with httpx.Client(base_url=url, timeout=60) as c:
                t0 = time.perf_counter()
                r = c.post(
                    "/predict",
                    content=body,
                    headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
                )
                result.update(status=r.status_code, code=r.json()["error"]["code"])
                result["seconds"] = time.perf_counter() - t0

        t = threading.Thread(target=send)
        t.start()
        during = []
        while t.is_alive() or not during:
            t0 = time.perf_counter()
            h.get("/health")
            during.append(time.perf_counter() - t0)
        t.join()
    finally:
        proc.terminate()
        proc.wait(30)
    out = {
        "body_bytes": len(body),
        **result,
        "health_idle_median_s": statistics.median(idle),
        "health_during_max_s": max(during),
        "health_during_n": len(during),
    }
    print(f"/predict freeze body ({len(body) / 1e6:.1f} MB, 5,000 cells x 100 distinct genes):")
    print(f"  answer {result['status']} {result['code']} in {_ms(float(result['seconds']))}")  # type: ignore[arg-type]
    print(
        f"  /health during it: {len(during)} answers, slowest {_ms(max(during))}; "
        f"at idle: median {_ms(statistics.median(idle))}"
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        results = {
            "intake": intake(args.repeats),
            "refusals": refusals(tmp),
            "predict_freeze": predict_freeze(tmp),
        }
    out = ROOT / "benchmarks" / "results" / "hostile.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
