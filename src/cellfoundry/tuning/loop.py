"""The training loop: AdamW, warm-up + decay, stratified validation split, early stopping on macro-F1."""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split
from torch import nn
from tqdm.auto import tqdm

from cellfoundry.errors import DataError
from cellfoundry.tuning.backbone import Backbone
from cellfoundry.tuning.heads import ClassifierHead
from cellfoundry.tuning.losses import (
    BASE_EMBEDDING,
    DEFAULT_MARGIN,
    INPUT_RECONSTRUCTION,
    class_weights,
    cross_entropy,
    embedding_anchor_loss,
    triplet_loss,
)

log = logging.getLogger(__name__)

Method = Literal["head", "lora", "full"]
METHODS = ("head", "lora", "full")
DEFAULT_LR = {"head": 5e-3, "lora": 2e-3, "full": 1e-3}


@dataclass
class TrainConfig:
    """Hyper-parameters of one fine-tuning run."""

    method: Method = "lora"
    epochs: int = 10
    batch_size: int = 64
    lr: float | None = None  # per-method default when None
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    schedule: Literal["cosine", "linear"] = "cosine"
    patience: int = 3
    val_fraction: float = 0.2
    seed: int = 0
    triplet_weight: float = 0.1
    recon_weight: float = 0.1
    margin: float = DEFAULT_MARGIN
    class_weighted: bool = False
    head_hidden: int = 0
    head_dropout: float = 0.1
    eval_batch_size: int = 128
    progress: bool = True

    def resolved_lr(self) -> float:
        return float(self.lr if self.lr is not None else DEFAULT_LR[self.method])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"lr": self.resolved_lr()}


