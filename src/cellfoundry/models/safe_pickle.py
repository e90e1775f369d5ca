"""A restricted unpickler for dictionaries shipped as pickles (Geneformer's token/median dicts).

Only plain containers, strings, numbers and numpy scalars are admitted; any other global (the
way a crafted pickle runs code) is refused with an error.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from cellfoundry.errors import ModelError

_ALLOWED: set[tuple[str, str]] = {
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "str"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "bool"),
    ("collections", "OrderedDict"),
    # numpy scalars (np.int16 / np.float64 values) are pickled as scalar(dtype, bytes)
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "dtype"),
}


class UnsafePickleError(ModelError):
    code = "unsafe_pickle"


class _Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refused to unpickle {module}.{name}: only plain containers, strings and numbers are allowed",
            "use the official dictionary files; this file may have been tampered with",
        )


def safe_load_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` admitting only plain data (raises UnsafePickleError otherwise)."""
    data = Path(path).read_bytes()
    return _Restricted(io.BytesIO(data)).load()
