"""``ScGPTModel``: the scGPT family behind the ``FoundationModel`` protocol.

Embedding follows the official zero-shot path (``scgpt.tasks.embed_data``, spec §2.7 A): raw
counts (no normalisation), expressed vocabulary genes only, per-cell binning into ``n_bins``,
``<cls>`` prepended with value ``pad_value``, at most ``max_length`` tokens, the last layer's
``<cls>`` output, L2-normalised. Inference streams row chunks, sorts cells by length within a
chunk, batches them by a token budget, and restores the input order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import anndata as ad
import numpy as np
import torch
import torch.nn.functional as F

from cellfoundry.data.prepare import InputPlan, iter_features, plan_input
from cellfoundry.data.report import ValidationReport
from cellfoundry.errors import ModelError
from cellfoundry.models.accel import on_device, resolve_accel
from cellfoundry.models.batching import check_sizes, token_budget_batches
from cellfoundry.models.foundation import FoundationModel, LoadReport
from cellfoundry.models.heap import reuse_freed_memory
from cellfoundry.models.scgpt.checkpoint import CHECKPOINT_FILES, load_checkpoint, save_checkpoint
from cellfoundry.models.scgpt.config import ScGPTConfig
from cellfoundry.models.scgpt.network import PackedEncoderLayer, ScGPTNetwork
from cellfoundry.models.scgpt.tokenizer import ScGPTTokenizer
from cellfoundry.models.scgpt.vocab import ScGPTVocab

_MAX_LORA_LAYERS = 64
# Attention in/out projections everywhere, feed-forward linear1/linear2 of the transformer layers
# only (a bare "linear1" suffix would also hit value_encoder.linear1).
LORA_TARGETS = [
    "self_attn.Wqkv",
    "self_attn.out_proj",
    *(f"transformer_encoder.layers.{i}.linear{j}" for i in range(_MAX_LORA_LAYERS) for j in (1, 2)),
]

VARIANTS: dict[str, dict[str, Any]] = {
    "tiny": {"embsize": 32, "nheads": 4, "d_hid": 64, "nlayers": 2},
    "whole-human": {"embsize": 512, "nheads": 8, "d_hid": 512, "nlayers": 12},
}
CHUNK_CELLS = 1024
DEFAULT_MAX_TOKENS = 32_768  # padded tokens per forward batch


class ScGPTModel(FoundationModel):
    """scGPT (whole-human or any published-format checkpoint) as a cell embedder."""

    family: ClassVar[str] = "scgpt"
    embedding_key: ClassVar[str] = "X_scgpt"
    gene_key_kind: ClassVar[str] = "symbol"
    default_lora_targets: ClassVar[list[str]] = LORA_TARGETS
    # share of the 60k-gene vocabulary that must be present; scGPT only reads expressed genes,
    # so the gate is the absolute number of matched genes (plan_input's min_genes) instead.
    min_coverage: ClassVar[float] = 0.0

    def __init__(
        self,
        network: ScGPTNetwork,
        config: ScGPTConfig,
        vocab: ScGPTVocab,
        *,
        load_report: LoadReport,
        checkpoint_dir: Path | None = None,
        max_length: int | None = None,
    ) -> None:
        self.network = network
        self.config = config
        self.vocab = vocab
        self.load_report = load_report
        self.variant = load_report.variant or "custom"
        self.checkpoint_dir = checkpoint_dir if checkpoint_dir is not None else Path()
        # embed_data's max_length (1200) is the same as the pretraining max_seq_len
        self.max_length = int(max_length or config.max_seq_len)
        self._gene_ids = np.asarray(vocab.gene_ids, dtype=np.int64)

    # --- loading -------------------------------------------------------------------------------
    @classmethod
    def detect(cls, folder: Path) -> bool:
        p = Path(folder)
        return all((p / f).is_file() for f in CHECKPOINT_FILES)

    @classmethod
    def load(cls, folder: str | Path, *, verify: bool = True) -> ScGPTModel:
        cfg, vocab, net, report = load_checkpoint(folder, verify=verify)
        return cls(net, cfg, vocab, load_report=report, checkpoint_dir=Path(folder))

    @classmethod
    def from_random(
        cls, genes: list[str], *, variant: str | None = None, seed: int = 0
    ) -> ScGPTModel:
        name = variant or "tiny"
        if name not in VARIANTS:
            raise ModelError(
                f"unknown scGPT variant '{name}'", f"choose one of: {', '.join(VARIANTS)}"
            )
        if not genes:
            raise ModelError(
                "from_random needs at least one gene symbol", "pass the model's gene symbols"
            )
        cfg = ScGPTConfig(**VARIANTS[name])
        vocab = ScGPTVocab.from_genes(list(dict.fromkeys(str(g) for g in genes)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = ScGPTNetwork(cfg, len(vocab), vocab[cfg.pad_token])
            with torch.no_grad():
                net.encoder.embedding.weight.uniform_(-0.1, 0.1)  # the official init_weights
        net.eval()
        report = LoadReport(family="scgpt", variant=f"random-{name}")
        report.messages.append(f"random weights (seed {seed}): no pretrained checkpoint was loaded")
        return cls(net, cfg, vocab, load_report=report)

    def save(self, folder: str | Path, *, layout: str = "Wqkv") -> Path:
        """Write the model as a published-format checkpoint folder."""
        return save_checkpoint(folder, self.network, self.config, self.vocab, layout=layout)

    # --- properties ----------------------------------------------------------------------------
    @property
    def embedding_dim(self) -> int:
        return self.config.embsize

    @property
    def genes(self) -> list[str]:
        return self.vocab.genes

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    # --- tokenisation --------------------------------------------------------------------------
    def plan(self, adata: ad.AnnData, report: ValidationReport | None = None) -> InputPlan:
        """Raw-count matrix and gene alignment for ``adata`` (refuses clearly when unusable)."""
        return plan_input(
            adata,
            self.genes,
            representation="counts",
            key_kind="symbol",
            target_name="scGPT vocabulary genes",
            min_coverage=self.min_coverage,
            report=report,
        )

    def _tokenizer(self, plan: InputPlan) -> tuple[ScGPTTokenizer, np.ndarray]:
        """The tokenizer and the feature-column order that restores the data's column order."""
        src = plan.alignment.source_index
        present = np.nonzero(src >= 0)[0]
        order = present[np.argsort(src[present], kind="stable")]
        tok = ScGPTTokenizer(
            column_ids=self._gene_ids[order],
            cls_id=self.vocab.cls_id,
            pad_id=self.vocab[self.config.pad_token],
            cls_value=float(
                self.config.cls_value
                if self.config.cls_value is not None
                else self.config.pad_value
            ),
            pad_value=float(self.config.pad_value),
            n_bins=self.config.n_bins,
            max_length=self.max_length,
        )
        return tok, order

    def _iter_tokens(
        self, adata: ad.AnnData, seed: int, report: ValidationReport | None, chunk_size: int
    ) -> Iterator[tuple[int, list[dict[str, np.ndarray]]]]:
        plan = self.plan(adata, report)
        tok, order = self._tokenizer(plan)
        for start, feats in iter_features(adata, plan, chunk_size):
            yield start, tok.tokenize_rows(feats[:, order], seed)

    def tokenize(
        self, adata: ad.AnnData, *, seed: int = 0, report: ValidationReport | None = None
    ) -> list[dict[str, np.ndarray]]:
        out: list[dict[str, np.ndarray]] = []
        for _, cells in self._iter_tokens(adata, seed, report, CHUNK_CELLS):
            out.extend(cells)
        return out

    def no_evidence(self, cells: list[dict[str, np.ndarray]]) -> np.ndarray:
        """True for cells whose tokens are ``<cls>`` alone: no expressed vocabulary gene."""
        return np.fromiter((len(c["gene_ids"]) <= 1 for c in cells), dtype=bool, count=len(cells))

    def collate(self, cells: list[dict[str, np.ndarray]]) -> dict[str, Any]:
        tok = ScGPTTokenizer(
            column_ids=self._gene_ids,
            cls_id=self.vocab.cls_id,
            pad_id=self.vocab[self.config.pad_token],
            pad_value=float(self.config.pad_value),
        )
        return tok.collate(cells)

    # --- network -------------------------------------------------------------------------------
    def forward_embeddings(
        self,
        batch: dict[str, Any],
        *,
        normalize: bool = True,
        layers: list[PackedEncoderLayer] | None = None,
    ) -> torch.Tensor:
        """``<cls>`` output of the last layer (B x d), L2-normalised as the official embed path does.

        ``layers``: the network's ``packed_layers`` (inference on oneDNN GEMMs)."""
        dev = self.device
        emb = self.network.cell_embedding(
            batch["gene_ids"].to(dev),
            batch["values"].to(dev),
            batch["padding_mask"].to(dev),
            layers=layers,
        )
        return F.normalize(emb, dim=1) if normalize else emb

    def _embed_cells(
        self,
        cells: list[dict[str, np.ndarray]],
        batch_size: int,
        max_tokens: int,
        layers: list[PackedEncoderLayer] | None,
    ) -> np.ndarray:
        """Embeddings of tokenised cells in their order: longest first, in token-budget batches.

        ``layers``: the network's ``packed_layers`` (None: the nn.Module layers)."""
        lengths = np.array([len(c["gene_ids"]) for c in cells], dtype=np.int64)
        out = np.empty((len(cells), self.embedding_dim), dtype=np.float32)
        for idx in token_budget_batches(lengths, batch_size, max_tokens):
            batch = self.collate([cells[i] for i in idx])
            out[idx] = self.forward_embeddings(batch, layers=layers).float().cpu().numpy()
        return out

    def embed(
        self,
        adata: ad.AnnData,
        *,
        batch_size: int = 32,
        seed: int = 0,
        progress: bool = False,
        report: ValidationReport | None = None,
        chunk_size: int = CHUNK_CELLS,
        threads: int | None = None,
        out: Any = None,
        device: str | None = "auto",
        precision: str | None = "auto",
        max_tokens: int = DEFAULT_MAX_TOKENS,
        empty: Any = None,
    ) -> Any:
        """``<cls>`` embeddings (L2-normalised) in input order, rows read ``chunk_size`` at a time.

        Within a chunk cells are sorted by length and cut into batches of at most ``batch_size``
        cells and ``max_tokens`` padded tokens (``models.batching``), so each forward pass holds
        about the same memory; on the CPU a batch's real tokens are packed without padding.
        ``out`` (e.g. ``data.h5ad_copy.ObsmWriter``) receives each chunk's rows as they are done.
        ``device``/``precision``: see ``models.accel`` (auto: a CUDA GPU with bf16/fp16 autocast
        when present, else the CPU in float32). ``empty``: the cells without an expressed
        vocabulary gene are marked there (see FoundationModel.embed)."""
        check_sizes(batch_size, max_tokens)
        if chunk_size < 1:
            raise ModelError(f"chunk_size must be ≥ 1 (got {chunk_size})", "pass a positive size")
        accel = resolve_accel(device, precision)
        if out is None:
            out = np.empty((adata.n_obs, self.embedding_dim), dtype=np.float32)
        was_training = self.network.training
        prev_threads = torch.get_num_threads()
        self.network.eval()
        try:
            if threads:
                torch.set_num_threads(threads)
            bar = _progress(adata.n_obs) if progress else contextlib.nullcontext()
            with (
                torch.inference_mode(),
                reuse_freed_memory(),
                bar as pb,
                on_device(self.network, accel),
            ):
                # in full float32 on the CPU the GEMMs run on oneDNN-packed weights, packed once
                rows = min(max_tokens, batch_size * self.max_length)  # a batch's packed rows
                layers = self.network.packed_layers(rows) if accel.dtype is None else None
                for start, cells in self._iter_tokens(adata, seed, report, chunk_size):
                    with accel.autocast():
                        emb = self._embed_cells(cells, batch_size, max_tokens, layers)
                    out[start : start + len(cells)] = emb
                    if empty is not None:
                        empty[start : start + len(cells)] = self.no_evidence(cells)
                    if pb is not None:
                        pb.update(len(cells))
        finally:
            torch.set_num_threads(prev_threads)
            self.network.train(was_training)
        return out


def _progress(total: int) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with the project's dependencies
        return contextlib.nullcontext()
    return tqdm(total=total, desc="scGPT embedding", unit="cell")
