"""The fault matrix on PostgreSQL + Celery/Redis, printed as a table.

Runs the same harness as ``tests/service/test_fault_matrix.py`` (its own PostgreSQL cluster and
redis-server on free ports; `cellfoundry serve` and Celery workers as subprocesses) and prints,
per fault: runs, succeeded, identical to an uninterrupted run, stuck, duplicated, and the
recovery time (from the last fault injected until every run of that row was final).

    PYTHONPATH=src:. python benchmarks/fault_matrix.py [--kills 10] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.service.fault_matrix import describe, matrix, run_all, table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=10, help="worker kills (one run each)")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    from cellfoundry.demo import train_demo_model

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cf-fault-matrix-") as tmp:
        root = Path(tmp)
        model = train_demo_model(root / "model")
        state = root / "state"
        state.mkdir()
        with matrix(state, args.shared, model) as m:
            rows = run_all(m, kills=args.kills)
    print(table(rows))
    problems = describe(rows)
    if problems:
        print("problems:", json.dumps(problems, indent=2))
    print(f"total wall time {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    sys.exit(0 if all(r.ok for r in rows) else 1)


if __name__ == "__main__":
    main()
