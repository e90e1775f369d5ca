"""Where cellfoundry keeps its state: ``Settings.home`` (``$CELLFOUNDRY_HOME``, default ``~/.cellfoundry``)."""

from __future__ import annotations

from pathlib import Path

from cellfoundry.config import Settings


def home(settings: Settings | None = None) -> Path:
    """The state folder (created on first use); read from the environment when no settings given."""
    p = (settings or Settings()).home  # type: ignore[call-arg]
    p.mkdir(parents=True, exist_ok=True)
    return p


def checkpoints_dir(settings: Settings | None = None) -> Path:
    """Registered foundation-model checkpoints (``cellfoundry models import``)."""
    p = home(settings) / "checkpoints"
    p.mkdir(parents=True, exist_ok=True)
    return p
