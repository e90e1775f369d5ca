"""Files of the platform (datasets, models, run results) under one storage folder."""

from __future__ import annotations

import contextlib
import re
import shutil
import time
import unicodedata
from pathlib import Path

from cellfoundry.errors import CellfoundryError

SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_UNSAFE_CHARS = re.compile(r"[^\w.-]+")  # letters and digits of every script are kept
MAX_NAME_BYTES = 120
#: what an upload leaves under tmp/ while it is received (``*.part``) and checked (``intake-*``)
TMP_LEFTOVERS = ("*.part", "intake-*")


def safe_filename(name: str, default: str = "upload") -> str:
    """A file name without folders, control characters or leading dots (keeps the extension):
    letters and digits (of any script, NFC), '.', '-' and '_'; its last ``MAX_NAME_BYTES`` bytes
    in UTF-8 (file systems allow 255)."""
    base = re.split(r"[\\/]", unicodedata.normalize("NFC", name or ""))[-1]
    base = _UNSAFE_CHARS.sub("_", base).strip("._") or default
    return base.encode()[-MAX_NAME_BYTES:].decode(errors="ignore")


def check_id(value: str, what: str = "id") -> str:
    """Refuse ids that could escape a folder (only letters, digits, '-' and '_')."""
    if not SAFE_ID.match(value or ""):
        raise CellfoundryError(
            f"invalid {what}: {value!r}",
            "ids contain only letters, digits, '-' and '_'",
            code="invalid_id",
        )
    return value


class FileStorage:
    """Paths inside the storage folder; every path is checked to stay inside it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        for sub in ("datasets", "runs", "models", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def resolve(self, relative: str | Path) -> Path:
        """The absolute path of a stored file; refuses anything outside the storage folder."""
        p = (self.root / relative).resolve()
        if not p.is_relative_to(self.root):
            raise CellfoundryError(
                f"path {relative} leaves the storage folder",
                "use stored paths only",
                code="invalid_path",
            )
        return p

    def relative(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.root))

    def dataset_dir(self, owner_id: str, sha256: str) -> Path:
        """The folder of one owner's upload of some content: owners never share a folder."""
        return self.resolve(
            Path("datasets") / check_id(owner_id, "owner id") / check_id(sha256, "content hash")
        )

    def remove_file(self, relative: str | Path) -> None:
        """Remove a stored file, and its folder when that is left empty."""
        p = self.resolve(relative)
        p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty, or already gone
            p.parent.rmdir()

    def remove_tree(self, relative: str | Path) -> None:
        """Remove a stored folder or file (never the storage folder itself)."""
        p = self.resolve(relative)
        if p == self.root:
            return
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)

    def run_dir(self, run_id: str) -> Path:
        p = self.resolve(Path("runs") / check_id(run_id, "run id"))
        p.mkdir(parents=True, exist_ok=True)
        return p

    def model_dir(self, model_id: str) -> Path:
        return self.resolve(Path("models") / check_id(model_id, "model id"))

    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def sweep_tmp(self, older_than_s: float, now: float | None = None) -> list[str]:
        """Remove upload leftovers under tmp/ (``TMP_LEFTOVERS``) that nothing has written for
        ``older_than_s`` seconds (an intake folder counts its newest file): what an API process
        killed mid-upload or mid-check leaves. Returns the names removed.

        An upload being received writes its ``.part`` at every chunk, so it is removed only when
        its client has sent nothing that long (the upload then answers 409 ``upload_expired``
        if it goes on); an intake folder is written when its check starts, which takes at most
        twice ``intake_cpu_s``."""
        cutoff = (time.time() if now is None else now) - older_than_s
        removed = []
        for pattern in TMP_LEFTOVERS:
            for p in sorted(self.tmp_dir().glob(pattern)):
                try:
                    newest = p.lstat().st_mtime
                    folder = p.is_dir() and not p.is_symlink()
                    if folder:
                        newest = max([newest, *(c.lstat().st_mtime for c in p.iterdir())])
                except FileNotFoundError:  # removed meanwhile (the upload ended)
                    continue
                if newest > cutoff:
                    continue
                if folder:
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p.name)
        return removed

    def remove_run(self, run_id: str) -> None:
        shutil.rmtree(self.resolve(Path("runs") / check_id(run_id, "run id")), ignore_errors=True)
