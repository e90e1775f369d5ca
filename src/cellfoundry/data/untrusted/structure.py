"""The structural check of an untrusted file, by format, before any of its data is read."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from cellfoundry.data.io import detect_format
from cellfoundry.data.untrusted.hdf5 import check_hdf5
from cellfoundry.data.untrusted.limits import IntakeLimits
from cellfoundry.data.untrusted.text import check_mex, check_table
from cellfoundry.errors import DataError, UnsafeFileError


def check_structure(path: str | Path, limits: IntakeLimits) -> dict[str, Any]:
    """The format and what the file declares; raises when it reaches outside itself or past ``limits``."""
    p = Path(path)
    if p.is_symlink():
        raise UnsafeFileError(f"{p.name} is a symbolic link; refused", "upload the file itself")
    fmt = detect_format(p)
    declared: dict[str, Any]
    if fmt in ("h5ad", "10x_h5"):
        try:
            declared = asdict(check_hdf5(p, limits))
        except OSError:  # h5py: not an HDF5 file, truncated, unreadable superblock
            raise DataError(
                f"could not read {p.name} as {fmt}: it is not a valid HDF5 file",
                f"check that the file is a complete, valid {fmt} file",
            ) from None
    elif fmt == "10x_mex":
        genes, cells, nnz = check_mex(p, limits)
        declared = {"genes": genes, "cells": cells, "nnz": nnz}
    else:
        rows, cols = check_table(p, "," if fmt == "csv" else "\t", limits)
        declared = {"rows": rows, "columns": cols}
    return {"format": fmt, "declared": declared}
