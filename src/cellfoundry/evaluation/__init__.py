"""Metrics, confusion, calibration and reports."""

from typing import Any


def evaluate(*args: Any, **kwargs: Any) -> Any:
    """Compare baselines and fine-tuning methods over seeds and write a report folder.

    See :func:`cellfoundry.evaluation.compare.evaluate` (imported lazily: torch loads on use).
    """
    from cellfoundry.evaluation.compare import evaluate as _evaluate

    return _evaluate(*args, **kwargs)
