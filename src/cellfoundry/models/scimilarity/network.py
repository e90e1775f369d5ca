"""SCimilarity's encoder and decoder MLPs, with the published state-dict layout (spec §3.2).

Encoder: ``network.{i}`` = Sequential(Dropout, Linear, BatchNorm1d, PReLU) per hidden layer, then
``network.{n}`` = Linear(hidden[-1], latent); the output is L2-normalised. The decoder mirrors it
(hidden sizes reversed, no dropout before its first layer, no normalisation).
Both are constructible from sizes alone, so they also serve to train new encoders from scratch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

V11_HIDDEN: tuple[int, ...] = (1024, 1024, 1024)
V11_LATENT = 128
V11_N_GENES = 28231


def _check_sizes(n_genes: int, hidden: Sequence[int], latent: int) -> list[int]:
    h = [int(x) for x in hidden]
    if n_genes < 1 or latent < 1 or not h or min(h) < 1:
        raise ValueError(
            f"invalid SCimilarity sizes: n_genes={n_genes}, hidden={h}, latent={latent} "
            "(all must be positive and hidden must name at least one layer)"
        )
    return h


class Encoder(nn.Module):
    """Expression vector (n_genes) -> L2-normalised embedding (latent)."""

    def __init__(
        self,
        n_genes: int,
        hidden: Sequence[int] = V11_HIDDEN,
        latent: int = V11_LATENT,
        dropout: float = 0.5,
        input_dropout: float = 0.4,
    ) -> None:
        super().__init__()
        self.hidden = _check_sizes(n_genes, hidden, latent)
        self.n_genes = int(n_genes)
        self.latent = int(latent)
        self.network = nn.ModuleList()
        sizes = [self.n_genes, *self.hidden]
        for i in range(len(self.hidden)):
            self.network.append(
                nn.Sequential(
                    nn.Dropout(p=input_dropout if i == 0 else dropout),
                    nn.Linear(sizes[i], sizes[i + 1]),
                    nn.BatchNorm1d(sizes[i + 1]),
                    nn.PReLU(),
                )
            )
        self.network.append(nn.Linear(self.hidden[-1], self.latent))

    def forward_unnormalized(self, x: torch.Tensor) -> torch.Tensor:
        """The output layer before L2 normalisation."""
        for layer in self.network:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Cells x genes (log1p CP10k, model gene order) -> cells x latent, unit L2 norm."""
        return F.normalize(self.forward_unnormalized(x), p=2, dim=1)

    def supports_sparse(self) -> bool:
        """True when ``forward_sparse`` computes exactly ``forward`` (eval mode, plain first Linear)."""
        first = cast(nn.Sequential, self.network[0])
        return not self.training and type(first[1]) is nn.Linear

    def forward_sparse(
        self, indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """``forward`` for a CSR batch (eval mode): the first layer only touches non-zero genes."""
        if not self.supports_sparse():
            raise RuntimeError("forward_sparse needs eval mode and an unwrapped first Linear layer")
        first = cast(nn.Sequential, self.network[0])
        lin = cast(nn.Linear, first[1])
        h = (
            F.embedding_bag(
                indices,
                self._input_weight_t(),
                indptr[:-1],
                mode="sum",
                per_sample_weights=values,
                include_last_offset=False,
            )
            + lin.bias
        )
        h = first[3](first[2](h))
        for layer in self.network[1:]:
            h = layer(h)
        return F.normalize(h, p=2, dim=1)

    def _input_weight_t(self) -> torch.Tensor:
        """The first Linear's weight as genes x hidden, cached until the weight changes."""
        w = cast(nn.Linear, cast(nn.Sequential, self.network[0])[1]).weight
        key = (w.data_ptr(), w._version)
        cached = getattr(self, "_wt_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, w.detach().t().contiguous())
            self._wt_cache = cached
        return cached[1]


class Decoder(nn.Module):
    """Embedding (latent) -> reconstructed expression (n_genes); ``hidden`` in encoder order."""

    def __init__(
        self,
        n_genes: int,
        hidden: Sequence[int] = V11_HIDDEN,
        latent: int = V11_LATENT,
        dropout: float = 0.5,
        *,
        reverse: bool = True,
    ) -> None:
        """``reverse=True`` mirrors the encoder's ``hidden``; False takes ``hidden`` as given."""
        super().__init__()
        h = _check_sizes(n_genes, hidden, latent)
        self.hidden = list(reversed(h)) if reverse else h
        self.n_genes = int(n_genes)
        self.latent = int(latent)
        self.network = nn.ModuleList()
        sizes = [self.latent, *self.hidden]
        for i in range(len(self.hidden)):
            block: list[nn.Module] = [] if i == 0 else [nn.Dropout(p=dropout)]
            block += [nn.Linear(sizes[i], sizes[i + 1]), nn.BatchNorm1d(sizes[i + 1]), nn.PReLU()]
            self.network.append(nn.Sequential(*block))
        self.network.append(nn.Linear(self.hidden[-1], self.n_genes))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Cells x latent -> cells x genes."""
        for layer in self.network:
            z = layer(z)
        return z


def expected_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape of ``module`` (works on the meta device without allocating)."""
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def encoder_shapes(n_genes: int, hidden: Sequence[int], latent: int) -> dict[str, tuple[int, ...]]:
    """The encoder's full state-dict key set and shapes for given sizes (no weights allocated)."""
    with torch.device("meta"):
        return expected_shapes(Encoder(n_genes, hidden, latent))


def decoder_shapes(n_genes: int, hidden: Sequence[int], latent: int) -> dict[str, tuple[int, ...]]:
    """The decoder's key set and shapes (``hidden`` in encoder order) without allocating."""
    with torch.device("meta"):
        return expected_shapes(Decoder(n_genes, hidden, latent))
