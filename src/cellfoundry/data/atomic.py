"""Outputs that appear whole or not at all: written beside their final path, then renamed.

A crash, a full disk or Ctrl-C while an output is written leaves the previous file at that
path as it was (an input annotated in place included), never a half-written one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: the prefix of a file being written (hidden; the final name follows, so its suffix is kept)
PARTIAL_PREFIX = ".partial-"


def partial_path(path: str | Path) -> Path:
    """Where ``path`` is written before it is renamed: same folder (so the rename is atomic),
    hidden, this process's id, and the final name last (writers that read the suffix, e.g.
    ``.csv.gz`` for compression, see the same one)."""
    p = Path(path)
    return p.with_name(f"{PARTIAL_PREFIX}{os.getpid()}-{p.name}")


@contextmanager
def written_atomically(path: str | Path) -> Iterator[Path]:
    """Yield the path to write instead of ``path``; on success it replaces ``path`` (one
    rename), on any exception it is deleted and ``path`` is left untouched."""
    final = Path(path)
    tmp = partial_path(final)
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)
