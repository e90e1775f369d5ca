"""Turning a received upload into a dataset: checked and read in a sandbox, stored, recorded.

The API process never opens the uploaded file: :func:`open_untrusted` checks its structure and
reads it in a separate process under memory and CPU-time limits, and only its small summary
(format, shape, validation report, model coverage) comes back. The file is moved into the
dataset storage only after that succeeds, so a refused upload never touches stored data.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from sqlalchemy import select

from cellfoundry.config import Settings
from cellfoundry.data.untrusted import CoverageTarget, IntakeLimits, IntakeSummary, open_untrusted
from cellfoundry.errors import CellfoundryError, TooLargeError
from cellfoundry.service.platform import Platform
from cellfoundry.service.public import dataset_public
from cellfoundry.service.quotas import check_upload_quota, lock_user
from cellfoundry.service.schemas import DatasetPublic
from cellfoundry.service.upload import Uploaded, upload_expired
from cellfoundry.store.tables import Dataset

log = logging.getLogger("cellfoundry.service")


def register_upload(platform: Platform, uid: str, up: Uploaded) -> DatasetPublic:
    """Check the uploaded file in the sandbox, keep one copy per owner and content hash, and
    record the dataset (each owner's files live in their own folder)."""
    with platform.db.session() as s:
        existing = s.scalar(
            select(Dataset).where(Dataset.owner_id == uid, Dataset.sha256 == up.sha256)
        )
        if existing is not None:
            return dataset_public(existing, duplicate=True)
    # the file gets its name (formats are told by it) in a folder of its own under storage/tmp
    staging = Path(tempfile.mkdtemp(prefix="intake-", dir=platform.storage.tmp_dir()))
    try:
        staged = staging / up.filename
        try:
            os.replace(up.path, staged)
        except FileNotFoundError:  # swept from storage/tmp (its client was idle that long)
            raise upload_expired(platform.settings.tmp_sweep_after_s) from None
        summary = _intake(platform, staged, up.filename)
        folder = platform.storage.dataset_dir(uid, up.sha256)  # owners never share a folder
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / up.filename
        if not dest.exists():
            os.replace(staged, dest)  # same file system: a rename
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    with platform.db.session() as s:
        # one upload of this user at a time from here to the commit: the duplicate check and
        # the quota check below cannot both be passed by concurrent uploads
        lock_user(s, uid)
        existing = s.scalar(
            select(Dataset).where(Dataset.owner_id == uid, Dataset.sha256 == up.sha256)
        )
        if existing is not None:
            return dataset_public(existing, duplicate=True)
        try:
            check_upload_quota(s, platform.settings, uid, up.size)
        except TooLargeError:
            platform.storage.remove_file(platform.storage.relative(dest))
            raise
        d = Dataset(
            owner_id=uid,
            sha256=up.sha256,
            filename=up.filename,
            path=platform.storage.relative(dest),
            size_bytes=up.size,
            format=summary.format,
            n_cells=summary.n_cells,
            n_genes=summary.n_genes,
            report=summary.report,
        )
        s.add(d)
        s.flush()
        return dataset_public(d)


def _intake(platform: Platform, staged: Path, filename: str) -> IntakeSummary:
    """The sandbox's summary of ``staged``, with coverage of every preloaded model's genes."""
    targets = [
        CoverageTarget(
            f"model {mid}",
            list(lm.annotator.genes),
            "ensembl" if lm.annotator.manifest.gene_key_kind == "ensembl" else "symbol",
        )
        for mid, lm in list(platform.predictor.models.items())
    ]
    summary = open_untrusted(staged, limits=intake_limits(platform.settings), targets=targets)
    if summary.errors:
        first = summary.errors[0]
        raise CellfoundryError(
            f"{filename}: {first.get('message')}",
            first.get("hint"),
            code=str(first.get("code") or "invalid_data"),
            status=422,
        )
    return summary


def intake_limits(settings: Settings) -> IntakeLimits:
    """The intake limits of these settings (the rest keep the library's defaults)."""
    return IntakeLimits(
        memory_mb=settings.intake_memory_mb,
        cpu_s=settings.intake_cpu_s,
        max_cells=settings.intake_max_cells,
        max_genes=settings.intake_max_genes,
        max_columns=settings.intake_max_columns,
        max_gzip_ratio=settings.intake_max_gzip_ratio,
    )
