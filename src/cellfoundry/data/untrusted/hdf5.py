"""A walk over an HDF5 file's structure that reads no data: links, storage, filters, declared sizes.

HDF5 can make a dataset's bytes come from elsewhere: external storage (raw bytes of any file),
external links (an object in another HDF5 file) and virtual datasets (a mapping onto other files).
Reading such a dataset reads a file the server can see, so these are refused outright. With
``limits`` the walk also refuses declared sizes, object counts and compression filters beyond
them, which is what a file must pass before a process reads any of its data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from h5py import h5a, h5d, h5l, h5o, h5z

from cellfoundry.data.untrusted.limits import IntakeLimits
from cellfoundry.errors import DataError, FileLimitError, UnsafeFileError

# filters built into HDF5/h5py; anything else would load a plugin library to decompress
BUILTIN_FILTERS = {
    h5z.FILTER_DEFLATE,
    h5z.FILTER_SHUFFLE,
    h5z.FILTER_FLETCHER32,
    h5z.FILTER_SZIP,
    h5z.FILTER_NBIT,
    h5z.FILTER_SCALEOFFSET,
    h5z.FILTER_LZF,
}
REWRITE_HINT = (
    "write the file again with anndata or h5py so that every array is stored inside it "
    "(e.g. adata = anndata.read_h5ad(path); adata.write_h5ad('copy.h5ad'))"
)


@dataclass
class Hdf5Facts:
    """What the structure of an HDF5 file declares (no data read, except small shape records)."""

    n_objects: int = 0
    declared_bytes: int = 0
    # matrix path -> declared shape, as stored (h5ad: cells x genes; 10x: genes x cells)
    matrices: dict[str, list[int]] = field(default_factory=dict)


def _show(path: bytes) -> str:
    text = path.decode("utf-8", errors="replace")
    return text if len(text) <= 120 else text[:117] + "..."


def check_hdf5(path: str | Path, limits: IntakeLimits | None = None) -> Hdf5Facts:
    """Refuse links, external storage and virtual datasets; with ``limits``, also sizes beyond them.

    Raises :class:`UnsafeFileError` (nothing outside the file may be read) or
    :class:`FileLimitError` (the file declares more than ``limits`` allow).
    """
    with h5py.File(path, "r") as f:  # OSError: not an HDF5 file
        try:
            return _walk(f, limits)
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise DataError(
                f"the HDF5 structure of {Path(path).name} could not be read "
                f"({type(exc).__name__}); refused",
                "check that the file is complete; write it again with anndata or h5py",
            ) from None


def _walk(f: h5py.File, limits: IntakeLimits | None) -> Hdf5Facts:
    facts = Hdf5Facts()
    root = f.id
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[bytes, Any]] = [(b"/", root)]
    _check_attributes(root, b"/", limits)
    while stack:
        gpath, gid = stack.pop()
        names: list[bytes] = []

        def collect(name: bytes, names: list[bytes] = names) -> int | None:
            names.append(name)
            if limits is not None and len(names) > limits.max_objects:
                return 1  # stop: too many members
            return None

        gid.links.iterate(collect)
        for name in names:
            full = gpath.rstrip(b"/") + b"/" + name
            _check_link(gid, name, full)
            oid = h5o.open(gid, name)
            info = h5o.get_info(oid)
            key = (int(info.fileno), int(info.addr))
            if key in seen:
                continue
            seen.add(key)
            facts.n_objects += 1
            if limits is not None and facts.n_objects > limits.max_objects:
                raise FileLimitError(
                    f"the file holds more than {limits.max_objects:,} HDF5 objects",
                    "single-cell files hold a few hundred; remove unused entries (e.g. in uns)",
                )
            _check_attributes(oid, full, limits)
            if info.type == h5o.TYPE_GROUP:
                stack.append((full, oid))
                if limits is not None:
                    _group_matrix_shape(oid, full, facts, limits)
            elif info.type == h5o.TYPE_DATASET:
                _check_dataset(oid, full, facts, limits)
    return facts


def _check_link(gid: Any, name: bytes, full: bytes) -> None:
    kind = gid.links.get_info(name).type
    if kind == h5l.TYPE_HARD:
        return
    what = {
        h5l.TYPE_EXTERNAL: "an external link to another file",
        h5l.TYPE_SOFT: "a soft link",
    }.get(kind, "a user-defined link")
    raise UnsafeFileError(
        f"'{_show(full)}' is {what}; files whose objects point elsewhere are refused",
        REWRITE_HINT,
    )


def _check_dataset(did: Any, full: bytes, facts: Hdf5Facts, limits: IntakeLimits | None) -> None:
    dcpl = did.get_create_plist()
    if dcpl.get_layout() == h5d.VIRTUAL:
        raise UnsafeFileError(
            f"'{_show(full)}' is a virtual dataset (its data lives in other files); refused",
            REWRITE_HINT,
        )
    if dcpl.get_external_count() > 0:
        raise UnsafeFileError(
            f"'{_show(full)}' uses HDF5 external storage (its bytes come from files outside "
            "this one); refused",
            REWRITE_HINT,
        )
    if limits is None:
        return
    for i in range(dcpl.get_nfilters()):
        code, _flags, _values, fname = dcpl.get_filter(i)
        if code not in BUILTIN_FILTERS:
            raise UnsafeFileError(
                f"'{_show(full)}' is compressed with filter {code} "
                f"({fname.decode(errors='replace')[:40]}), which is not built into HDF5",
                "compress with gzip or lzf (anndata's write_h5ad(compression='gzip'))",
            )
    dims = did.get_space().get_simple_extent_dims() or ()
    size = int(np.prod([int(d) for d in dims], dtype=object)) * int(did.get_type().get_size())
    if size > limits.max_dataset_bytes:
        raise FileLimitError(
            f"'{_show(full)}' declares {_gib(size)} of data (shape {tuple(int(d) for d in dims)}), "
            f"more than the limit of {_gib(limits.max_dataset_bytes)}",
            "upload a smaller dataset (split it by sample), or raise the intake limits",
        )
    facts.declared_bytes += size
    if facts.declared_bytes > limits.max_total_bytes:
        raise FileLimitError(
            f"the file declares more than {_gib(limits.max_total_bytes)} of data in total",
            "upload a smaller dataset (split it by sample), or raise the intake limits",
        )
    if (full in (b"/X", b"/raw/X") or full.startswith(b"/layers/")) and len(dims) == 2:
        _matrix_dims(full, [int(d) for d in dims], facts, limits, cells_first=True)


def _check_attributes(oid: Any, full: bytes, limits: IntakeLimits | None) -> None:
    if limits is None:
        return
    n = h5o.get_info(oid).num_attrs
    if n > limits.max_objects:
        raise FileLimitError(
            f"'{_show(full)}' has {n:,} attributes", "remove the unneeded attributes"
        )
    sizes: list[tuple[bytes, int]] = []
    h5a.iterate(oid, lambda name, info: sizes.append((name, int(info.data_size))), info=True)
    for name, size in sizes:
        if size > limits.max_attribute_bytes:
            raise FileLimitError(
                f"attribute '{_show(name)}' of '{_show(full)}' holds {_gib(size)}, more than "
                f"{_gib(limits.max_attribute_bytes)}",
                "store large values as datasets, not attributes",
            )


def _small_int_pair(values: Any) -> list[int] | None:
    arr = np.asarray(values)
    if arr.shape != (2,) or arr.dtype.kind not in "iu":
        return None
    return [int(v) for v in arr]


def _group_matrix_shape(gid: Any, full: bytes, facts: Hdf5Facts, limits: IntakeLimits) -> None:
    """Declared shapes of sparse matrices: anndata's ``shape`` attribute, 10x's ``shape`` dataset."""
    if h5a.exists(gid, b"shape"):
        attr = h5a.open(gid, b"shape")
        if attr.get_storage_size() <= 64 and attr.dtype.kind in "iu":
            buf = np.empty(attr.shape, attr.dtype)
            attr.read(buf)
            dims = _small_int_pair(buf)
            if dims is not None:
                _matrix_dims(full, dims, facts, limits, cells_first=True)
    if gid.links.exists(b"shape") and gid.links.get_info(b"shape").type == h5l.TYPE_HARD:
        did = h5o.open(gid, b"shape")
        if h5o.get_info(did).type != h5o.TYPE_DATASET:
            return
        dims_decl = did.get_space().get_simple_extent_dims() or ()
        if tuple(int(d) for d in dims_decl) == (2,) and did.dtype.kind in "iu":
            _check_dataset(did, full + b"/shape", Hdf5Facts(), limits)  # before reading 2 numbers
            buf = np.empty((2,), did.dtype)
            did.read(h5py.h5s.ALL, h5py.h5s.ALL, buf)
            dims = _small_int_pair(buf)
            if dims is not None:
                _matrix_dims(full, dims, facts, limits, cells_first=False)


def _matrix_dims(
    full: bytes, dims: list[int], facts: Hdf5Facts, limits: IntakeLimits, *, cells_first: bool
) -> None:
    cells, genes = (dims[0], dims[1]) if cells_first else (dims[1], dims[0])
    if cells < 0 or genes < 0 or cells > limits.max_cells or genes > limits.max_genes:
        raise FileLimitError(
            f"'{_show(full)}' declares {cells:,} cells x {genes:,} genes; the limits are "
            f"{limits.max_cells:,} cells and {limits.max_genes:,} genes",
            "upload a smaller dataset (split it by sample), or raise the intake limits",
        )
    facts.matrices[_show(full)] = dims


def _gib(n: int) -> str:
    if n >= 1024**3:
        return f"{n / 1024**3:,.1f} GiB"
    if n >= 1024**2:
        return f"{n / 1024**2:,.1f} MiB"
    return f"{n:,} bytes"
