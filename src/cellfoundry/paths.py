"""Where cellfoundry keeps its state: ``$CELLFOUNDRY_HOME`` (default ``~/.cellfoundry``)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The state folder (created on first use)."""
    p = (
        Path(os.environ.get("CELLFOUNDRY_HOME") or Path.home() / ".cellfoundry")
        .expanduser()
        .resolve()
    )
    p.mkdir(parents=True, exist_ok=True)
    return p


def checkpoints_dir() -> Path:
    """Registered foundation-model checkpoints (``cellfoundry models import``)."""
    p = home() / "checkpoints"
    p.mkdir(parents=True, exist_ok=True)
    return p
