"""``GeneformerModel``: a published Geneformer checkpoint (HF BERT) with the official embedding rule.

Embedding rule (spec §1.7): hidden states after ``L + emb_layer`` encoder layers (official default
``emb_layer=-1``: the second-to-last layer); V2 (vocabulary with ``<cls>``) takes the ``<cls>``
position, V1 the mean over the cell's gene tokens. Inference sorts cells by length, batches them
by a token budget (on the CPU cut where padding costs more than another pass) and stops after the
last layer the embedding needs; float32 CPU GEMMs run on oneDNN-packed weights.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import anndata as ad
import numpy as np

from cellfoundry.data.genes import detect_id_kind, gene_table, strip_version
from cellfoundry.data.report import ValidationReport
from cellfoundry.errors import DataError
from cellfoundry.models.accel import Accel, on_device, resolve_accel
from cellfoundry.models.batching import token_budget_batches
from cellfoundry.models.foundation import CheckpointError, FoundationModel, LoadReport
from cellfoundry.models.geneformer.checkpoint import (
    check_state_dict,
    identify_release,
    read_state_dict,
    weights_file,
)
from cellfoundry.models.geneformer.config import (
    SUPPORTED_ARCHITECTURES,
    arch_of,
    bert_config,
    match_variant,
    read_config,
    variant_by_name,
)
from cellfoundry.models.geneformer.dictionaries import GeneformerDictionaries, load_dictionaries
from cellfoundry.models.geneformer.tokenizer import RankValueTokenizer
from cellfoundry.models.heap import reuse_freed_memory
from cellfoundry.models.onednn import PackedLinear, can_pack

DEFAULT_MAX_TOKENS = 32_768  # padded tokens per forward batch
DEFAULT_CHUNK = 2048  # cells read and tokenised at a time
_TINY = {
    "num_layers": 3,
    "hidden_size": 64,
    "num_heads": 4,
    "intermediate_size": 128,
    "max_pos": 4096,
}


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    import torch

    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _key_mask(mask: Any, dtype: Any) -> Any:
    """Additive key mask (B x 1 x 1 x W): 0 on real tokens, the dtype's minimum on padding."""
    import torch

    keep = mask[:, None, None, :].to(torch.bool)
    return torch.zeros(keep.shape, dtype=dtype, device=mask.device).masked_fill(
        ~keep, torch.finfo(dtype).min
    )


class _FusedLayer:
    """One BERT layer's inference weights with the q/k/v projections stacked into one matrix."""

    __slots__ = ("act", "eps", "ffn_in", "ffn_out", "heads", "ln1", "ln2", "out", "packed", "qkv")

    def __init__(self, layer: Any, act: Any) -> None:
        import torch

        sa, ao = layer.attention.self, layer.attention.output
        self.heads = int(sa.num_attention_heads)
        self.qkv: Any = (  # (weight, bias), a PackedLinear once packed
            torch.cat([sa.query.weight, sa.key.weight, sa.value.weight]),
            torch.cat([sa.query.bias, sa.key.bias, sa.value.bias]),
        )
        self.out: Any = (ao.dense.weight, ao.dense.bias)
        self.ln1 = (ao.LayerNorm.weight, ao.LayerNorm.bias)
        self.eps = (float(ao.LayerNorm.eps), float(layer.output.LayerNorm.eps))
        self.ffn_in: Any = (layer.intermediate.dense.weight, layer.intermediate.dense.bias)
        self.act = act
        self.ffn_out: Any = (layer.output.dense.weight, layer.output.dense.bias)
        self.ln2 = (layer.output.LayerNorm.weight, layer.output.LayerNorm.bias)
        self.packed = False

    def pack(self, rows: int) -> None:
        """Put the four GEMMs' weights into oneDNN's blocked layout (float32 CPU only)."""
        self.qkv, self.out, self.ffn_in, self.ffn_out = (
            PackedLinear(w, b, rows) for w, b in (self.qkv, self.out, self.ffn_in, self.ffn_out)
        )
        self.packed = True

    def linear(self, x: Any, wb: Any) -> Any:
        import torch.nn.functional as F

        return wb(x) if self.packed else F.linear(x, *wb)


