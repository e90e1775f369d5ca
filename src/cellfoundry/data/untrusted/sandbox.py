"""Opening an untrusted file in a separate process under memory and CPU-time limits.

The calling process never reads the file: a child Python process sets ``setrlimit`` limits
before it imports anything, checks the file's structure (:mod:`.structure`), reads it with the
ordinary readers and answers with a small JSON summary (format, shape, validation report) or a
classified refusal. The child gets a minimal environment (no credentials, no database URL) and
an empty working folder.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellfoundry.data.untrusted.limits import IntakeLimits, MiB
from cellfoundry.errors import CellfoundryError, DataError, FileLimitError, UnsafeFileError

log = logging.getLogger(__name__)

MAX_SUMMARY_BYTES = 64 * MiB
FORMATS = ("h5ad", "10x_h5", "10x_mex", "csv", "tsv")

# Runs first in the child: limits are in force before any library is imported or byte is read.
_BOOT = """\
import resource, sys
mem, cpu, fsize = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
try:
    from cellfoundry.data.untrusted.child import main
except MemoryError:
    sys.stdout.write('{"ok": false, "kind": "limit", "code": "file_too_large", "message": '
                     '"the intake memory limit is too small to start the reader", "hint": null}')
    sys.exit(0)
sys.exit(main())
"""
_READY = b"ready\n"  # what a child writes once its readers are imported (child.READY)
_CHILD_FILE_BYTES = 64 * MiB  # caches libraries may write into the child's own folder
_KEEP_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT")


@dataclass(frozen=True)
class CoverageTarget:
    """A gene list (e.g. a model's vocabulary) whose coverage by the file goes into the report."""

    name: str
    genes: Sequence[str]
    key_kind: str | None = None  # "symbol", "ensembl" or None (guessed)


@dataclass(frozen=True)
class IntakeSummary:
    """What the sandboxed process found: all a caller needs, without reading the file itself."""

    format: str
    n_cells: int
    n_genes: int
    report: dict[str, Any]  # ValidationReport.to_dict() with coverage of the targets
    declared: dict[str, Any] = field(default_factory=dict)  # what the structure declared

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [m for m in self.report.get("messages", []) if m.get("level") == "error"]


def open_untrusted(
    path: str | Path,
    *,
    limits: IntakeLimits | None = None,
    targets: Sequence[CoverageTarget] = (),
) -> IntakeSummary:
    """Check and read ``path`` in a separate, limited process; return its summary or raise.

    Raises :class:`UnsafeFileError` (422: the file reaches outside itself),
    :class:`FileLimitError` (413: it declares or needs more than ``limits``) or
    :class:`DataError` (422: it cannot be read as single-cell data).
    """
    lim = limits or IntakeLimits()
    p = Path(path).absolute()
    request = json.dumps(
        {
            "path": str(p),
            "limits": lim.to_dict(),
            "targets": [
                {"name": t.name, "genes": list(t.genes), "key_kind": t.key_kind} for t in targets
            ],
        }
    ).encode()
    wall = 2 * lim.cpu_s + 30
    child = _take_child(lim)
    try:
        try:
            stdout, _ = child.proc.communicate(request, timeout=wall)
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.communicate()
            raise FileLimitError(
                f"opening {p.name} took longer than {wall} s",
                "upload a smaller dataset (split it by sample)",
            ) from None
        stdout = stdout.removeprefix(_READY)
        child.stderr.seek(max(0, child.stderr.seek(0, os.SEEK_END) - 4000))
        tail = child.stderr.read().decode(errors="replace")
    finally:
        child.close()
    return _answer(p, child.proc.returncode, stdout, tail, lim)


@dataclass
class _Child:
    """A started child process (imports done, waiting for its one request) and its own folder."""

    proc: subprocess.Popen[bytes]
    work: Path
    stderr: Any
    key: tuple[int, int, int]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()
        shutil.rmtree(self.work, ignore_errors=True)


_spare_lock = threading.Lock()
_spare: list[_Child] = []  # at most one child started ahead, so an upload need not wait for imports


def prepare(limits: IntakeLimits | None = None, timeout: float = 120.0) -> bool:
    """Start the spare child for ``limits`` (if none waits) and wait until its readers are loaded.

    Optional: a server calls it at start so that its first upload does not wait for imports.
    Returns whether the spare was ready within ``timeout`` seconds.
    """
    lim = limits or IntakeLimits()
    key = (lim.memory_mb, lim.cpu_s, os.getpid())
    with _spare_lock:
        spare = _spare[-1] if _spare else None
        if spare is None or spare.key != key or spare.proc.poll() is not None:
            for c in _spare:
                c.close()
            _spare.clear()
            spare = _start_child(lim)
            _spare.append(spare)
    assert spare.proc.stdout is not None
    readable, _, _ = select.select([spare.proc.stdout], [], [], timeout)
    return bool(readable)


@atexit.register
def _close_spare() -> None:
    with _spare_lock:
        spares = list(_spare)
        _spare.clear()
    for c in spares:
        c.close()


def _start_child(lim: IntakeLimits) -> _Child:
    work = Path(tempfile.mkdtemp(prefix="cf-intake-"))
    cmd = [
        sys.executable,
        "-B",
        "-c",
        _BOOT,
        str(lim.memory_mb * MiB),
        str(lim.cpu_s),
        str(_CHILD_FILE_BYTES),
    ]
    err = open(work / "stderr.log", "w+b")  # noqa: SIM115 (closed by _Child.close)
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=err,
        env=_child_env(work),
        cwd=work,
        start_new_session=True,
    )
    return _Child(proc, work, err, (lim.memory_mb, lim.cpu_s, os.getpid()))


