"""SCimilarity: an MLP encoder of log1p-CP10k expression into a 128-d cell space, with kNN annotation."""

from cellfoundry.models.scimilarity.knn import KNNResult, LabelledReference, cosine_knn
from cellfoundry.models.scimilarity.model import SCimilarityModel
from cellfoundry.models.scimilarity.network import Decoder, Encoder

__all__ = ["Decoder", "Encoder", "KNNResult", "LabelledReference", "SCimilarityModel", "cosine_knn"]