@dataclass
class TrainResult:
    """What the loop produced: the trained head, history, validation outputs."""

    head: ClassifierHead
    history: list[dict[str, float]]
    best_epoch: int
    train_index: np.ndarray
    val_index: np.ndarray
    base_embeddings: np.ndarray  # all cells, before training
    train_seconds: float
    stopped_early: bool
    extra: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def stratified_split(
    y: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train / validation indices (at least one validation cell per class)."""
    n_classes = len(np.unique(y))
    n_val = max(round(val_fraction * len(y)), n_classes)
    if n_val >= len(y) - n_classes:
        raise DataError(
            f"{len(y)} labelled cells are too few for a validation split over {n_classes} classes",
            "provide more labelled cells (at least a few per class)",
        )
    tr, va = train_test_split(np.arange(len(y)), test_size=n_val, stratify=y, random_state=seed)
    return np.sort(tr), np.sort(va)


@torch.no_grad()
def embed_cells(
    backbone: Backbone, cells: list[dict[str, np.ndarray]], batch_size: int = 128
) -> np.ndarray:
    """Cell embeddings in evaluation mode (dropout off, BatchNorm running statistics)."""
    was = backbone.network.training
    backbone.network.eval()
    out = []
    for s in range(0, len(cells), batch_size):
        out.append(
            backbone.embed(backbone.collate(cells[s : s + batch_size])).float().cpu().numpy()
        )
    backbone.network.train(was)
    return np.concatenate(out) if out else np.zeros((0, backbone.embedding_dim), dtype=np.float32)


@torch.no_grad()
def head_logits(head: ClassifierHead, emb: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Head logits in evaluation mode."""
    was = head.training
    head.eval()
    out = [
        head(torch.from_numpy(emb[s : s + batch_size])).cpu().numpy()
        for s in range(0, len(emb), batch_size)
    ]
    head.train(was)
    return (
        np.concatenate(out).astype(np.float32)
        if out
        else np.zeros((0, int(head.config["n_classes"])), np.float32)
    )


def _lr_lambda(total: int, warmup: int, schedule: str) -> Any:
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        progress = min(max(progress, 0.0), 1.0)
        return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress

    return f


def _batches(index: np.ndarray, batch_size: int, gen: torch.Generator) -> list[np.ndarray]:
    perm = index[torch.randperm(len(index), generator=gen).numpy()]
    out = [perm[s : s + batch_size] for s in range(0, len(perm), batch_size)]
    if len(out) > 1 and len(out[-1]) < 2:  # BatchNorm cannot train on one cell
        out[-2] = np.concatenate([out[-2], out[-1]])
        out.pop()
    return out


def _snapshot(backbone: Backbone, head: nn.Module, method: str) -> dict[str, Any]:
    net = (
        {}
        if method == "head"
        else {
            n: p.detach().clone()
            for n, p in backbone.network.state_dict().items()
            if method == "full" or "lora_" in n
        }
    )
    return {"head": copy.deepcopy(head.state_dict()), "net": net}


def _restore(backbone: Backbone, head: nn.Module, snap: dict[str, Any]) -> None:
    head.load_state_dict(snap["head"])
    if snap["net"]:
        backbone.network.load_state_dict(snap["net"], strict=False)


def train(
    backbone: Backbone,
    cells: list[dict[str, np.ndarray]],
    y: np.ndarray,
    n_classes: int,
    cfg: TrainConfig,
    *,
    base_embeddings: np.ndarray | None = None,
    split: tuple[np.ndarray, np.ndarray] | None = None,
) -> TrainResult:
    """Train ``backbone`` (per ``cfg.method``) and a head on labelled cells; restore the best epoch.

    ``method='head'`` trains only the head on cached frozen embeddings; ``'lora'`` trains the LoRA
    parameters already attached to ``backbone.network`` (base frozen, network kept in evaluation
    mode so BatchNorm statistics and dropout do not alter the base); ``'full'`` trains everything.
    ``split``: (training, early-stopping) indices; else a stratified ``cfg.val_fraction`` split.
    """
    if cfg.method not in METHODS:
        raise DataError(
            f"unknown fine-tuning method '{cfg.method}'", f"choose one of: {', '.join(METHODS)}"
        )
    seed_everything(cfg.seed)
    y = np.asarray(y, dtype=np.int64)
    tr, va = split if split is not None else stratified_split(y, cfg.val_fraction, cfg.seed)
    t0 = time.perf_counter()
    base = (
        base_embeddings
        if base_embeddings is not None
        else embed_cells(backbone, cells, cfg.eval_batch_size)
    )
    head = ClassifierHead(backbone.embedding_dim, n_classes, cfg.head_hidden, cfg.head_dropout)
    head.fit_standardisation(torch.from_numpy(base[tr]))
    net_params = (
        []
        if cfg.method == "head"
        else [p for p in backbone.network.parameters() if p.requires_grad]
    )
    if cfg.method == "head":
        for p in backbone.network.parameters():
            p.requires_grad = False
    elif cfg.method == "full":
        for p in backbone.network.parameters():
            p.requires_grad = True
        net_params = list(backbone.network.parameters())
    elif not net_params:
        raise DataError(
            "method 'lora' but the network has no trainable (LoRA) parameters",
            "attach adapters with cellfoundry.tuning.lora.apply_lora first",
        )
    params = list(head.parameters()) + net_params
    opt = torch.optim.AdamW(params, lr=cfg.resolved_lr(), weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    n_steps_epoch = len(_batches(tr, cfg.batch_size, torch.Generator().manual_seed(0)))
    total = max(1, cfg.epochs * n_steps_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(total, int(cfg.warmup_fraction * total), cfg.schedule)
    )
    weights = class_weights(y[tr], n_classes) if cfg.class_weighted else None
    base_t = torch.from_numpy(base)
    y_t = torch.from_numpy(y)
    history: list[dict[str, float]] = []
    best_f1, best_epoch, since_best = -1.0, 0, 0
    snap = _snapshot(backbone, head, cfg.method)
    stopped = False
    bar = tqdm(
        total=cfg.epochs, desc=f"fine-tuning ({cfg.method})", unit="epoch", disable=not cfg.progress
    )
    for epoch in range(1, cfg.epochs + 1):
        head.train()
        backbone.network.train(cfg.method == "full")
        sums = {"ce": 0.0, "triplet": 0.0, INPUT_RECONSTRUCTION: 0.0, BASE_EMBEDDING: 0.0}
        sums["total"] = 0.0
        n_seen = 0
        for idx in _batches(tr, cfg.batch_size, gen):
            yb = y_t[idx]
            if cfg.method == "head":
                emb = base_t[idx]
                recon, recon_kind = None, INPUT_RECONSTRUCTION
            else:
                batch = backbone.collate([cells[i] for i in idx])
                emb = backbone.embed(batch)
                recon = backbone.reconstruction_loss(batch, emb) if cfg.recon_weight else None
                recon_kind = INPUT_RECONSTRUCTION
                if recon is None and cfg.recon_weight:
                    recon = embedding_anchor_loss(emb, base_t[idx])
                    recon_kind = BASE_EMBEDDING
            ce = cross_entropy(head(emb), yb, weights)
            trip = (
                triplet_loss(emb, yb, cfg.margin)
                if cfg.triplet_weight and cfg.method != "head"
                else None
            )
            loss = ce
            if trip is not None:
                loss = loss + cfg.triplet_weight * trip
            if recon is not None:
                loss = loss + cfg.recon_weight * recon
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            k = len(idx)
            n_seen += k
            sums["ce"] += ce.item() * k
            sums["triplet"] += trip.item() * k if trip is not None else 0.0
            if recon is not None:
                sums[recon_kind] += recon.item() * k
            sums["total"] += loss.item() * k
        row = {f"train_{k}": v / max(n_seen, 1) for k, v in sums.items()}
        # validation
        val_emb = (
            base[va]
            if cfg.method == "head"
            else embed_cells(backbone, [cells[i] for i in va], cfg.eval_batch_size)
        )
        pred = head_logits(head, val_emb).argmax(axis=1)
        f1 = float(f1_score(y[va], pred, average="macro", zero_division=0))
        row |= {
            "epoch": float(epoch),
            "val_macro_f1": f1,
            "val_accuracy": float((pred == y[va]).mean()),
            "lr": float(sched.get_last_lr()[0]),
        }
        history.append(row)
        log.info(
            "epoch %d: ce %.4f triplet %.4f input-reconstruction %.4f base-embedding %.4f "
            "total %.4f | early-stopping macro-F1 %.4f",
            epoch,
            row["train_ce"],
            row["train_triplet"],
            row[f"train_{INPUT_RECONSTRUCTION}"],
            row[f"train_{BASE_EMBEDDING}"],
            row["train_total"],
            f1,
        )
        bar.set_postfix(loss=f"{row['train_total']:.3f}", val_f1=f"{f1:.3f}")
        bar.update(1)
        if f1 > best_f1:
            best_f1, best_epoch, since_best = f1, epoch, 0
            snap = _snapshot(backbone, head, cfg.method)
        else:
            since_best += 1
            if cfg.patience and since_best >= cfg.patience:
                stopped = epoch < cfg.epochs
                break
    bar.close()
    _restore(backbone, head, snap)
    for p in backbone.network.parameters():
        p.requires_grad = False
    backbone.network.eval()
    head.eval()
    return TrainResult(
        head=head,
        history=history,
        best_epoch=best_epoch,
        train_index=tr,
        val_index=va,
        base_embeddings=base,
        train_seconds=time.perf_counter() - t0,
        stopped_early=stopped,
    )
