"""The child side of :func:`cellfoundry.data.untrusted.sandbox.open_untrusted` (limits already set).

Reads a JSON request on stdin, writes one JSON answer to the original stdout: the summary, or a
refusal classified as ``unsafe`` / ``limit`` / ``invalid``. Anything the readers print goes to
stderr. Messages name the file, never the folder it lies in.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

READY = "ready\n"


def main() -> NoReturn:
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    path = Path(".")
    request: Any = None
    try:  # import the readers before the request comes (a spare child waits here, ready)
        import cellfoundry.data.io
        import cellfoundry.data.report
        import cellfoundry.data.untrusted.structure  # noqa: F401
        from cellfoundry.data.genes import gene_table

        gene_table()
        ready = True
    except MemoryError:
        ready = False
    out.write(READY)  # the parent may wait for this before it hands the child a file
    out.flush()
    try:
        request = json.load(sys.stdin)
        path = Path(request["path"])
        if not ready:
            raise MemoryError
        answer = _open(path, request)
    except MemoryError:
        limit = request.get("limits", {}).get("memory_mb") if isinstance(request, dict) else None
        answer = {
            "ok": False,
            "kind": "limit",
            "code": "file_too_large",
            "message": f"opening {path.name} needed more than the intake limit of {limit} MiB "
            "of memory",
            "hint": "upload a smaller dataset (split it by sample)",
        }
    except Exception as exc:
        answer = _refusal(exc, path)
    out.write(json.dumps(answer, default=_default))
    out.flush()
    os._exit(0)  # no interpreter teardown: the parent is waiting for the end of the output


def _open(path: Path, request: dict[str, Any]) -> dict[str, Any]:
    from cellfoundry.data.io import close_backed, read_data
    from cellfoundry.data.report import coverage, validate
    from cellfoundry.data.species import to_human_space
    from cellfoundry.data.untrusted.limits import IntakeLimits
    from cellfoundry.data.untrusted.structure import check_structure
    from cellfoundry.errors import CellfoundryError, FileLimitError

    limits = IntakeLimits.from_dict(request["limits"])
    facts = check_structure(path, limits)
    fmt = facts["format"]
    adata = read_data(path, backed=fmt == "h5ad")
    if adata.n_obs > limits.max_cells or adata.n_vars > limits.max_genes:
        raise FileLimitError(
            f"{path.name} holds {adata.n_obs:,} cells x {adata.n_vars:,} genes; the limits are "
            f"{limits.max_cells:,} cells and {limits.max_genes:,} genes",
            "upload a smaller dataset (split it by sample)",
        )
    report = validate(adata)
    if not report.errors:
        genes, grep = adata, report  # mouse/macaque/pig: coverage of the human orthologs
        if report.orthology is not None:
            try:
                genes, grep = to_human_space(adata, report=report, max_cells=500)
            except CellfoundryError as exc:
                print(f"ortholog mapping failed: {exc}", file=sys.stderr)
        for t in request.get("targets", []):
            try:
                coverage(genes, grep, t["genes"], t["name"], t.get("key_kind"))
            except Exception as exc:  # coverage is informative; it never refuses a file
                print(f"coverage of {t['name']} failed: {exc!r}", file=sys.stderr)
        report.coverage = grep.coverage
    close_backed(adata)
    return {
        "ok": True,
        "format": fmt,
        "n_cells": int(report.n_cells),
        "n_genes": int(report.n_genes),
        "report": _finite(json.loads(json.dumps(report.to_dict(), default=_default))),
        "declared": facts["declared"],
    }


def _refusal(exc: Exception, path: Path) -> dict[str, Any]:
    from cellfoundry.errors import CellfoundryError, FileLimitError, UnsafeFileError

    if isinstance(exc, CellfoundryError):
        kind = (
            "unsafe"
            if isinstance(exc, UnsafeFileError)
            else "limit"
            if isinstance(exc, FileLimitError)
            else "invalid"
        )
        code = exc.code if exc.code != "error" else "unreadable_file"
        return {
            "ok": False,
            "kind": kind,
            "code": code,
            "message": _scrub(exc.message, path),
            "hint": _scrub(exc.hint or "", path) or None,
        }
    print(f"reading {path.name} failed: {exc!r}", file=sys.stderr)
    return {
        "ok": False,
        "kind": "invalid",
        "code": "unreadable_file",
        "message": f"{path.name} could not be read ({type(exc).__name__})",
        "hint": "check that the file is a complete, valid .h5ad, 10x .h5 or CSV/TSV file",
    }


def _scrub(text: str, path: Path) -> str:
    """The message without the folder the file lies in (the server's layout is nobody's business)."""
    for folder in {str(path.parent), str(path.resolve().parent)}:
        if folder not in ("", ".", "/"):
            text = text.replace(folder + os.sep, "").replace(folder, "")
    return text


def _finite(o: Any) -> Any:
    """JSON values with NaN/Inf as null (databases refuse them in JSON columns)."""
    if isinstance(o, float):
        return o if o == o and abs(o) != float("inf") else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_finite(v) for v in o]
    return o


def _default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
