"""The ``finetuned`` model family: an adapted encoder + head stored as a cellfoundry artifact.

Artifact folder: ``manifest.json``, ``genes.txt``, ``head.safetensors``, and per method
``adapter_config.json`` + ``adapter_model.safetensors`` (LoRA, PEFT's own files) or
``network.safetensors`` (full fine-tuning); ``base_network.safetensors`` holds the base weights
whenever they cannot be re-read from a pretrained checkpoint folder (random initialisation).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import anndata as ad
import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file
from tqdm.auto import tqdm

from cellfoundry.artifacts import Manifest, load_genes, sha256_file, write_training_cells
from cellfoundry.data.prepare import DEFAULT_MIN_COVERAGE, InputPlan, Representation, plan_input
from cellfoundry.data.report import ValidationReport, validate
from cellfoundry.errors import DataError, ModelError
from cellfoundry.models.base import Annotator, Prediction
from cellfoundry.models.embedding_annotators import family_min_coverage
from cellfoundry.stats.calibration import apply_temperature
from cellfoundry.stats.labels import uniform_where
from cellfoundry.tuning.backbone import (
    Backbone,
    FoundationBackbone,
    SCimilarityScratch,
    state_sha256,
)
from cellfoundry.tuning.heads import ClassifierHead
from cellfoundry.tuning.loop import embed_cells, head_logits
from cellfoundry.tuning.lora import load_lora
from cellfoundry.tuning.losses import (
    BASE_EMBEDDING,
    INPUT_RECONSTRUCTION,
    mse_batched,
    triplet_loss_batched,
)

log = logging.getLogger(__name__)

HEAD_FILE = "head.safetensors"
NETWORK_FILE = "network.safetensors"
BASE_FILE = "base_network.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
VALIDATION_FILE = "test_predictions.csv"  # held-out cells no training choice used
EMBEDDING_KEY = "X_finetuned"


def build_base(rebuild: dict[str, Any], genes: list[str], folder: Path | None) -> Backbone:
    """Rebuild the base backbone described by a manifest's ``extra['base']['rebuild']``."""
    kind = rebuild.get("kind")
    if kind == "scratch":
        cfg = rebuild["config"]
        bb: Backbone = SCimilarityScratch(
            genes,
            rebuild["gene_key_kind"],
            hidden=cfg["hidden"],
            latent=cfg["latent"],
            dropout=cfg["dropout"],
            input_dropout=cfg["input_dropout"],
            seed=cfg["seed"],
            name=rebuild.get("name", "scimilarity-scratch"),
        )
    elif kind == "random":
        from cellfoundry.models.foundation import foundation_class

        fm = foundation_class(rebuild["family"]).from_random(
            genes, variant=rebuild.get("variant"), seed=int(rebuild.get("seed", 0))
        )
        bb = FoundationBackbone(fm, name=rebuild.get("name"))
    elif kind == "checkpoint":
        from cellfoundry.models.foundation import load_foundation

        ckpt = Path(rebuild["checkpoint_dir"])
        if not ckpt.is_dir():
            raise ModelError(
                f"the base checkpoint {ckpt} of this fine-tuned model is not available",
                "restore the checkpoint folder at that path (see manifest.extra.base)",
            )
        for name, digest in (rebuild.get("checkpoint_files") or {}).items():
            f = ckpt / name
            if f.is_file() and sha256_file(f) != digest:
                raise ModelError(
                    f"base checkpoint file {f} changed since fine-tuning (sha256 differs)",
                    "restore the original checkpoint the adapter was trained on",
                )
        bb = FoundationBackbone(load_foundation(ckpt, rebuild["family"]), name=rebuild.get("name"))
    else:
        raise ModelError(
            f"unknown base kind {kind!r} in the manifest",
            "re-create the artifact with `cellfoundry finetune`",
        )
    if folder is not None and (folder / BASE_FILE).is_file():
        load_model(bb.network, str(folder / BASE_FILE), strict=True)
    bb.network.eval()
    return bb


