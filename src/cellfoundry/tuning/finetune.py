"""``cellfoundry.tuning.finetune``: adapt an encoder to a labelled reference (head, LoRA or full)."""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from safetensors.torch import save_model

from cellfoundry.artifacts import MANIFEST, Manifest, cell_keys
from cellfoundry.data.genes import gene_table, genes_hash
from cellfoundry.data.io import as_anndata
from cellfoundry.data.species import to_human_space
from cellfoundry.errors import DataError, ModelError
from cellfoundry.models.baselines.common import prepare_reference
from cellfoundry.models.fitting import read_labels
from cellfoundry.stats.calibration import (
    apply_temperature,
    choose_unknown_threshold,
    expected_calibration_error,
    fit_temperature,
)
from cellfoundry.stats.labels import called_mask
from cellfoundry.stats.metrics import classification_metrics
from cellfoundry.stats.splits import cells_sha256, held_out_split
from cellfoundry.tuning.annotator import BASE_FILE, FinetunedAnnotator
from cellfoundry.tuning.backbone import (
    SCIMILARITY_SIZES,
    SCIMILARITY_V11,
    Backbone,
    FoundationBackbone,
    SCimilarityScratch,
    state_sha256,
)
from cellfoundry.tuning.guards import run_guards
from cellfoundry.tuning.loop import (
    METHODS,
    TrainConfig,
    embed_cells,
    head_logits,
    seed_everything,
    train,
)
from cellfoundry.tuning.lora import apply_lora, count_parameters

log = logging.getLogger(__name__)

FOUNDATION = ("geneformer", "scgpt", "scimilarity")
RANDOM_WARNING = (
    "RANDOM INITIALISATION: no pretrained weights are registered for '{family}', so fine-tuning starts from "
    "RANDOM weights. Results say nothing about the pretrained model; register a checkpoint to use one."
)


@dataclass
class ResolvedBase:
    """The backbone to adapt and how to rebuild it (recorded in the manifest)."""

    backbone: Backbone
    source: str  # "random" | "scratch" | "checkpoint" | "artifact" | "custom"
    rebuild: dict[str, Any]
    random_init: bool
    notes: list[str] = field(default_factory=list)


def _registered_checkpoint(name: str) -> Path | None:
    """The folder of a checkpoint registered in the local model zoo under ``name``, or the first one
    registered for the family ``name``; None when there is none."""
    from cellfoundry.models import zoo

    reg = zoo.get_registered(name)
    if reg is None and name in FOUNDATION:
        fam = [r for r in zoo.registered() if r.family == name]
        reg = fam[0] if fam else None
    if reg is None:
        return None
    folder = Path(reg.path)
    if not folder.is_dir():
        raise ModelError(
            f"registered checkpoint '{reg.name}' points to {folder}, which no longer exists",
            f"restore the folder or import it again: cellfoundry models import DIR --name {reg.name}",
        )
    return folder


def _map_genes(genes: list[str], from_kind: str, to_kind: str) -> list[str]:
    if from_kind == to_kind:
        return genes
    table = gene_table()
    lookup = table.symbol_to_id if to_kind == "ensembl" else table.id_to_symbol
    out, seen = [], set()
    for g in genes:
        m = lookup.get(g.split(".")[0] if to_kind == "symbol" else g)
        if m and m not in seen:
            seen.add(m)
            out.append(m)
    return out


