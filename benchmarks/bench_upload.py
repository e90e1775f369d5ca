"""Streaming a large .h5ad upload: throughput and the API process's memory (issue #11 §2).

Writes an .h5ad of about ``--mb`` MiB (PBMC 3k's real counts tiled, written chunk by chunk with
h5py; cached under benchmarks/.data/), starts `cellfoundry serve` (SQLite, local queue, its own
home, ``CELLFOUNDRY_UPLOAD_LIMIT_MB`` set) and POSTs the file to /upload as multipart, streamed
from disk by a generator in 1 MiB pieces (httpx sends it chunked; the client never holds the
file). Meanwhile it samples, every 50 ms, the RSS of the API process and the largest RSS among
its children (the intake sandbox that checks and opens the file). Prints MB/s of the whole upload
(streaming + sandbox check + registration), the API process's RSS before and at its peak, the
sandbox's peak, and a refused upload (a limit below the file: 413 after reading how much).
Extrapolation to 5 GB: the RSS does not grow with the file when the peak equals the 1 GB one.

    PYTHONPATH=src python benchmarks/bench_upload.py [--mb 1024] [--mb 256 ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from results_io import write_result

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / ".data"
RESULTS = ROOT / "benchmarks" / "results" / "upload.json"
sys.path.insert(0, str(ROOT))
MiB = 1024 * 1024


def make_h5ad(shared: Path, mib: int) -> Path:
    """An .h5ad of about ``mib`` MiB: PBMC 3k's counts repeated (uncompressed CSR)."""
    import anndata as ad
    import h5py
    import pandas as pd
    import scipy.sparse as sp
    from anndata.io import write_elem

    path = DATA / f"upload_{mib}mib.h5ad"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    src = ad.read_h5ad(shared / "data" / "pbmc3k_labeled_counts.h5ad")
    x = sp.csr_matrix(src.X).astype(np.float32)
    per_copy = x.nnz * 8 + x.shape[0] * 8
    copies = max(1, round(mib * MiB / per_copy))
    n = copies * x.shape[0]
    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        g = f.create_group("X")
        g.attrs["encoding-type"] = "csr_matrix"
        g.attrs["encoding-version"] = "0.1.0"
        g.attrs["shape"] = (n, x.shape[1])
        data = g.create_dataset("data", (copies * x.nnz,), dtype="float32", chunks=(1 << 20,))
        ind = g.create_dataset("indices", (copies * x.nnz,), dtype="int32", chunks=(1 << 20,))
        for k in range(copies):
            data[k * x.nnz : (k + 1) * x.nnz] = x.data
            ind[k * x.nnz : (k + 1) * x.nnz] = x.indices
        base = x.indptr[:-1].astype(np.int64)
        indptr = np.concatenate([base + k * x.nnz for k in range(copies)] + [[copies * x.nnz]])
        g.create_dataset("indptr", data=indptr)
        obs = pd.DataFrame(
            {"cell_type": pd.Categorical(np.tile(src.obs["cell_type"].astype(str), copies))},
            index=[f"cell{i}" for i in range(n)],
        )
        write_elem(f, "obs", obs)
        write_elem(f, "var", src.var)
        for key in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            write_elem(f, key, {})
    tmp.rename(path)
    return path