def save_network(module: torch.nn.Module, path: Path) -> None:
    """Weights of a network as safetensors (shared tensors stored once)."""
    from safetensors.torch import save_model

    save_model(module, str(path))


class FinetunedAnnotator(Annotator):
    """An adapted encoder (head / LoRA / full fine-tuning) with a classification head."""

    family: ClassVar[str] = "finetuned"

    def __init__(
        self,
        manifest: Manifest,
        backbone: Backbone,
        head: ClassifierHead,
        peft_model: Any = None,
        folder: Path | None = None,
    ) -> None:
        super().__init__(manifest)
        self.backbone = backbone
        self.head = head
        self.peft_model = peft_model
        self.folder = folder
        self.validation: Any = None  # DataFrame of held-out test predictions (set by finetune)
        self._base_backbone: Backbone | None = None  # the rebuilt base, cached for base_embeddings

    @property
    def method(self) -> str:
        return str(self.manifest.params.get("method"))

    def embed(self, adata: ad.AnnData, *, report: ValidationReport | None = None) -> np.ndarray:
        """Adapted cell embeddings of ``adata`` (evaluation mode)."""
        cells = self.backbone.tokenize(
            adata, seed=int(self.manifest.params.get("seed", 0)), report=report
        )
        return embed_cells(
            self.backbone, cells, int(self.manifest.params.get("eval_batch_size", 128))
        )

    def input_plan(
        self,
        adata: ad.AnnData,
        *,
        report: ValidationReport | None = None,
        min_coverage: float = DEFAULT_MIN_COVERAGE,
    ) -> InputPlan:
        """Matrix choice, gene alignment and coverage of ``adata``; CoverageError below the gate.

        The gate is ``min_coverage`` when the caller sets one; at the library default, a foundation
        base uses its family's own threshold (as the frozen-embedding annotators of that family do).
        """
        bb = self.backbone
        if isinstance(bb, FoundationBackbone):
            mc = (
                family_min_coverage(bb.family, bb.fm)
                if min_coverage == DEFAULT_MIN_COVERAGE
                else float(min_coverage)
            )
            representation: Representation = "counts"
        else:
            mc = float(min_coverage)
            representation = "lognorm"
        return plan_input(
            adata,
            bb.genes,
            representation=representation,
            key_kind="ensembl" if bb.gene_key_kind == "ensembl" else "symbol",
            target_name=f"genes of fine-tuned model '{self.name}'",
            min_coverage=mc,
            report=report,
        )

    def stream_embed(
        self,
        adata: ad.AnnData,
        *,
        report: ValidationReport,
        chunk_size: int = 10_000,
        progress: bool = False,
        empty: np.ndarray | None = None,
    ) -> np.ndarray:
        """Adapted embeddings read ``chunk_size`` cells at a time (backed AnnData too).

        Forward batches keep the positions they have on the whole dataset, so results do not
        depend on ``chunk_size``. ``empty`` (bool, one per cell): set True for the cells whose
        model inputs hold no gene (``Backbone.no_evidence``).
        """
        if chunk_size < 1:
            raise DataError(
                f"chunk_size must be at least 1 (got {chunk_size})", "pass a positive chunk_size"
            )
        seed = int(self.manifest.params.get("seed", 0))
        bs = int(self.manifest.params.get("eval_batch_size", 128))
        n = adata.n_obs
        out = np.empty((n, self.backbone.embedding_dim), dtype=np.float32)
        pending: list[dict[str, np.ndarray]] = []
        done = 0
        bar = tqdm(total=n, unit="cells", desc=f"annotating with {self.name}", disable=not progress)
        # the coverage gate ran on the whole query (input_plan); chunks only tokenize
        extra: dict[str, Any] = (
            {"min_coverage": 0.0} if isinstance(self.backbone, SCimilarityScratch) else {}
        )
        try:
            for start in range(0, n, chunk_size):
                stop = min(start + chunk_size, n)
                if start == 0 and stop == n:
                    part = adata
                elif adata.isbacked:
                    part = adata[start:stop].to_memory()
                else:
                    part = adata[start:stop]
                cells = self.backbone.tokenize(part, seed=seed, report=report, **extra)
                if empty is not None:
                    empty[start:stop] = self.backbone.no_evidence(cells)
                pending.extend(cells)
                full = len(pending) - len(pending) % bs if stop < n else len(pending)
                if full:
                    out[done : done + full] = embed_cells(self.backbone, pending[:full], bs)
                    done += full
                    del pending[:full]
                bar.update(stop - start)
        finally:
            bar.close()
        if done != n:
            raise ModelError(
                f"the encoder produced {done} embeddings for {n} cells",
                "this is a bug in the backbone's tokenizer; please report it",
            )
        return out

    def predict(
        self,
        adata: ad.AnnData,
        *,
        report: ValidationReport | None = None,
        chunk_size: int = 10_000,
        min_coverage: float = DEFAULT_MIN_COVERAGE,
        progress: bool = False,
    ) -> Prediction:
        rep = report or validate(adata)
        plan = self.input_plan(adata, report=rep, min_coverage=min_coverage)
        # a cell with no count on any gene the encoder reads has no evidence: its embedding is
        # the encoder's answer to an empty input, which the head would call confidently
        empty = np.zeros(adata.n_obs, dtype=bool)
        emb = self.stream_embed(
            adata, report=rep, chunk_size=chunk_size, progress=progress, empty=empty
        )
        proba = uniform_where(
            apply_temperature(head_logits(self.head, emb), self.manifest.temperature), empty
        )
        warnings = list(plan.warnings)
        if not self.manifest.extra.get("guards", {}).get("success", True):
            warnings.append(
                "this fine-tuned model FAILED its guards: "
                + "; ".join(self.manifest.extra["guards"]["failures"])
            )
        if self.manifest.extra.get("base", {}).get("random_init"):
            warnings.append("the base model was RANDOMLY INITIALISED (no pretrained weights)")
        pred = Prediction(
            probabilities=proba,
            plan=plan,
            embeddings=emb,
            embedding_key=EMBEDDING_KEY,
            warnings=warnings,
        )
        pred.note_no_evidence(empty, plan.coverage.n_present)
        return pred

    def logits(self, adata: ad.AnnData) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings, uncalibrated head logits)."""
        emb = self.embed(adata)
        return emb, head_logits(self.head, emb)

    def base_embeddings(self, adata: ad.AnnData) -> np.ndarray:
        """Embeddings of the base model before adaptation."""
        if self.method == "head":
            return self.embed(adata)
        if self.peft_model is not None:
            with self.peft_model.disable_adapter():
                return self.embed(adata)
        base = self._base_backbone
        if base is None:
            base = build_base(
                self.manifest.extra["base"]["rebuild"], self.backbone.genes, self.folder
            )
            self._base_backbone = base
        cells = base.tokenize(adata, seed=int(self.manifest.params.get("seed", 0)))
        return embed_cells(base, cells)

    @torch.no_grad()
    def losses(
        self,
        adata: ad.AnnData,
        y: np.ndarray,
        margin: float | None = None,
        chunk_size: int = 2048,
    ) -> dict[str, float]:
        """Losses of the adapted encoder on labelled cells (class indices ``y``; -1 = not a class).

        Computed chunk by chunk (memory flat in the number of cells): ``triplet_loss`` (semi-hard,
        over the whole set, see :func:`triplet_loss_batched`) and one reconstruction measure, named
        by its definition: ``input_reconstruction_mse`` (the decoder's reconstruction of the
        log-normalised input, per gene; families with a decoder) or ``base_embedding_mse`` (the
        distance to the frozen base model's embedding, per dimension; the others). The other is NaN.
        """
        m = float(margin if margin is not None else self.manifest.params.get("margin", 0.1))
        seed = int(self.manifest.params.get("seed", 0))
        embs: list[np.ndarray] = []
        sums = {INPUT_RECONSTRUCTION: 0.0, BASE_EMBEDDING: 0.0}
        counts = {INPUT_RECONSTRUCTION: 0, BASE_EMBEDDING: 0}
        for s in range(0, adata.n_obs, chunk_size):
            part = adata[s : s + chunk_size]
            part = part.to_memory() if part.isbacked else part.copy()
            cells = self.backbone.tokenize(part, seed=seed)
            emb = embed_cells(self.backbone, cells)
            embs.append(emb)
            decoded = True
            for b in range(0, len(cells), 256):
                r = self.backbone.reconstruction_loss(
                    self.backbone.collate(cells[b : b + 256]), torch.from_numpy(emb[b : b + 256])
                )
                if r is None:
                    decoded = False
                    break
                k = len(cells[b : b + 256])
                sums[INPUT_RECONSTRUCTION] += float(r) * k
                counts[INPUT_RECONSTRUCTION] += k
            if not decoded:
                base = self.base_embeddings(part)
                sums[BASE_EMBEDDING] += mse_batched(emb, base) * len(emb)
                counts[BASE_EMBEDDING] += len(emb)
        emb_all = np.concatenate(embs) if embs else np.zeros((0, 1), np.float32)
        keep = np.asarray(y) >= 0
        trip = triplet_loss_batched(emb_all[keep], np.asarray(y)[keep], m)
        out = {k: sums[k] / counts[k] if counts[k] else float("nan") for k in sums}
        return {"triplet_loss": trip} | out

    def save(self, folder: str | Path) -> Path:
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.contiguous() for k, v in self.head.state_dict().items()}, str(path / HEAD_FILE)
        )
        (path / "genes.txt").write_text("\n".join(self.backbone.genes) + "\n")
        if self.method == "lora":
            self.peft_model.save_pretrained(str(path))
        elif self.method == "full":
            save_network(self.backbone.network, path / NETWORK_FILE)
        self._write_extra_files(path)
        self.manifest.write(path)
        self.folder = path
        return path

    def _write_extra_files(self, path: Path) -> None:
        if self.training_cells is not None:
            write_training_cells(path, self.training_cells)
        base_state = getattr(self, "_base_state", None)
        if base_state is not None:
            save_file(base_state, str(path / BASE_FILE))
        if self.validation is not None:
            self.validation.to_csv(path / VALIDATION_FILE, index=False)

    @classmethod
    def load(cls, folder: str | Path, manifest: Manifest) -> FinetunedAnnotator:
        path = Path(folder)
        genes = load_genes(path)
        base = manifest.extra.get("base", {})
        bb = build_base(base["rebuild"], genes, path)
        if state_sha256(bb.network) != base.get("network_sha256"):
            raise ModelError(
                f"the rebuilt base network of {path} does not match the one fine-tuning started from",
                "the base weights changed; restore the original base model / artifact",
            )
        method = manifest.params.get("method")
        peft_model = None
        if method == "lora":
            if not (path / ADAPTER_CONFIG).is_file() or not (path / ADAPTER_WEIGHTS).is_file():
                raise ModelError(
                    f"{path} lacks the LoRA adapter files",
                    f"restore {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}",
                )
            peft_model = load_lora(bb.network, path)
        elif method == "full":
            load_model(bb.network, str(path / NETWORK_FILE), strict=True)
        bb.network.eval()
        for p in bb.network.parameters():
            p.requires_grad = False
        head = ClassifierHead.from_config(manifest.params["head"])
        head.load_state_dict(load_file(str(path / HEAD_FILE)))
        head.eval()
        return cls(manifest, bb, head, peft_model, path)
