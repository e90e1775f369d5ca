"""Untrusted input: files are checked and read in a separate, limited process before use.

- :func:`open_untrusted` (``sandbox``): the only way the service opens an upload; returns an
  :class:`IntakeSummary` or raises ``UnsafeFileError`` (422) / ``FileLimitError`` (413) /
  ``DataError`` (422).
- :func:`check_hdf5` (``hdf5``): refuses external storage, external/soft links and virtual
  datasets without reading data; ``cellfoundry.data.io`` runs it before every HDF5 read.
- ``text``: gzip ratio/size caps, CSV/TSV column and line limits, 10x MEX header checks.
"""

from cellfoundry.data.untrusted.hdf5 import check_hdf5
from cellfoundry.data.untrusted.limits import IntakeLimits
from cellfoundry.data.untrusted.sandbox import (
    CoverageTarget,
    IntakeSummary,
    open_untrusted,
    prepare,
)

__all__ = [
    "CoverageTarget",
    "IntakeLimits",
    "IntakeSummary",
    "check_hdf5",
    "open_untrusted",
    "prepare",
]
