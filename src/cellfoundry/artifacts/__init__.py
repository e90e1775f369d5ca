"""Versioned model artifacts: manifest, safetensors weights, gene lists."""

from cellfoundry.artifacts.cells import (
    TRAINING_CELLS_FILE,
    cell_keys,
    read_training_cells,
    trained_on,
    write_training_cells,
)
from cellfoundry.artifacts.manifest import MANIFEST, Manifest, library_versions, sha256_file
from cellfoundry.artifacts.tensors import load_arrays, load_genes, save_arrays, save_genes

__all__ = [
    "MANIFEST",
    "TRAINING_CELLS_FILE",
    "Manifest",
    "cell_keys",
    "library_versions",
    "load_arrays",
    "load_genes",
    "read_training_cells",
    "save_arrays",
    "save_genes",
    "sha256_file",
    "trained_on",
    "write_training_cells",
]
