"""Versioned model artifacts: manifest, safetensors weights, gene lists."""

from cellfoundry.artifacts.manifest import MANIFEST, Manifest, library_versions, sha256_file
from cellfoundry.artifacts.tensors import load_arrays, load_genes, save_arrays, save_genes

__all__ = [
    "MANIFEST",
    "Manifest",
    "library_versions",
    "load_arrays",
    "load_genes",
    "save_arrays",
    "save_genes",
    "sha256_file",
]
