"""Our scGPT network: the module tree and state-dict key names of the published ``best_model.pt``.

Post-LN transformer encoder (spec §2.5-2.6) with a fused ``Wqkv`` in-projection (flash layout, the
canonical one here) and plain ``nn.Linear`` sub-modules everywhere, so LoRA can wrap attention and
feed-forward projections. Attention runs through ``F.scaled_dot_product_attention``.

Cell embeddings use a packed path: the real tokens of a padded batch are packed into one
(N, d) matrix so projections and feed-forward layers never touch padding, attention runs per
sequence on its own tokens, and the last layer computes the ``<cls>`` position only. In inference
on the CPU (float32) the layers' GEMMs run on oneDNN-packed weights (``PackedEncoderLayer``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cellfoundry.models.onednn import PackedLinear, can_pack
from cellfoundry.models.scgpt.config import ScGPTConfig

LAYER_NORM_EPS = 1e-5
VALUE_CLAMP = 512.0

# Attention key layouts (spec §2.5) -> the canonical flash layout (A).
_LAYOUT_RULES: dict[str, list[tuple[re.Pattern[str], str]]] = {
    "in_proj": [
        (re.compile(r"\.self_attn\.in_proj_(weight|bias)$"), r".self_attn.Wqkv.\1"),
    ],
    "_impl.Wqkv": [
        (re.compile(r"\.self_attn\._impl\.Wqkv\."), ".self_attn.Wqkv."),
        (re.compile(r"\.self_attn\._impl\.out_proj\."), ".self_attn.out_proj."),
    ],
}


def detect_layout(keys: list[str]) -> str:
    """Which attention key layout a state dict uses: 'Wqkv', 'in_proj', '_impl.Wqkv' or 'mixed'."""
    found = set()
    for k in keys:
        if ".self_attn._impl." in k:
            found.add("_impl.Wqkv")
        elif ".self_attn.in_proj_" in k:
            found.add("in_proj")
        elif ".self_attn.Wqkv." in k:
            found.add("Wqkv")
    if len(found) > 1:
        return "mixed"
    return found.pop() if found else "Wqkv"


def to_canonical_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename any of the three attention layouts to the flash ``self_attn.Wqkv`` names (exact rename)."""
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        nk = k
        for rules in _LAYOUT_RULES.values():
            for pat, rep in rules:
                nk = pat.sub(rep, nk)
        out[nk] = v
    return out


def to_layout(state: Mapping[str, Tensor], layout: str) -> dict[str, Tensor]:
    """Rename canonical (flash) keys to ``layout`` ('Wqkv', 'in_proj' or '_impl.Wqkv')."""
    if layout == "Wqkv":
        return dict(state)
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        if layout == "in_proj":
            k = re.sub(r"\.self_attn\.Wqkv\.(weight|bias)$", r".self_attn.in_proj_\1", k)
        elif layout == "_impl.Wqkv":
            k = re.sub(r"\.self_attn\.(Wqkv|out_proj)\.", r".self_attn._impl.\1.", k)
        else:
            raise ValueError(f"unknown attention layout '{layout}'")
        out[k] = v
    return out


