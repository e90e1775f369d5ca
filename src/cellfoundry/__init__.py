"""cellfoundry: annotate single-cell RNA-seq data with foundation models and baselines, honestly."""

from cellfoundry.api import annotate, inspect, load_model, train
from cellfoundry.consensus import ConsensusResult, consensus
from cellfoundry.errors import CellfoundryError, CoverageError, DataError, ModelError
from cellfoundry.result import AnnotationResult

__version__ = "0.1.0"

__all__ = [
    "AnnotationResult",
    "CellfoundryError",
    "ConsensusResult",
    "CoverageError",
    "DataError",
    "ModelError",
    "__version__",
    "annotate",
    "consensus",
    "inspect",
    "load_model",
    "train",
]