def resolve_base(
    model: str | Path | Backbone,
    adata: ad.AnnData,
    label_key: str,
    *,
    method: str,
    seed: int,
    variant: str | None,
    n_features: int | None,
    scratch_hidden: list[int] | None,
    scratch_latent: int,
) -> ResolvedBase:
    """Turn ``model`` (family name, registered checkpoint, checkpoint folder, artifact, Backbone) into a base."""
    if isinstance(model, Backbone):
        return ResolvedBase(model, "custom", {"kind": "custom"}, random_init=False)
    spec = str(model)
    path = Path(spec)
    if path.is_dir() and (path / MANIFEST).is_file():
        return _base_from_artifact(path)
    if path.is_dir():
        return _base_from_checkpoint(path, None)
    registered = _registered_checkpoint(spec)
    if registered is not None:
        return _base_from_checkpoint(registered, None, name=spec)
    if spec not in FOUNDATION:
        raise ModelError(
            f"'{spec}' is neither a model family, a registered checkpoint, nor a folder",
            f"use one of {', '.join(FOUNDATION)}, a checkpoint folder or a cellfoundry artifact folder",
        )
    ref = prepare_reference(adata, label_key, n_features)
    log.warning(RANDOM_WARNING.format(family=spec))
    if spec == "scimilarity":
        if variant is not None and variant not in SCIMILARITY_SIZES:
            raise ModelError(
                f"unknown SCimilarity variant '{variant}'",
                f"choose one of: {', '.join(SCIMILARITY_SIZES)}",
            )
        hidden, latent = (
            SCIMILARITY_SIZES[variant]
            if variant
            else (list(SCIMILARITY_V11["hidden"]), scratch_latent)
        )
        hidden = scratch_hidden or hidden
        scr = SCimilarityScratch(ref.genes, ref.key_kind, hidden=hidden, latent=latent, seed=seed)
        bb: Backbone = scr
        rebuild: dict[str, Any] = {
            "kind": "scratch",
            "config": dict(scr.config),
            "gene_key_kind": ref.key_kind,
            "name": bb.name,
        }  # type: ignore[attr-defined]
        notes = [
            f"SCimilarity architecture from random initialisation on the reference's own {len(ref.genes)} genes"
        ]
        return ResolvedBase(bb, "scratch", rebuild, random_init=True, notes=notes)
    from cellfoundry.models.foundation import foundation_class

    try:
        cls = foundation_class(spec)
    except ImportError as exc:
        raise ModelError(
            f"the '{spec}' family is not yet available in this build ({exc})",
            "use --model scimilarity, a checkpoint folder, or update cellfoundry",
        ) from exc
    genes = _map_genes(ref.genes, ref.key_kind, cls.gene_key_kind)
    if len(genes) < 10:
        raise DataError(
            f"only {len(genes)} reference genes map to {cls.gene_key_kind} keys for {spec}",
            "provide gene symbols and Ensembl IDs (e.g. var['gene_ids'])",
        )
    fm = cls.from_random(genes, variant=variant, seed=seed)
    name = f"{spec}:{getattr(fm, 'variant', variant)}:random"
    rebuild_r: dict[str, Any] = {
        "kind": "random",
        "family": spec,
        "variant": variant,
        "seed": seed,
        "name": name,
    }
    return ResolvedBase(
        FoundationBackbone(fm, name=name),
        "random",
        rebuild_r,
        random_init=True,
        notes=[f"{spec} from random initialisation over {len(genes)} reference genes"],
    )


def _base_from_checkpoint(
    folder: Path, family: str | None, name: str | None = None
) -> ResolvedBase:
    from cellfoundry.models.foundation import load_foundation

    try:
        fm = load_foundation(folder, family)
    except ImportError as exc:
        raise ModelError(
            f"the family of {folder} is not yet available in this build ({exc})",
            "update cellfoundry",
        ) from exc
    bb = FoundationBackbone(fm, name=name or f"{fm.family}:{folder.name}")
    d = bb.describe()
    rebuild = {
        "kind": "checkpoint",
        "family": fm.family,
        "checkpoint_dir": str(folder.resolve()),
        "checkpoint_files": d.get("checkpoint_files", {}),
        "name": bb.name,
    }
    return ResolvedBase(bb, "checkpoint", rebuild, random_init=False)


