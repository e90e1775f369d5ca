"""Model records: registering artifact folders in the database, readiness, and the demo model.

Used by the service (registration at start-up) and by the workers (fine-tuned models), so it
lives in the store, below both.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from cellfoundry.errors import ModelError
from cellfoundry.store.db import Database
from cellfoundry.store.storage import FileStorage
from cellfoundry.store.tables import ModelRecord, Visibility

log = logging.getLogger("cellfoundry.store")


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:48] or "model"


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def register_model(
    session: Session,
    storage: FileStorage,
    folder: str | Path,
    *,
    model_id: str | None = None,
    owner_id: str | None = None,
    source_run_id: str | None = None,
    copy: bool = True,
    visibility: Visibility | None = None,
) -> ModelRecord:
    """Register an artifact folder (copied into storage when ``copy``); returns the record.

    ``visibility`` defaults to public for models without an owner (demo, admin-registered) and
    private for a user's models (fine-tunes)."""
    from cellfoundry.artifacts import Manifest
    from cellfoundry.models.registry import family_info

    src = Path(folder).resolve()
    manifest = Manifest.read(src)
    info = family_info(manifest.family)
    mid = model_id or slug(manifest.name)
    if session.get(ModelRecord, mid) is not None:
        mid = f"{mid[:40]}-{source_run_id or manifest.genes_sha256[:8]}"[:64]
    dest = src
    if copy and not src.is_relative_to(storage.root):
        dest = storage.model_dir(mid)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src, dest)
    rel = storage.relative(dest) if dest.is_relative_to(storage.root) else str(dest)
    rep = (
        manifest.preprocessing.get("representation", "lognorm")
        if manifest.preprocessing
        else "lognorm"
    )
    rec = ModelRecord(
        id=mid,
        name=manifest.name,
        family=manifest.family,
        path=rel,
        size_bytes=folder_size(dest),
        n_genes=int(manifest.n_genes),
        classes=list(manifest.classes),
        requirements={
            "needs": info.needs,
            "gene_key_kind": manifest.gene_key_kind,
            "representation": rep,
            "n_genes": int(manifest.n_genes),
            "kind": info.kind,
        },
        training_metrics=dict(manifest.metrics or {}),
        ready=True,
        status="ready",
        owner_id=owner_id,
        source_run_id=source_run_id,
        visibility=visibility or (Visibility.PUBLIC if owner_id is None else Visibility.PRIVATE),
    )
    session.add(rec)
    session.flush()
    return rec


def visible_to(uid: str | None) -> ColumnElement[bool]:
    """The models user ``uid`` may see and use: public ones and their own (anonymous: public)."""
    public = ModelRecord.visibility == Visibility.PUBLIC
    return public if uid is None else or_(public, ModelRecord.owner_id == uid)


def can_use(rec: ModelRecord, uid: str | None) -> bool:
    """Whether user ``uid`` may see and use the model of ``rec`` (``visible_to`` in Python)."""
    return rec.visibility == Visibility.PUBLIC or (uid is not None and rec.owner_id == uid)


def check_ready(storage: FileStorage, rec: ModelRecord) -> tuple[bool, str]:
    """Whether the artifact folder is present and intact."""
    from cellfoundry.artifacts import Manifest

    p = Path(rec.path)
    folder = p if p.is_absolute() else storage.resolve(p)
    try:
        Manifest.read(folder)
    except ModelError as exc:
        return False, exc.message
    return True, "ready"


def ensure_demo_model(db: Database, storage: FileStorage) -> str | None:
    """Train and register the demo model when no model is registered; returns its id when created."""
    from cellfoundry.demo import DEMO_MODEL_NAME, train_demo_model

    with db.session() as s:
        if (s.scalar(select(func.count()).select_from(ModelRecord)) or 0) > 0:
            return None
    dest = storage.model_dir(slug(DEMO_MODEL_NAME))
    log.info("no model registered: training the demo model into %s", dest)
    tmp = storage.tmp_dir() / "demo-model"
    if tmp.exists():
        shutil.rmtree(tmp)
    train_demo_model(tmp)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.move(str(tmp), dest)
    with db.session() as s:
        if (s.scalar(select(func.count()).select_from(ModelRecord)) or 0) > 0:
            return None
        rec = register_model(s, storage, dest, model_id=slug(DEMO_MODEL_NAME), copy=False)
        return rec.id