class GeneEncoder(nn.Module):
    """Gene-token embedding followed by LayerNorm."""

    def __init__(self, ntoken: int, d: int, padding_idx: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(ntoken, d, padding_idx=padding_idx)
        self.enc_norm = nn.LayerNorm(d, eps=LAYER_NORM_EPS)

    def forward(self, ids: Tensor) -> Tensor:
        return self.enc_norm(self.embedding(ids))  # type: ignore[no-any-return]


class ContinuousValueEncoder(nn.Module):
    """Scalar (binned) value -> vector: clamp, Linear(1, d), ReLU, Linear(d, d), LayerNorm, dropout."""

    def __init__(self, d: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(1, d)
        self.activation = nn.ReLU()
        self.linear2 = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, values: Tensor) -> Tensor:
        x = torch.clamp(values.unsqueeze(-1), max=VALUE_CLAMP)
        return self.dropout(self.norm(self.linear2(self.activation(self.linear1(x)))))  # type: ignore[no-any-return]


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused ``Wqkv`` projection ([q | k | v] rows, heads contiguous)."""

    def __init__(self, d: int, nheads: int, dropout: float) -> None:
        super().__init__()
        self.d, self.nheads, self.head_dim = d, nheads, d // nheads
        self.dropout = dropout
        self.Wqkv = nn.Linear(d, 3 * d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: Tensor, keep: Tensor | None = None, first_only: bool = False) -> Tensor:
        """``keep``: (B, 1, 1, L) bool, True where a key may be attended; None when nothing is padded.

        ``first_only`` returns the output of position 0 alone (B, 1, d).
        """
        b, n, _ = x.shape
        d, h, hd = self.d, self.nheads, self.head_dim
        if first_only and type(self.Wqkv) is nn.Linear:
            w, bias = self.Wqkv.weight, self.Wqkv.bias
            q = F.linear(x[:, :1], w[:d], bias[:d])
            kv = F.linear(x, w[d:], bias[d:])
            k, v = kv.split(d, dim=-1)
        else:
            q, k, v = self.Wqkv(x).split(d, dim=-1)
            if first_only:
                q = q[:, :1]
        q = q.reshape(b, q.shape[1], h, hd).transpose(1, 2)
        k = k.reshape(b, n, h, hd).transpose(1, 2)
        v = v.reshape(b, n, h, hd).transpose(1, 2)
        o = F.scaled_dot_product_attention(
            q, k, v, attn_mask=keep, dropout_p=self.dropout if self.training else 0.0
        )
        o = o.transpose(1, 2).reshape(b, q.shape[2], d)
        return self.out_proj(o)  # type: ignore[no-any-return]

    def forward_packed(self, x: Tensor, packed: Packing, first_only: bool = False) -> Tensor:
        """Attention over packed tokens ``x`` (N, d): each sequence attends over its own tokens.

        No padding is computed anywhere (variable-length attention, one sequence at a time).
        ``first_only`` returns position 0 of each sequence (B, d).
        """
        d, h = self.d, self.nheads
        if first_only and type(self.Wqkv) is nn.Linear:
            w, bias = self.Wqkv.weight, self.Wqkv.bias
            q_all = F.linear(x[packed.first], w[:d], bias[:d])
            kv = F.linear(x, w[d:], bias[d:])
            k_all, v_all = kv[:, :d], kv[:, d:]
        else:
            qkv = self.Wqkv(x)
            q_all = qkv[packed.first, :d] if first_only else qkv[:, :d]
            k_all, v_all = qkv[:, d : 2 * d], qkv[:, 2 * d :]
        p = self.dropout if self.training else 0.0
        return self.out_proj(attend_packed(q_all, k_all, v_all, packed, h, first_only, p))  # type: ignore[no-any-return]


def attend_packed(
    q_all: Tensor,
    k_all: Tensor,
    v_all: Tensor,
    packed: Packing,
    heads: int,
    first_only: bool = False,
    dropout_p: float = 0.0,
) -> Tensor:
    """Multi-head attention of packed q/k/v rows (N, d), each sequence over its own tokens.

    ``first_only``: ``q_all`` holds each sequence's first query (B, d) and so does the output.
    """
    d = k_all.shape[1]
    hd = d // heads
    out = k_all.new_empty(len(packed.starts) if first_only else k_all.shape[0], d)
    for i, (s, n) in enumerate(zip(packed.starts, packed.lengths, strict=True)):
        # (1, heads, tokens, head_dim) strided views: 4-d inputs take the fused CPU kernel
        k = k_all[s : s + n].view(1, n, heads, hd).transpose(1, 2)
        v = v_all[s : s + n].view(1, n, heads, hd).transpose(1, 2)
        if first_only:  # one query: plain softmax attention is cheaper than the fused kernel
            q = q_all[i : i + 1].view(1, 1, heads, hd).transpose(1, 2)
            att = torch.softmax((q * hd**-0.5) @ k.transpose(-1, -2), dim=-1)
            out[i] = (F.dropout(att, dropout_p, dropout_p > 0) @ v).reshape(d)
        else:
            q = q_all[s : s + n].view(1, n, heads, hd).transpose(1, 2)
            o = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
            out[s : s + n].view(n, heads, hd).copy_(o[0].transpose(0, 1))  # one copy
    return out


class Packing:
    """Where the real tokens of a padded (B, L) batch sit once packed into (N, ...) rows."""

    def __init__(self, padding_mask: Tensor) -> None:
        self.batch, self.length = padding_mask.shape
        keep = ~padding_mask
        if not bool(keep[:, 0].all()):
            raise ValueError("every sequence must start with a real (<cls>) token")
        self.index = keep.reshape(-1).nonzero().squeeze(1)  # packed row -> flat padded position
        lengths = keep.sum(1)
        self.first = torch.cumsum(lengths, 0) - lengths  # packed row of each sequence's <cls>
        self.lengths: list[int] = lengths.tolist()
        self.starts: list[int] = self.first.tolist()


class EncoderLayer(nn.Module):
    """One transformer block: attention then ReLU feed-forward, post-LN (or pre-LN when configured)."""

    def __init__(
        self, d: int, nheads: int, d_hid: int, dropout: float, pre_norm: bool = False
    ) -> None:
        super().__init__()
        self.self_attn = SelfAttention(d, nheads, dropout)
        self.linear1 = nn.Linear(d, d_hid)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_hid, d)
        self.norm1 = nn.LayerNorm(d, eps=LAYER_NORM_EPS)
        self.norm2 = nn.LayerNorm(d, eps=LAYER_NORM_EPS)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def _ff(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))  # type: ignore[no-any-return]

    def forward_packed(self, x: Tensor, packed: Packing, first_only: bool = False) -> Tensor:
        """The block on packed tokens (N, d); ``first_only`` returns each sequence's first (B, d)."""
        if self.pre_norm:
            x = self.norm1(x)
            a = self.self_attn.forward_packed(x, packed, first_only)
            x = (x[packed.first] if first_only else x) + self.dropout1(a)
            x = self.norm2(x)
            return x + self.dropout2(self._ff(x))  # type: ignore[no-any-return]
        a = self.self_attn.forward_packed(x, packed, first_only)
        x = self.norm1((x[packed.first] if first_only else x) + self.dropout1(a))
        return self.norm2(x + self.dropout2(self._ff(x)))  # type: ignore[no-any-return]

    def forward(self, x: Tensor, keep: Tensor | None = None, first_only: bool = False) -> Tensor:
        if self.pre_norm:
            x = self.norm1(x)
            a = self.self_attn(x, keep, first_only)
            x = (x[:, :1] if first_only else x) + self.dropout1(a)
            x = self.norm2(x)
            return x + self.dropout2(self._ff(x))  # type: ignore[no-any-return]
        a = self.self_attn(x, keep, first_only)
        x = self.norm1((x[:, :1] if first_only else x) + self.dropout1(a))
        return self.norm2(x + self.dropout2(self._ff(x)))  # type: ignore[no-any-return]


class PackedEncoderLayer:
    """An ``EncoderLayer``'s inference weights on oneDNN-packed GEMMs (``onednn``).

    ``forward_packed`` in eval mode with the bias, the feed-forward ReLU and both residual adds
    computed inside the GEMMs; same values up to float32 rounding. Built once per embedding run.
    """

    def __init__(self, layer: EncoderLayer, rows: int, first_only: bool) -> None:
        sa = layer.self_attn
        d, w, b = sa.d, sa.Wqkv.weight, sa.Wqkv.bias
        self.heads, self.pre_norm, self.first_only = sa.nheads, layer.pre_norm, first_only
        if first_only:  # queries of <cls> alone, keys and values of every token
            self.q, self.kv = PackedLinear(w[:d], b[:d], rows), PackedLinear(w[d:], b[d:], rows)
        else:
            self.qkv = PackedLinear(w, b, rows)
        self.out = PackedLinear(sa.out_proj.weight, sa.out_proj.bias, rows)
        self.ff1 = PackedLinear(layer.linear1.weight, layer.linear1.bias, rows)
        self.ff2 = PackedLinear(layer.linear2.weight, layer.linear2.bias, rows)
        self.norm1, self.norm2 = layer.norm1, layer.norm2

    def __call__(self, x: Tensor, packed: Packing) -> Tensor:
        if self.pre_norm:
            x = self.norm1(x)
        d = x.shape[1]
        if self.first_only:
            kv, x = self.kv(x), x[packed.first]
            q = self.q(x)
            o = attend_packed(q, kv[:, :d], kv[:, d:], packed, self.heads, first_only=True)
        else:
            qkv = self.qkv(x)
            o = attend_packed(qkv[:, :d], qkv[:, d : 2 * d], qkv[:, 2 * d :], packed, self.heads)
        x = self.out(o, add=x)
        x = self.norm2(x) if self.pre_norm else self.norm1(x)
        y = self.ff2(self.ff1(x, relu=True), add=x)
        return y if self.pre_norm else self.norm2(y)  # type: ignore[no-any-return]


class TransformerEncoder(nn.Module):
    """A stack of encoder layers (no final norm, as published)."""

    def __init__(self, cfg: ScGPTConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(cfg.embsize, cfg.nheads, cfg.d_hid, cfg.dropout, cfg.pre_norm)
            for _ in range(cfg.nlayers)
        )

    def forward(
        self, x: Tensor, padding_mask: Tensor | None = None, first_only: bool = False
    ) -> Tensor:
        keep = None
        if padding_mask is not None and bool(padding_mask.any()):
            keep = (~padding_mask)[:, None, None, :]
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, keep, first_only and i == last)
        return x