def _base_from_artifact(folder: Path) -> ResolvedBase:
    from cellfoundry.models.registry import load_model

    ann = load_model(folder)
    if not isinstance(ann, FinetunedAnnotator):
        # frozen-embedding annotators (<family>-knn / <family>-head) know their base checkpoint
        base_folder = getattr(ann, "_base_folder", None)
        if callable(base_folder):
            fam = ann.manifest.extra.get("base_checkpoint", {}).get("family")
            return _base_from_checkpoint(Path(base_folder()), fam)
        raise ModelError(
            f"{folder} is a '{ann.family}' artifact without an encoder to fine-tune",
            "pass a foundation family, a checkpoint folder or a `cellfoundry finetune` output",
        )
    bb = ann.backbone
    if ann.peft_model is not None:
        bb.network = ann.peft_model.merge_and_unload()
        if isinstance(bb, FoundationBackbone):
            bb.fm.network = bb.network
    base = ann.manifest.extra["base"]
    return ResolvedBase(
        bb,
        "artifact",
        dict(base["rebuild"]),
        random_init=bool(base.get("random_init")),
        notes=[f"continues from fine-tuned artifact {folder} ({ann.method})"],
    )


def _cells_sha256(cells: list[dict[str, np.ndarray]], y: np.ndarray) -> str:
    h = hashlib.sha256()
    for c in cells:
        for k in sorted(c):
            h.update(k.encode())
            h.update(np.ascontiguousarray(c[k]).tobytes())
    h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()


