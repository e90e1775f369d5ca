"""The limits under which an untrusted file is opened (shapes, sizes, columns, memory, CPU time)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

GiB = 1024**3
MiB = 1024**2


@dataclass(frozen=True)
class IntakeLimits:
    """What an uploaded file may declare or need before it is refused (HTTP 413).

    Declared sizes are checked from the file's structure before any data is read; memory and CPU
    time bound the separate process that then opens the file.
    """

    max_cells: int = 20_000_000
    max_genes: int = 500_000
    max_dataset_bytes: int = 32 * GiB  # one HDF5 dataset, decompressed, as declared
    max_total_bytes: int = 128 * GiB  # all HDF5 datasets together, as declared
    max_objects: int = 100_000  # HDF5 groups + datasets
    max_attribute_bytes: int = 16 * MiB  # one HDF5 attribute
    max_columns: int = 100_000  # CSV/TSV columns
    max_line_bytes: int = 64 * MiB  # one CSV/TSV/MEX line
    max_table_values: int = 500_000_000  # CSV/TSV rows x columns (read densely)
    max_nnz: int = 4_000_000_000  # non-zero entries declared by a MEX matrix
    max_text_bytes: int = 32 * GiB  # a text file, decompressed
    max_gzip_ratio: float = 200.0  # decompressed / compressed bytes ...
    gzip_ratio_floor_bytes: int = 64 * MiB  # ... checked once this much is decompressed
    memory_mb: int = 6144  # address space of the process that opens the file
    cpu_s: int = 600  # CPU seconds of that process (wall time: twice this)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IntakeLimits:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
