"""Turning a received upload into a dataset: validate, store one copy per content hash, record."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from sqlalchemy import select

from cellfoundry.errors import CellfoundryError
from cellfoundry.service.platform import Platform
from cellfoundry.service.public import dataset_public
from cellfoundry.service.schemas import DatasetPublic
from cellfoundry.service.upload import Uploaded
from cellfoundry.store.jsonable import jsonable
from cellfoundry.store.tables import Dataset

log = logging.getLogger("cellfoundry.service")


def register_upload(platform: Platform, uid: str, up: Uploaded) -> DatasetPublic:
    """Validate the uploaded file, keep one copy per content hash, and record the dataset."""
    from cellfoundry.data.io import detect_format, read_data
    from cellfoundry.data.report import coverage, validate

    with platform.db.session() as s:
        existing = s.scalar(
            select(Dataset).where(Dataset.owner_id == uid, Dataset.sha256 == up.sha256)
        )
        if existing is not None:
            return dataset_public(existing, duplicate=True)
    folder = platform.storage.dataset_dir(up.sha256)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / up.filename
    if not dest.exists():
        os.replace(up.path, dest)  # same file system (storage/tmp): a rename, not a copy
    try:
        fmt = detect_format(dest)
        adata = read_data(dest, backed=fmt == "h5ad")
        report = validate(adata)
        if report.errors:
            first = report.errors[0]
            raise CellfoundryError(
                f"{up.filename}: {first.message}", first.hint, code=first.code, status=422
            )
        for mid, lm in list(platform.predictor.models.items()):
            ann = lm.annotator
            try:
                coverage(
                    adata,
                    report,
                    ann.genes,
                    f"model {mid}",
                    "ensembl" if ann.manifest.gene_key_kind == "ensembl" else "symbol",
                )
            except Exception as exc:  # coverage is informative; never block the upload on it
                log.warning("coverage for %s failed: %s", mid, exc)
        if getattr(adata, "isbacked", False):
            adata.file.close()
    except CellfoundryError as exc:
        _drop_blob(folder, dest)
        raise CellfoundryError(
            exc.message,
            exc.hint,
            code=exc.code if exc.code != "error" else "unreadable_file",
            status=422,
        ) from exc
    except Exception as exc:
        _drop_blob(folder, dest)
        raise CellfoundryError(
            f"{up.filename} could not be read: {type(exc).__name__}: {exc}",
            "upload a valid .h5ad, 10x .h5 or cells x genes CSV",
            code="unreadable_file",
            status=422,
        ) from exc
    with platform.db.session() as s:
        existing = s.scalar(
            select(Dataset).where(Dataset.owner_id == uid, Dataset.sha256 == up.sha256)
        )
        if existing is not None:
            return dataset_public(existing, duplicate=True)
        d = Dataset(
            owner_id=uid,
            sha256=up.sha256,
            filename=up.filename,
            path=platform.storage.relative(dest),
            size_bytes=up.size,
            format=fmt,
            n_cells=report.n_cells,
            n_genes=report.n_genes,
            report=jsonable(report.to_dict()),
        )
        s.add(d)
        s.flush()
        return dataset_public(d)


def _drop_blob(folder: Path, dest: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