def finetune(
    reference: ad.AnnData | str | Path,
    label_key: str = "cell_type",
    model: str | Path | Backbone = "scimilarity",
    method: str = "lora",
    *,
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_targets: list[str] | None = None,
    lora_dropout: float = 0.0,
    triplet_weight: float | None = None,
    recon_weight: float | None = None,
    epochs: int = 10,
    seed: int = 0,
    out: str | Path | None = None,
    batch_size: int = 64,
    lr: float | None = None,
    patience: int = 3,
    val_fraction: float = 0.3,
    class_weighted: bool = False,
    head_hidden: int = 0,
    margin: float = 0.1,
    variant: str | None = None,
    n_features: int | None = 3000,
    scratch_hidden: list[int] | None = None,
    scratch_latent: int = 128,
    name: str | None = None,
    progress: bool = True,
    species: str | None = None,
) -> FinetunedAnnotator:
    """Fine-tune ``model`` on ``reference.obs[label_key]`` and return (and save to ``out``) the annotator.

    ``model``: a family name (random initialisation when no weights are registered — said loudly),
    a registered checkpoint name, a checkpoint folder, or a cellfoundry artifact folder.
    ``method``: ``head`` (frozen encoder + head), ``lora`` (PEFT adapters + head) or ``full``.
    Losses: cross-entropy + ``triplet_weight`` x semi-hard triplet + ``recon_weight`` x reconstruction.
    ``val_fraction`` of the labelled cells is held out, in three equal stratified parts: early
    stopping, calibration (temperature and Unknown threshold), and the stored test metrics.
    A mouse, macaque or pig reference is mapped to human orthologs first (``species`` overrides
    detection, as in ``cellfoundry.annotate``).
    """
    if method not in METHODS:
        raise DataError(
            f"unknown fine-tuning method '{method}'", f"choose one of: {', '.join(METHODS)}"
        )
    if epochs < 1:
        raise DataError(f"epochs must be >= 1 (got {epochs})", "use e.g. --epochs 10")
    adata, _ = to_human_space(as_anndata(reference), species)
    labels = read_labels(adata, label_key)
    sub = adata[labels.keep]
    sub = sub.to_memory() if sub.isbacked else sub.copy()
    seed_everything(seed)
    base = resolve_base(
        model,
        adata,
        label_key,
        method=method,
        seed=seed,
        variant=variant,
        n_features=n_features,
        scratch_hidden=scratch_hidden,
        scratch_latent=scratch_latent,
    )
    bb = base.backbone
    scratch = base.source == "scratch"
    tw = (
        triplet_weight
        if triplet_weight is not None
        else (1.0 if scratch and method == "full" else 0.1)
    )
    rw = (
        recon_weight if recon_weight is not None else (1.0 if scratch and method == "full" else 0.1)
    )
    if method == "head":
        tw = rw = 0.0
    network_sha = state_sha256(bb.network)
    tmp = Path(tempfile.mkdtemp(prefix="cellfoundry-base-"))
    base_file: Path | None = None
    if base.source != "checkpoint":
        base_file = tmp / BASE_FILE
        save_model(bb.network, str(base_file))
    cells = bb.tokenize(sub, seed=seed)
    seed_everything(seed)
    peft_model = None
    match = None
    targets: list[str] = []
    if method == "lora":
        targets = list(lora_targets or bb.default_lora_targets)
        if not targets:
            raise ModelError(f"no default LoRA targets for {bb.name}", "pass --lora-targets")
        probe_batch = bb.collate(cells[: min(16, len(cells))])
        peft_model, match = apply_lora(
            bb.network,
            targets,
            r=lora_r,
            alpha=lora_alpha,
            dropout=lora_dropout,
            base_name=bb.name,
            strict=bool(lora_targets),
            probe=(bb.embed, probe_batch),
        )
        targets = match.targets
    cfg = TrainConfig(
        method=method,  # type: ignore[arg-type]
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        patience=patience,  # type: ignore[arg-type]
        val_fraction=val_fraction,
        seed=seed,
        triplet_weight=tw,
        recon_weight=rw,
        margin=margin,
        class_weighted=class_weighted,
        head_hidden=head_hidden,
        progress=progress,
    )
    y = labels.y
    n_classes = len(labels.classes)
    for p in bb.network.parameters():
        p.requires_grad = method == "full" or (method == "lora" and p.requires_grad)
    from cellfoundry.tuning.heads import ClassifierHead

    head_count = count_parameters(ClassifierHead(bb.embedding_dim, n_classes, head_hidden))
    net_count = count_parameters(bb.network)
    trainable = head_count.trainable + net_count.trainable
    total = head_count.total + net_count.total
    # early stopping, calibration and the stored metrics each use their own held-out cells
    split = held_out_split(y, val_fraction, seed)
    res = train(bb, cells, y, n_classes, cfg, split=(split.train, split.stop))
    ca, va = split.calibration, split.test
    cal_logits = head_logits(res.head, embed_cells(bb, [cells[i] for i in ca], cfg.eval_batch_size))
    temperature = fit_temperature(cal_logits, y[ca])
    threshold = choose_unknown_threshold(apply_temperature(cal_logits, temperature), y[ca])
    val_emb = embed_cells(bb, [cells[i] for i in va], cfg.eval_batch_size)
    logits = head_logits(res.head, val_emb)
    proba = apply_temperature(logits, temperature)
    pred = proba.argmax(axis=1)
    guards = run_guards(val_emb, res.base_embeddings[va], pred, y[va], method)
    cls_names = labels.classes
    metrics = classification_metrics(
        [cls_names[i] for i in y[va]],
        [cls_names[i] for i in pred],
        proba,
        cls_names,
        threshold=threshold,
    )
    metrics["ece"] = expected_calibration_error(proba, y[va])
    metrics["ece_before_temperature"] = expected_calibration_error(
        apply_temperature(logits, 1.0), y[va]
    )
    metrics["unknown_share"] = float((~called_mask(proba, threshold)).mean())
    metrics["evaluated_on"] = (
        f"stratified held-out test part, {len(va)} of {len(y)} reference cells (seed {seed}); "
        f"early stopping on {len(split.stop)} and temperature / Unknown threshold on "
        f"{len(ca)} other held-out cells; trained on {len(split.train)} cells"
    )
    metrics["split"] = split.sizes()
    metrics["success"] = guards.success
    counts = np.bincount(y, minlength=n_classes)
    params: dict[str, Any] = cfg.to_dict() | {
        "method": method,
        "model": str(model) if not isinstance(model, Backbone) else bb.name,
        "lora_r": lora_r if method == "lora" else None,
        "lora_alpha": lora_alpha if method == "lora" else None,
        "lora_dropout": lora_dropout if method == "lora" else None,
        "lora_targets": targets or None,
        "variant": variant,
        "n_features": n_features,
        "head": dict(
            ClassifierHead(bb.embedding_dim, n_classes, head_hidden, cfg.head_dropout).config
        ),
    }
    random_msg = RANDOM_WARNING.format(family=bb.family) if base.random_init else None
    extra: dict[str, Any] = {
        "status": "success" if guards.success else "failed_guards",
        "guards": guards.to_dict(),
        "base": {
            "name": bb.name,
            "family": bb.family,
            "source": base.source,
            "random_init": base.random_init,
            "warning": random_msg,
            "network_sha256": network_sha,
            "rebuild": base.rebuild,
            "description": bb.describe(),
            "notes": base.notes,
        },
        "trainable_parameters": {
            "trainable": trainable,
            "total": total,
            "share": trainable / total if total else 0.0,
        },
        "lora_matches": match.matches if match else None,
        "lora_modules_left_out": match.unreachable if match else None,
        "history": res.history,
        "best_epoch": res.best_epoch,
        "stopped_early": res.stopped_early,
        "train_seconds": res.train_seconds,
        "split": split.sizes() | {"seed": seed},
        "seeds": {"split": seed, "torch": seed, "numpy": seed},
    }
    manifest = Manifest(
        family=FinetunedAnnotator.family,
        name=name or f"{bb.family}-{method}",
        classes=cls_names,
        genes_sha256=genes_hash(bb.genes),
        n_genes=len(bb.genes),
        gene_key_kind=bb.gene_key_kind,
        preprocessing={
            "backbone": bb.name,
            "input": "the base family's own tokenisation / preprocessing "
            "(SCimilarity architecture: log1p-CP10k over the model genes, missing genes = 0)",
        },
        unknown_threshold=threshold,
        temperature=temperature,
        params=params,
        metrics=metrics,
        training={
            "label_key": label_key,
            "n_cells": len(y),
            "n_cells_in_file": int(adata.n_obs),
            "dropped": labels.dropped,
            "class_counts": {c: int(n) for c, n in zip(cls_names, counts, strict=True)},
            "data_sha256": _cells_sha256(cells, y),
            "validation_fraction": val_fraction,
            "train_cells_sha256": cells_sha256(sub.obs_names[split.train]),
        },
        extra=extra,
    )
    ann = FinetunedAnnotator(manifest, bb, res.head, peft_model)
    ann.training_cells = cell_keys(sub)[split.train]
    if base_file is not None:
        from safetensors.torch import load_file

        ann._base_state = load_file(str(base_file))  # type: ignore[attr-defined]
    shutil.rmtree(tmp, ignore_errors=True)
    # held-out test predictions through the very path `annotate` uses
    val_adata = sub[va].copy()
    vp = ann.predict(val_adata)
    vpred = vp.probabilities.argmax(axis=1)
    ann.validation = pd.DataFrame(
        {
            "cell": val_adata.obs_names.astype(str),
            "true": [cls_names[i] for i in y[va]],
            "predicted": [cls_names[i] for i in vpred],
            "confidence": vp.probabilities.max(axis=1),
        }
        | {f"p_{c}": vp.probabilities[:, j] for j, c in enumerate(cls_names)}
    )
    if not np.array_equal(vpred, pred):
        log.warning(
            "test predictions through annotate() differ from the training loop's on %d cells",
            int((vpred != pred).sum()),
        )
    losses = ann.losses(val_adata, y[va], margin)
    manifest.metrics |= {f"test_{k}": v for k, v in losses.items()}
    ann.holdout = {
        "index": va,
        "y": y[va],
        "proba": vp.probabilities,
        "train_index": split.train,
        "stop_index": split.stop,
        "calibration_index": ca,
    }
    if random_msg:
        log.warning(random_msg)
    if out is not None:
        ann.save(out)
        if not guards.success:
            log.warning(
                "the artifact in %s is marked failed_guards: %s", out, "; ".join(guards.failures)
            )
    return ann