def _fused_layer(layer: Any) -> _FusedLayer | None:
    """Fused weights of a plain inference BERT layer; None when it is wrapped (LoRA) or unusual.

    The fused path computes exactly what ``BertLayer`` does in eval mode (SDPA attention with
    the default 1/sqrt(head_dim) scale, post-LN, ReLU or exact GELU) with one q/k/v GEMM and
    in-place activations and residual adds.
    """
    import torch.nn.functional as F
    from torch import nn
    from transformers.activations import GELUActivation

    try:
        sa, ao = layer.attention.self, layer.attention.output
        mods = [
            sa.query,
            sa.key,
            sa.value,
            ao.dense,
            layer.intermediate.dense,
            layer.output.dense,
        ]
        act_mod = layer.intermediate.intermediate_act_fn
        if getattr(layer, "is_decoder", False) or getattr(layer, "chunk_size_feed_forward", 0):
            return None
        if getattr(sa, "is_decoder", False) or type(ao.LayerNorm) is not nn.LayerNorm:
            return None
        if type(layer.output.LayerNorm) is not nn.LayerNorm:
            return None
    except AttributeError:
        return None
    if any(type(m) is not nn.Linear or m.bias is None for m in mods):
        return None
    head = int(sa.attention_head_size)
    if float(getattr(sa, "scaling", head**-0.5)) != head**-0.5:
        return None
    if type(act_mod) is nn.ReLU:
        act = "relu"
    elif type(act_mod) is GELUActivation and getattr(act_mod, "act", None) is F.gelu:
        act = "gelu"
    else:
        return None
    return _FusedLayer(layer, act)


def _fused_forward(f: _FusedLayer, x: Any, keep: Any | None) -> Any:
    """``BertLayer`` in eval mode on (B, W, d) with a (B, 1, 1, W) bool key mask (None: no padding)."""
    import torch.nn.functional as F

    B, W, d = x.shape
    hd = d // f.heads
    qkv = f.linear(x, f.qkv).view(B, W, 3, f.heads, hd).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=keep)
    o = f.linear(o.transpose(1, 2).reshape(B, W, d), f.out).add_(x)
    y = F.layer_norm(o, (d,), *f.ln1, f.eps[0])
    z = f.linear(y, f.ffn_in)
    z = z.relu_() if f.act == "relu" else F.gelu(z)
    z = f.linear(z, f.ffn_out).add_(y)
    return F.layer_norm(z, (d,), *f.ln2, f.eps[1])


def _build_network(cfg: dict[str, Any], attn_implementation: str) -> Any:
    import transformers

    arch = cfg["architectures"][0]
    conf = bert_config(cfg, attn_implementation)
    if arch == "BertForSequenceClassification":
        from cellfoundry.models.geneformer.checkpoint import num_labels

        conf.num_labels = num_labels(cfg)
    cls = getattr(transformers, arch)
    if arch == "BertModel":
        return cls(conf, add_pooling_layer=False)
    return cls(conf)