def multipart(path: Path, boundary: str, piece: int = MiB) -> tuple[Iterator[bytes], int]:
    """The multipart body of ``path`` as field ``file``, read from disk ``piece`` bytes at a time."""
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{path.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head
        with open(path, "rb") as fh:
            while chunk := fh.read(piece):
                yield chunk
        yield tail

    return body(), len(head) + path.stat().st_size + len(tail)


class Sampler(threading.Thread):
    """Peak RSS of a process and of its largest descendant, sampled every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process(pid)
        self.every = every
        self.peak = self.child_peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
                for c in self.proc.children(recursive=True):
                    self.child_peak = max(self.child_peak, c.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(self.every)


def upload(server, path: Path, declare: bool = True) -> dict[str, float | int | str]:
    """POST ``path``; with ``declare`` its Content-Length is sent, else it goes chunked."""
    import httpx
    import psutil

    boundary = uuid.uuid4().hex
    body, length = multipart(path, boundary)
    rss_before = psutil.Process(server.proc.pid).memory_info().rss
    sampler = Sampler(server.proc.pid)
    sampler.start()
    headers = {
        "Authorization": f"Bearer {server.key}",
        "Content-Type": f"multipart/form-data; boundary={boundary}",
    }
    if declare:
        headers["Content-Length"] = str(length)
    t0 = time.perf_counter()
    try:
        with httpx.Client(base_url=server.url, timeout=3600) as c:
            r = c.post("/upload", content=body, headers=headers)
        status, answer = r.status_code, r.text[:300]
    except httpx.HTTPError as exc:  # the server answered and closed while we were still sending
        status, answer = 0, f"{type(exc).__name__}: {exc}"
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    return {
        "status": status,
        "answer": answer,
        "bytes": length,
        "seconds": wall,
        "mb_per_s": length / 1e6 / wall,
        "api_rss_before_mib": rss_before / MiB,
        "api_rss_peak_mib": sampler.peak / MiB,
        "sandbox_rss_peak_mib": sampler.child_peak / MiB,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mb", type=int, nargs="+", default=[256, 1024], help="file sizes in MiB")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = ap.parse_args()
    from tests.service.conftest import Server, base_env

    files = {mib: make_h5ad(args.shared, mib) for mib in sorted(args.mb)}
    biggest = max(files)
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cf-bench-upload-") as tmp:
        home = Path(tmp)
        limit_mb = 2 * biggest + 64
        env = base_env(
            home,
            CELLFOUNDRY_DEMO_MODEL="false",
            CELLFOUNDRY_UPLOAD_LIMIT_MB=str(limit_mb),
            CELLFOUNDRY_STORAGE_DIR=str(home / "storage"),
        )
        server = Server(home, env).start()
        try:
            server.key = server.key or server.new_key("bench")
            for mib, path in files.items():
                row = {"file_mib": mib, **upload(server, path)}
                rows.append(row)
                print(
                    f"{path.stat().st_size / MiB:7.0f} MiB .h5ad: HTTP {row['status']} in "
                    f"{row['seconds']:6.1f} s = {row['mb_per_s']:6.1f} MB/s (stream + sandbox "
                    f"check + register); API RSS {row['api_rss_before_mib']:.0f} -> peak "
                    f"{row['api_rss_peak_mib']:.0f} MiB; sandbox peak "
                    f"{row['sandbox_rss_peak_mib']:.0f} MiB",
                    flush=True,
                )
                if row["status"] != 200:
                    print(row["answer"])
        finally:
            server.stop()
        # the limit: a server that accepts less than the file refuses it (413) while streaming
        small = max(1, biggest // 4)
        env2 = {**env, "CELLFOUNDRY_UPLOAD_LIMIT_MB": str(small)}
        env2["CELLFOUNDRY_HOME"] = str(home / "limited")
        (home / "limited").mkdir()
        limited = Server(home / "limited", env2).start()
        try:
            limited.key = limited.key or limited.new_key("bench")
            refused = upload(limited, files[biggest])
            refused_chunked = upload(limited, files[biggest], declare=False)
        finally:
            limited.stop()
    for how, r in (("declared length", refused), ("chunked, no length", refused_chunked)):
        print(
            f"limit {small} MiB, file {biggest} MiB ({how}): HTTP {r['status'] or 'closed'} "
            f"after {r['seconds']:.2f} s ({r['answer'][:90]}); API RSS peak "
            f"{r['api_rss_peak_mib']:.0f} MiB"
        )
    load_after = os.getloadavg()
    peaks = [float(r["api_rss_peak_mib"]) for r in rows]
    growth = (peaks[-1] - peaks[0]) / max(rows[-1]["file_mib"] - rows[0]["file_mib"], 1)
    summary = {
        "rows": rows,
        "refused": {"limit_mib": small, **refused},
        "refused_chunked": {"limit_mib": small, **refused_chunked},
        "api_rss_growth_mib_per_file_mib": growth,
        "api_rss_extrapolated_5gb_mib": peaks[-1] + growth * (5 * 1024 - rows[-1]["file_mib"]),
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
        "cpu_count": os.cpu_count(),
        "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(
        f"API RSS growth {growth * 1024:.1f} MiB per GiB of upload; extrapolated peak for a 5 GB "
        f"upload {summary['api_rss_extrapolated_5gb_mib']:.0f} MiB "
        f"(load {load_before[0]:.1f}-{load_after[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    write_result(RESULTS, summary)


if __name__ == "__main__":
    main()