class ExprDecoder(nn.Module):
    """The published expression head (unused for embeddings; kept so the keys match)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(d, d), nn.LeakyReLU(), nn.Linear(d, d), nn.LeakyReLU(), nn.Linear(d, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x).squeeze(-1)  # type: ignore[no-any-return]


class MVCDecoder(nn.Module):
    """The published inner-product MVC head (unused for embeddings; kept so the keys match)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.gene2query = nn.Linear(d, d)
        self.query_activation = nn.Sigmoid()
        self.W = nn.Linear(d, d, bias=False)

    def forward(self, cell_emb: Tensor, gene_embs: Tensor) -> Tensor:
        q = self.query_activation(self.gene2query(gene_embs))
        return torch.bmm(self.W(q), cell_emb.unsqueeze(2)).squeeze(2)


class ClsDecoder(nn.Module):
    """The fine-tuning classifier head: [Linear, ReLU, LayerNorm] x (n-1), then Linear(d, n_cls)."""

    def __init__(self, d: int, n_cls: int, nlayers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        for _ in range(nlayers - 1):
            mods += [nn.Linear(d, d), nn.ReLU(), nn.LayerNorm(d, eps=LAYER_NORM_EPS)]
        self._decoder = nn.Sequential(*mods)
        self.out_layer = nn.Linear(d, n_cls)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_layer(self._decoder(x))  # type: ignore[no-any-return]


class ScGPTNetwork(nn.Module):
    """Gene + value encoders, transformer encoder and the published heads."""

    def __init__(
        self,
        cfg: ScGPTConfig,
        ntoken: int,
        pad_id: int,
        *,
        flag_encoder: bool = True,
        mvc_decoder: bool = True,
        n_cls: int | None = None,
    ) -> None:
        super().__init__()
        d = cfg.embsize
        self.cfg = cfg
        self.encoder = GeneEncoder(ntoken, d, pad_id)
        if flag_encoder:
            self.flag_encoder = nn.Embedding(2, d)
        self.value_encoder = ContinuousValueEncoder(d, cfg.dropout)
        self.transformer_encoder = TransformerEncoder(cfg)
        self.decoder = ExprDecoder(d)
        if n_cls is not None:
            self.cls_decoder = ClsDecoder(d, n_cls, cfg.n_layers_cls)
        if mvc_decoder:
            self.mvc_decoder = MVCDecoder(d)

    def encode(
        self, gene_ids: Tensor, values: Tensor, padding_mask: Tensor | None = None
    ) -> Tensor:
        """Per-token outputs of the last layer (B, L, d)."""
        x = self.encoder(gene_ids) + self.value_encoder(values)
        return self.transformer_encoder(x, padding_mask)  # type: ignore[no-any-return]

    def _embed_tokens(self, gene_ids: Tensor, values: Tensor) -> Tensor:
        """Encoder inputs of flat tokens (N,) -> (N, d).

        Both encoders are row-wise, so in eval mode each distinct gene id and each distinct value
        (binned: at most ``n_bins`` + 1 of them) is encoded once and gathered back.
        """
        if self.training:
            return self.encoder(gene_ids) + self.value_encoder(values)  # type: ignore[no-any-return]
        ug, ig = torch.unique(gene_ids, return_inverse=True)
        uv, iv = torch.unique(values, return_inverse=True)
        return self.encoder(ug)[ig] + self.value_encoder(uv)[iv]  # type: ignore[no-any-return]

    def packed_layers(self, rows: int) -> list[PackedEncoderLayer] | None:
        """The encoder layers on oneDNN-packed weights for GEMMs of about ``rows`` rows, for
        ``cell_embedding(layers=...)``; None when gradients are on, the network is training, a
        projection is wrapped (LoRA) or the weights are not float32 on the CPU."""
        layers: list[EncoderLayer] = list(self.transformer_encoder.layers)  # type: ignore[arg-type]
        linears = [
            m
            for layer in layers
            for m in (layer.self_attn.Wqkv, layer.self_attn.out_proj, layer.linear1, layer.linear2)
        ]
        if torch.is_grad_enabled() or self.training or not layers:
            return None
        if any(
            type(m) is not nn.Linear or m.bias is None or not can_pack(m.weight) for m in linears
        ):
            return None
        last = len(layers) - 1
        return [PackedEncoderLayer(layer, rows, i == last) for i, layer in enumerate(layers)]

    def cell_embedding(
        self,
        gene_ids: Tensor,
        values: Tensor,
        padding_mask: Tensor | None = None,
        *,
        packed: bool | None = None,
        layers: list[PackedEncoderLayer] | None = None,
    ) -> Tensor:
        """The ``<cls>`` (position 0) output of the last layer (B, d), not normalised.

        Equals ``encode(...)[:, 0]``; the last layer computes position 0 only. With padding and
        ``packed`` (default on the CPU), the real tokens are packed so that projections and
        feed-forward layers skip padded positions and attention runs per sequence. Unpacked
        (default on a GPU, where batches are length-sorted and one masked SDPA call per layer
        beats a per-sequence loop) the padded batch runs as is with a key mask. ``layers``
        (from ``packed_layers``, inference only) run the packed path on oneDNN GEMMs.
        """
        if packed is None:
            packed = gene_ids.device.type == "cpu"
        padded = padding_mask is not None and bool(padding_mask.any())
        if layers is None and not (padded and packed):
            b, n = gene_ids.shape
            x = self._embed_tokens(gene_ids.reshape(-1), values.reshape(-1)).view(b, n, -1)
            return self.transformer_encoder(x, padding_mask, first_only=True)[:, 0]  # type: ignore[no-any-return]
        if padding_mask is None:
            padding_mask = torch.zeros_like(gene_ids, dtype=torch.bool)
        packing = Packing(padding_mask)
        x = self._embed_tokens(
            gene_ids.reshape(-1)[packing.index], values.reshape(-1)[packing.index]
        )
        if layers is not None:
            for fast in layers:
                x = fast(x, packing)
            return x
        mods: list[EncoderLayer] = list(self.transformer_encoder.layers)  # type: ignore[arg-type]
        for i, layer in enumerate(mods):
            x = layer.forward_packed(x, packing, first_only=i == len(mods) - 1)
        return x