class GeneformerModel(FoundationModel):
    """Geneformer (V1 / V2 / gc95M variants) on Hugging Face ``transformers`` BERT."""

    family: ClassVar[str] = "geneformer"
    embedding_key: ClassVar[str] = "X_geneformer"
    gene_key_kind: ClassVar[str] = "ensembl"
    default_lora_targets: ClassVar[list[str]] = [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ]

    def __init__(
        self,
        network: Any,
        config: dict[str, Any],
        dictionaries: GeneformerDictionaries,
        *,
        checkpoint_dir: Path,
        variant: str,
        load_report: LoadReport,
        emb_layer: int = -1,
        emb_mode: str | None = None,
    ) -> None:
        self.network = network
        self.config = config
        self.dictionaries = dictionaries
        self.checkpoint_dir = checkpoint_dir
        self.variant = variant
        self.load_report = load_report
        self.tokenizer = RankValueTokenizer(dictionaries, int(config["max_position_embeddings"]))
        L = int(config["num_hidden_layers"])
        if not -L <= emb_layer <= 0:
            raise DataError(
                f"emb_layer {emb_layer} is out of range for a {L}-layer model",
                f"use -1 (second-to-last layer, official default) … 0 (last layer), ≥ {-L}",
            )
        self.emb_layer = emb_layer
        mode = emb_mode or ("cls" if self.tokenizer.special_tokens else "cell")
        if mode not in ("cls", "cell"):
            raise DataError(f"unknown emb_mode '{mode}'", "use 'cls' (V2 default) or 'cell' (mean)")
        if mode == "cls" and not self.tokenizer.special_tokens:
            raise DataError("emb_mode 'cls' needs a <cls> token (V2 models)", "use emb_mode='cell'")
        self.emb_mode = mode
        self.last_embed_info: dict[str, Any] = {}

    # --- discovery and loading -------------------------------------------------------------
    @classmethod
    def detect(cls, folder: Path) -> bool:
        """A folder with a BERT ``config.json`` and ``model.safetensors`` or ``pytorch_model.bin``."""
        folder = Path(folder)
        try:
            if not folder.is_dir() or weights_file(folder) is None:
                return False
            raw = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(raw, dict) or raw.get("model_type") != "bert":
            return False
        archs = raw.get("architectures") or ["BertForMaskedLM"]
        return bool(isinstance(archs, list) and archs and archs[0] in SUPPORTED_ARCHITECTURES)

    @classmethod
    def load(
        cls,
        folder: str | Path,
        *,
        verify: bool = True,
        dictionaries: str | Path | dict[str, Path] | None = None,
        emb_layer: int = -1,
        emb_mode: str | None = None,
        attn_implementation: str = "sdpa",
    ) -> GeneformerModel:
        """Strictly load a published Geneformer folder (weights, config, dictionaries).

        ``verify`` also hashes every file (sha256) and compares with the official releases.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"{folder} is not a folder", "pass the checkpoint folder")
        cfg = read_config(folder)
        weights = weights_file(folder)
        if weights is None:
            subs = sorted(p.name for p in folder.iterdir() if p.is_dir() and weights_file(p))
            raise CheckpointError(
                f"{folder} has no model.safetensors or pytorch_model.bin",
                f"pass one of its model subfolders: {', '.join(subs)}"
                if subs
                else "download the weights file next to config.json",
            )
        variant = match_variant(arch_of(cfg))
        report = LoadReport(family="geneformer", variant=variant.name if variant else None)
        if variant is None:
            report.messages.append(
                "architecture matches no published Geneformer variant (custom or test checkpoint)"
            )
        sd = read_state_dict(weights)
        sd = check_state_dict(sd, cfg, report)
        report.raise_if_bad(folder)
        expl: Path | dict[str, Path] | None
        if isinstance(dictionaries, dict):
            expl = {k: Path(v) for k, v in dictionaries.items()}
        else:
            expl = Path(dictionaries) if dictionaries is not None else None
        dicts = load_dictionaries(
            folder, int(cfg["vocab_size"]), variant.dictionaries if variant else None, expl
        )
        if variant is not None and variant.special_tokens != (dicts.cls_id is not None):
            raise CheckpointError(
                f"{variant.name} {'needs' if variant.special_tokens else 'must not have'} <cls>/<eos> "
                f"in its token dictionary ({dicts.paths.get('token_dictionary')})",
                f"use the {variant.dictionaries} dictionaries",
            )
        identify_release(folder, weights, variant, dicts.paths, report, verify)
        network = _build_network(cfg, attn_implementation)
        tied = [
            k for k in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias") if k in sd
        ]
        for key in tied:  # tied to word embeddings / cls.predictions.bias in the network
            sd.pop(key)
        own = set(network.state_dict())
        for k in [k for k in sd if k not in own and k.startswith("bert.pooler.")]:
            sd.pop(k)  # a pooler the masked-LM network does not have (optional per spec)
            report.ignored_keys.append(k)
        res = network.load_state_dict(sd, strict=False)
        allowed: set[str] = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
        allowed |= set(report.optional_keys_absent)
        left = [k for k in res.missing_keys if k not in allowed]
        if left or res.unexpected_keys:
            raise CheckpointError(
                f"{folder}: the network did not take every tensor (missing {left[:5]}, "
                f"unexpected {res.unexpected_keys[:5]})",
                "report this checkpoint; it does not follow the published layout",
            )
        head = [
            k
            for k in report.optional_keys_absent
            if k.startswith(("cls.predictions.t", "classifier"))
        ]
        if head:
            report.messages.append(
                "the task head is absent and randomly initialised (embeddings unaffected)"
            )
        network.eval()
        return cls(
            network,
            cfg,
            dicts,
            checkpoint_dir=folder,
            variant=variant.name
            if variant
            else f"custom-{cfg['num_hidden_layers']}L-{cfg['hidden_size']}H",
            load_report=report,
            emb_layer=emb_layer,
            emb_mode=emb_mode,
        )

    @classmethod
    def from_random(
        cls, genes: list[str], *, variant: str | None = None, seed: int = 0
    ) -> GeneformerModel:
        """A randomly initialised Geneformer over ``genes`` (Ensembl IDs; symbols are mapped).

        ``variant`` gives the architecture (e.g. "Geneformer-V1-10M"); None is a tiny V2-style
        test size. Token dictionary built from the genes, every median 1.0.
        """
        import torch

        ens = _as_ensembl(genes)
        v = variant_by_name(variant) if variant else None
        special = v.special_tokens if v else True
        specials = ["<pad>", "<mask>", "<cls>", "<eos>"] if special else ["<pad>", "<mask>"]
        token_dict = {t: i for i, t in enumerate(specials)}
        for g in ens:
            token_dict[g] = len(token_dict)
        dicts = GeneformerDictionaries(token_dict, dict.fromkeys(ens, 1.0))
        if v is not None:
            cfg = v.config_dict()
        else:
            cfg = {
                "architectures": ["BertForMaskedLM"],
                "model_type": "bert",
                "hidden_act": "relu",
                "layer_norm_eps": 1e-12,
                "type_vocab_size": 2,
                "pad_token_id": 0,
                "position_embedding_type": "absolute",
                "initializer_range": 0.02,
                "hidden_dropout_prob": 0.02,
                "attention_probs_dropout_prob": 0.02,
                "num_hidden_layers": _TINY["num_layers"],
                "hidden_size": _TINY["hidden_size"],
                "num_attention_heads": _TINY["num_heads"],
                "intermediate_size": _TINY["intermediate_size"],
                "max_position_embeddings": _TINY["max_pos"],
            }
        cfg["vocab_size"] = len(token_dict)
        with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
            torch.manual_seed(seed)
            network = _build_network(cfg, "sdpa")
        network.eval()
        name = f"random-{v.name if v else 'tiny'}"
        report = LoadReport(family="geneformer", variant=None)
        report.messages.append(
            "randomly initialised weights (no pretrained checkpoint): embeddings carry no biology"
        )
        return cls(
            network,
            cfg,
            dicts,
            checkpoint_dir=Path(f"<{name}-seed{seed}>"),
            variant=name,
            load_report=report,
        )

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write this model in the published layout (config.json, model.safetensors, dictionaries)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.config, indent=2, sort_keys=True))
        sd = {
            k: v.detach().contiguous().clone()
            for k, v in self.network.state_dict().items()
            if not k.startswith("cls.predictions.decoder.") and not k.endswith("position_ids")
        }
        save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
        self.dictionaries.write(folder)
        return folder

    # --- properties ------------------------------------------------------------------------
    @property
    def embedding_dim(self) -> int:
        return int(self.config["hidden_size"])

    @property
    def genes(self) -> list[str]:
        return self.dictionaries.genes

    @property
    def num_layers(self) -> int:
        return int(self.config["num_hidden_layers"])

    @property
    def _attention_width(self) -> float:
        """Width at which a token's attention costs as much as its per-token layers (flops):
        q/k/v/output and feed-forward GEMMs 2·(4d² + 2·d·I) vs scores and mix 4·w·d."""
        d = float(self.config["hidden_size"])
        return 2.0 * d + float(self.config["intermediate_size"])

    @property
    def _bert(self) -> Any:
        return getattr(self.network, "bert", self.network)

    # --- fine-tuning hooks -----------------------------------------------------------------
    def tokenize(
        self, adata: ad.AnnData, *, seed: int = 0, report: ValidationReport | None = None
    ) -> list[dict[str, np.ndarray]]:
        """``{"input_ids": int64 array}`` per cell, in cell order (what embed() feeds the network)."""
        return [{"input_ids": t} for t in self.tokenizer.tokenize(adata, report=report)]

    def no_evidence(self, cells: list[dict[str, np.ndarray]]) -> np.ndarray:
        return self._no_genes([c["input_ids"] for c in cells])

    def _no_genes(self, seqs: Sequence[np.ndarray]) -> np.ndarray:
        """True for token sequences without a gene token (V2: just ``<cls>`` ``<eos>``): cells
        with no count on any vocabulary gene."""
        n_base = 2 if self.tokenizer.special_tokens else 0
        return np.fromiter((len(s) <= n_base for s in seqs), dtype=bool, count=len(seqs))

    def collate(self, cells: list[dict[str, np.ndarray]]) -> dict[str, Any]:
        """Right-pad with ``<pad>`` to the longest cell; ``attention_mask`` 1 on real tokens."""
        import torch

        if not cells:
            raise DataError("cannot collate an empty batch", "pass at least one cell")
        lengths = [len(c["input_ids"]) for c in cells]
        width = max(max(lengths), 1)
        ids = torch.full((len(cells), width), self.dictionaries.pad_id, dtype=torch.long)
        mask = torch.zeros((len(cells), width), dtype=torch.long)
        for i, c in enumerate(cells):
            n = lengths[i]
            ids[i, :n] = torch.as_tensor(np.asarray(c["input_ids"], dtype=np.int64))
            mask[i, : max(n, 1)] = 1  # an empty cell attends to one pad token (keeps values finite)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "lengths": torch.as_tensor(lengths, dtype=torch.long),
        }

    def forward_embeddings(self, batch: dict[str, Any]) -> Any:
        """Differentiable cell embeddings (B x hidden) by the official layer/pooling rule."""
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        lengths = batch.get("lengths")
        if lengths is None:
            lengths = mask.sum(dim=1) if mask is not None else None
        h = self._hidden(ids, mask)
        return self._pool(h, lengths)

    # --- embedding -------------------------------------------------------------------------
    def _hidden(self, ids: Any, mask: Any | None, fused: Any = "auto") -> Any:
        """Hidden states after ``L + emb_layer`` layers (= ``hidden_states[L + emb_layer]``).

        Padding is masked with a compact additive key mask (B x 1 x 1 x W; 0 keep, dtype min
        drop), which eager and SDPA attention both broadcast; no mask when nothing is padded.
        In inference (no gradients, eval mode, plain layers) the fused layers run instead
        (one q/k/v GEMM, a boolean key mask; same values).
        """
        import torch

        bert = self._bert
        h = bert.embeddings(input_ids=ids)
        padded = mask is not None and not bool(mask.all())
        if fused == "auto":
            fused = self._fused_layers()
        if fused is not None:
            keep = mask[:, None, None, :].to(torch.bool) if mask is not None and padded else None
            for f in fused:
                h = _fused_forward(f, h, keep)
            return h
        ext = _key_mask(mask, h.dtype) if padded else None
        for layer in bert.encoder.layer[: self.num_layers + self.emb_layer]:
            h = layer(h, ext)
        return h

    def _fused_layers(self, pack_rows: int = 0) -> list[_FusedLayer] | None:
        """Fused inference weights of the layers the embedding needs; None when gradients are
        on, the network is training or a layer is wrapped (then the transformers layers run).
        ``pack_rows`` > 0: float32 CPU weights go into oneDNN's layout for GEMMs of about that
        many rows."""
        import torch

        if torch.is_grad_enabled() or self.network.training:
            return None
        layers = self._bert.encoder.layer[: self.num_layers + self.emb_layer]
        fused = [f for f in (_fused_layer(layer) for layer in layers) if f is not None]
        if len(fused) != len(layers):
            return None
        if pack_rows > 0 and fused and can_pack(fused[0].qkv[0]):
            for f in fused:
                f.pack(pack_rows)
        return fused

    def _pool(self, h: Any, lengths: Any | None) -> Any:
        import torch

        if self.emb_mode == "cls":
            return h[:, 0, :]
        B, W = h.shape[0], h.shape[1]
        if lengths is None:
            lengths = torch.full((B,), W, dtype=torch.long, device=h.device)
        pos = torch.arange(W, device=h.device)[None, :]
        lo = 1 if self.dictionaries.cls_id is not None else 0
        hi = lengths - (1 if self.dictionaries.eos_id is not None else 0)
        keep = ((pos >= lo) & (pos < hi[:, None])).to(h.dtype)
        denom = keep.sum(dim=1, keepdim=True).clamp(min=1)
        return (h * keep[:, :, None]).sum(dim=1) / denom

    def embed_sequences(
        self,
        seqs: Sequence[np.ndarray],
        *,
        batch_size: int = 32,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        accel: Accel | None = None,
    ) -> np.ndarray:
        """Embeddings of token sequences (input order); empty sequences give zero vectors.

        ``accel``: the device and autocast precision (default: where the network is, float32);
        the network must already be on that device (``embed`` sees to it).
        """
        import torch

        dev = accel.device if accel is not None else None
        cast = accel.autocast() if accel is not None else contextlib.nullcontext()
        out = np.zeros((len(seqs), self.embedding_dim), dtype=np.float32)
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        pad = self.dictionaries.pad_id
        on_cpu = (dev or next(self.network.parameters()).device).type == "cpu"
        batches = token_budget_batches(  # on the CPU: cut the sorted cells at costly padding
            lengths,
            max(1, int(batch_size)),
            max(1, int(max_tokens)),
            skip_empty=True,
            attention_width=self._attention_width if on_cpu else None,
        )
        plain = accel is None or accel.dtype is None  # full float32: GEMMs on packed weights
        fused = self._fused_layers(int(max_tokens) if plain else 0)  # once: weights stay fixed
        for idx in batches:
            width = int(lengths[idx].max())
            ids = np.full((len(idx), width), pad, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for r, j in enumerate(idx):
                ids[r, : lengths[j]] = seqs[j]
                mask[r, : lengths[j]] = 1
            t_ids = torch.from_numpy(ids).to(dev)
            t_mask = torch.from_numpy(mask).to(dev)
            with cast:
                h = self._hidden(t_ids, t_mask, fused)
                emb = self._pool(h, torch.from_numpy(lengths[idx]).to(dev))
            out[idx] = emb.float().cpu().numpy()
        return out

    def embed(
        self,
        adata: ad.AnnData,
        *,
        batch_size: int = 32,
        seed: int = 0,
        progress: bool = False,
        report: ValidationReport | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        chunk_size: int = DEFAULT_CHUNK,
        num_threads: int | None = None,
        out: Any = None,
        device: str | None = "auto",
        precision: str | None = "auto",
        empty: Any = None,
    ) -> Any:
        """Cell embeddings (float32, n_cells x hidden) in input order, reading rows in chunks.

        ``batch_size`` caps cells per forward pass, ``max_tokens`` the padded tokens per pass;
        cells are sorted by length within each chunk. ``device``/``precision``: see
        ``models.accel`` (auto: a CUDA GPU with bf16/fp16 autocast when present, else the CPU in
        float32). Geneformer is deterministic; ``seed`` is accepted for the common interface.
        ``empty``: the cells without a gene token are marked there (see FoundationModel.embed).
        """
        import torch

        accel = resolve_accel(device, precision)
        plan = self.tokenizer.plan(adata, report=report)
        if out is None:
            out = np.zeros((adata.n_obs, self.embedding_dim), dtype=np.float32)
        n_empty = n_trunc = 0
        was_training = bool(getattr(self.network, "training", False))
        self.network.eval()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=adata.n_obs, unit="cell", desc="geneformer")
        try:
            with (
                torch.inference_mode(),
                reuse_freed_memory(),
                _torch_threads(num_threads),
                on_device(self.network, accel),
            ):
                for start, seqs in self.tokenizer.iter_tokens(adata, plan, chunk_size):
                    none = self._no_genes(seqs)
                    n_empty += int(none.sum())
                    if empty is not None:
                        empty[start : start + len(seqs)] = none
                    n_trunc += sum(1 for s in seqs if len(s) >= self.tokenizer.model_input_size)
                    if self.emb_mode == "cell":
                        seqs = [s[:0] if e else s for s, e in zip(seqs, none, strict=True)]
                    out[start : start + len(seqs)] = self.embed_sequences(
                        seqs, batch_size=batch_size, max_tokens=max_tokens, accel=accel
                    )
                    if bar is not None:
                        bar.update(len(seqs))
        finally:
            if bar is not None:
                bar.close()
            if was_training:
                self.network.train()
        self.last_embed_info = {
            "n_cells": adata.n_obs,
            "n_empty_cells": n_empty,
            "n_truncated_cells": n_trunc,
            "matrix": plan.input.source,
            "n_vocab_genes_present": plan.n_genes,
            "warnings": plan.input.warnings,
        }
        if n_empty:
            warnings.warn(
                f"{n_empty} cells express none of the model's genes; their embeddings are "
                + ("zero" if self.emb_mode == "cell" else "the <cls> state of an empty cell"),
                stacklevel=2,
            )
        return out


def _as_ensembl(genes: Sequence[str]) -> list[str]:
    """Ensembl IDs for a gene list (symbols mapped through the shipped table), de-duplicated."""
    names = [str(g) for g in genes]
    if not names:
        raise DataError("no genes given", "pass the Ensembl IDs (or symbols) of the model's genes")
    kind = detect_id_kind(names)
    if kind.startswith("ensembl"):
        ens: list[str | None] = [strip_version(n) for n in names]
    else:
        ens = list(gene_table().to_ensembl(names))
        unmapped = [n for n, e in zip(names, ens, strict=True) if e is None]
        if len(unmapped) == len(names):
            raise DataError(
                "none of the genes could be mapped to Ensembl IDs", "pass Ensembl IDs (ENSG…)"
            )
    seen: dict[str, None] = {}
    for e in ens:
        if e is not None:
            seen.setdefault(e, None)
    return list(seen)
