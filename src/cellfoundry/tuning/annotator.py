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

from cellfoundry.artifacts import Manifest, load_genes, sha256_file
from cellfoundry.data.prepare import DEFAULT_MIN_COVERAGE
from cellfoundry.data.report import ValidationReport
from cellfoundry.errors import ModelError
from cellfoundry.evaluation.calibration import apply_temperature
from cellfoundry.models.base import Annotator, Prediction
from cellfoundry.tuning.backbone import (
    Backbone,
    FoundationBackbone,
    SCimilarityScratch,
    state_sha256,
)
from cellfoundry.tuning.heads import ClassifierHead
from cellfoundry.tuning.loop import embed_cells, head_logits
from cellfoundry.tuning.lora import load_lora
from cellfoundry.tuning.losses import embedding_anchor_loss, triplet_loss

log = logging.getLogger(__name__)

HEAD_FILE = "head.safetensors"
NETWORK_FILE = "network.safetensors"
BASE_FILE = "base_network.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
VALIDATION_FILE = "validation_predictions.csv"
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
        self.validation: Any = None  # DataFrame of validation predictions (set by finetune)

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

    def predict(
        self,
        adata: ad.AnnData,
        *,
        report: ValidationReport | None = None,
        chunk_size: int = 10_000,
        min_coverage: float = DEFAULT_MIN_COVERAGE,
        progress: bool = False,
    ) -> Prediction:
        emb = self.embed(adata, report=report)
        proba = apply_temperature(head_logits(self.head, emb), self.manifest.temperature)
        warnings = (
            []
            if self.manifest.extra.get("guards", {}).get("success", True)
            else [
                "this fine-tuned model FAILED its guards: "
                + "; ".join(self.manifest.extra["guards"]["failures"])
            ]
        )
        if self.manifest.extra.get("base", {}).get("random_init"):
            warnings.append("the base model was RANDOMLY INITIALISED (no pretrained weights)")
        return Prediction(
            probabilities=proba,
            plan=None,
            embeddings=emb,
            embedding_key=EMBEDDING_KEY,
            warnings=warnings,
        )

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
        base = build_base(self.manifest.extra["base"]["rebuild"], self.backbone.genes, self.folder)
        cells = base.tokenize(adata, seed=int(self.manifest.params.get("seed", 0)))
        return embed_cells(base, cells)

    @torch.no_grad()
    def losses(
        self, adata: ad.AnnData, y: np.ndarray, margin: float | None = None
    ) -> dict[str, float]:
        """Triplet and reconstruction loss of the adapted encoder on labelled cells (class indices ``y``)."""
        m = float(margin if margin is not None else self.manifest.params.get("margin", 0.1))
        cells = self.backbone.tokenize(adata, seed=int(self.manifest.params.get("seed", 0)))
        emb = embed_cells(self.backbone, cells)
        keep = np.asarray(y) >= 0
        trip = float(
            triplet_loss(torch.from_numpy(emb[keep]), torch.from_numpy(np.asarray(y)[keep]), m)
        )
        recon_sum, n = 0.0, 0
        for s in range(0, len(cells), 256):
            batch = self.backbone.collate(cells[s : s + 256])
            r = self.backbone.reconstruction_loss(batch, torch.from_numpy(emb[s : s + 256]))
            if r is None:
                break
            recon_sum += float(r) * len(cells[s : s + 256])
            n += len(cells[s : s + 256])
        if n:
            recon = recon_sum / n
        else:
            recon = float(
                embedding_anchor_loss(
                    torch.from_numpy(emb), torch.from_numpy(self.base_embeddings(adata))
                )
            )
        return {"triplet_loss": trip, "reconstruction_loss": recon}

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
