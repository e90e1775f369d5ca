"""The manifest of a versioned model artifact folder (``manifest.json``)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from cellfoundry.errors import ModelError
from cellfoundry.ontology import map_labels

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_LIBS = (
    "cellfoundry",
    "numpy",
    "scipy",
    "scikit-learn",
    "anndata",
    "scanpy",
    "torch",
    "transformers",
    "peft",
    "safetensors",
)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a model's numbers."""
    out = {"python": platform.python_version()}
    for lib in _LIBS:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return out


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class Manifest:
    """Everything needed to reproduce and judge a trained model."""

    family: str
    name: str
    classes: list[str]
    genes_sha256: str
    n_genes: int
    gene_key_kind: str  # "symbol" | "ensembl"
    preprocessing: dict[str, Any]
    unknown_threshold: float
    temperature: float = 1.0
    version: str = "1"
    format_version: int = FORMAT_VERSION
    created_at: str = field(default_factory=now_iso)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    library_versions: dict[str, str] = field(default_factory=library_versions)
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    extra: dict[str, Any] = field(default_factory=dict)
    # Cell Ontology term of every class (cellfoundry.ontology.LabelMapping.to_dict())
    ontology: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        if not self.ontology.get("matches"):
            self.ontology = map_labels(self.classes).to_dict()
        self.files = {
            p.name: sha256_file(p)
            for p in sorted(folder.iterdir())
            if p.is_file() and p.name != MANIFEST
        }
        path = folder / MANIFEST
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False))
        return path

    @classmethod
    def read(cls, folder: str | Path, verify: bool = True) -> Manifest:
        path = Path(folder) / MANIFEST
        if not path.is_file():
            raise ModelError(
                f"{folder} has no {MANIFEST}", "point to a folder written by `cellfoundry train`"
            )
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ModelError(
                f"{path} is not valid JSON: {exc}", "restore the artifact from its source"
            ) from exc
        known = {f for f in cls.__dataclass_fields__}
        missing = [k for k in ("family", "name", "classes", "genes_sha256") if k not in raw]
        if missing:
            raise ModelError(
                f"{path} lacks required fields {missing}",
                "re-create the artifact with `cellfoundry train`",
            )
        if raw.get("format_version", 1) > FORMAT_VERSION:
            raise ModelError(
                f"{path} has format version {raw['format_version']}, newer than this cellfoundry understands",
                "upgrade cellfoundry",
            )
        m = cls(**{k: v for k, v in raw.items() if k in known})
        if verify:
            for name, digest in m.files.items():
                f = Path(folder) / name
                if not f.is_file():
                    raise ModelError(
                        f"artifact file {name} is missing from {folder}",
                        "restore the full artifact folder",
                    )
                if sha256_file(f) != digest:
                    raise ModelError(
                        f"artifact file {name} does not match its sha256 in {MANIFEST}",
                        "the artifact was modified or corrupted; restore it",
                    )
        return m
