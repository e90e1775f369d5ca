"""scGPT: published checkpoint loading, tokenisation and cell embeddings (``ScGPTModel``)."""

from cellfoundry.models.scgpt.config import ScGPTConfig
from cellfoundry.models.scgpt.model import ScGPTModel
from cellfoundry.models.scgpt.vocab import ScGPTVocab

__all__ = ["ScGPTConfig", "ScGPTModel", "ScGPTVocab"]