def _take_child(lim: IntakeLimits) -> _Child:
    """The spare child when it matches the limits (else a new one); then start the next spare."""
    key = (lim.memory_mb, lim.cpu_s, os.getpid())
    with _spare_lock:
        spare = _spare.pop() if _spare else None
    if spare is not None and (spare.key != key or spare.proc.poll() is not None):
        spare.close()
        spare = None
    child = spare or _start_child(lim)
    nxt = _start_child(lim)
    with _spare_lock:
        _spare.append(nxt)
        extra = _spare[:-1]
        del _spare[:-1]
    for c in extra:
        c.close()
    return child


def _child_env(work: Path) -> dict[str, str]:
    env = {k: os.environ[k] for k in _KEEP_ENV if k in os.environ}
    src = str(Path(__file__).resolve().parents[3])  # the folder holding this cellfoundry package
    env.update(
        PYTHONPATH=src,
        HOME=str(work),
        TMPDIR=str(work),
        MPLCONFIGDIR=str(work),
        NUMBA_CACHE_DIR=str(work),
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        NUMBA_NUM_THREADS="1",
        HDF5_USE_FILE_LOCKING="FALSE",
        HDF5_PLUGIN_PATH=str(work / "no-plugins"),
        PYTHONHASHSEED="0",
    )
    return env


def _answer(p: Path, rc: int, stdout: bytes, stderr_tail: str, lim: IntakeLimits) -> IntakeSummary:
    if rc < 0 and -rc in (signal.SIGXCPU, signal.SIGKILL):
        raise FileLimitError(
            f"opening {p.name} needed more than {lim.cpu_s} s of CPU time",
            "upload a smaller dataset (split it by sample)",
        )
    try:
        if rc != 0 or len(stdout) > MAX_SUMMARY_BYTES:
            raise ValueError(f"exit status {rc}, {len(stdout)} bytes of output")
        answer = json.loads(stdout)
        if not isinstance(answer, dict):
            raise ValueError("the answer is not an object")
        if answer.get("ok") is True:
            return _summary(answer)
        _raise_refusal(answer)
    except CellfoundryError:
        raise
    except Exception as exc:
        log.warning("intake of %s failed: %s; stderr: %s", p.name, exc, stderr_tail[-2000:])
        name = signal.Signals(-rc).name if rc < 0 and -rc in signal.valid_signals() else None
        raise DataError(
            f"{p.name} could not be read"
            + (f": the reading process was stopped by {name}" if name else ""),
            "check that the file is a complete, valid .h5ad, 10x .h5 or CSV/TSV file",
            code="unreadable_file",
        ) from None
    raise AssertionError("unreachable")


_KINDS: dict[str, type[DataError]] = {
    "unsafe": UnsafeFileError,
    "limit": FileLimitError,
    "invalid": DataError,
}


def _raise_refusal(answer: dict[str, Any]) -> None:
    cls = _KINDS.get(str(answer.get("kind")))
    message, hint, code = answer.get("message"), answer.get("hint"), answer.get("code")
    if cls is None or not isinstance(message, str) or not isinstance(code, str):
        raise ValueError("malformed refusal")
    raise cls(message[:2000], hint[:2000] if isinstance(hint, str) else None, code=code[:64])


def _summary(answer: dict[str, Any]) -> IntakeSummary:
    fmt, n_cells, n_genes = (
        answer.get("format"),
        answer.get("n_cells", -1),
        answer.get("n_genes", -1),
    )
    report, declared = answer.get("report"), answer.get("declared", {})
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    for v in (n_cells, n_genes):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError("cell and gene counts must be non-negative integers")
    if not isinstance(report, dict) or not isinstance(declared, dict):
        raise ValueError("report and declared must be objects")
    msgs = report.get("messages")
    if not isinstance(msgs, list) or not all(
        isinstance(m, dict) and isinstance(m.get("level"), str) and isinstance(m.get("code"), str)
        for m in msgs
    ):
        raise ValueError("report messages must be a list of {level, code, ...}")
    if report.get("n_cells") != n_cells or report.get("n_genes") != n_genes:
        raise ValueError("the report disagrees with the summary")
    return IntakeSummary(
        format=str(fmt),
        n_cells=int(n_cells),
        n_genes=int(n_genes),
        report=report,
        declared=declared,
    )
