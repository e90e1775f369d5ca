"""Geneformer (Theodoris et al.): rank-value tokenised Ensembl genes into a Hugging Face BERT."""

from cellfoundry.models.geneformer.model import GeneformerModel

__all__ = ["GeneformerModel"]
