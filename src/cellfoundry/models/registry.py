"""The registry of model families and the loader of artifact folders.

A family is registered with the import path of its Annotator class, so importing the registry
stays cheap (torch and transformers load only when a foundation model is used).
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cellfoundry.artifacts import MANIFEST, Manifest
from cellfoundry.artifacts.heldout import read_heldout
from cellfoundry.errors import ModelError
from cellfoundry.models.base import Annotator


@dataclass(frozen=True)
class FamilyInfo:
    """What a family is and what it needs from the user's data."""

    name: str
    kind: str  # "baseline" | "foundation" | "head"
    description: str
    needs: str
    annotator: str  # "module:Class" of its Annotator (artifact loader / trainer)
    trainable: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_FAMILIES: dict[str, FamilyInfo] = {}


def register_family(info: FamilyInfo) -> None:
    _FAMILIES[info.name] = info


def families() -> list[FamilyInfo]:
    return list(_FAMILIES.values())


def family_info(name: str) -> FamilyInfo:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise ModelError(
            f"unknown model family '{name}'", f"choose one of: {', '.join(sorted(_FAMILIES))}"
        ) from None


def annotator_class(family: str) -> type[Annotator]:
    mod, _, cls = family_info(family).annotator.partition(":")
    return getattr(importlib.import_module(mod), cls)  # type: ignore[no-any-return]


def load_model(spec: str | Path | Annotator) -> Annotator:
    """An Annotator from an instance or an artifact folder (manifest.json + weights)."""
    if isinstance(spec, Annotator):
        return spec
    folder = Path(spec)
    if not (folder / MANIFEST).is_file():
        if str(spec) in _FAMILIES:
            raise ModelError(
                f"'{spec}' is a model family, not a trained model",
                f"train one first: cellfoundry train REF.h5ad --label-key cell_type --model {spec} --out DIR",
            )
        raise ModelError(
            f"{spec} is not a cellfoundry model folder (no {MANIFEST})",
            "pass the --out folder of `cellfoundry train`",
        )
    manifest = Manifest.read(folder)
    annotator = annotator_class(manifest.family).load(folder, manifest)
    annotator.heldout_predictions = read_heldout(
        folder, len(manifest.classes), manifest.training.get("heldout_predictions")
    )
    return annotator


register_family(
    FamilyInfo(
        name="logreg",
        kind="baseline",
        description="Logistic regression on standardised log1p-CP10k expression (CellTypist-style), top-variance genes.",
        needs="raw counts or log-normalised values; gene symbols or Ensembl IDs (mapped to the reference's kind)",
        annotator="cellfoundry.models.baselines.logreg:LogRegAnnotator",
    )
)
register_family(
    FamilyInfo(
        name="knn",
        kind="baseline",
        description="k-nearest neighbours (distance-weighted vote) on a PCA of standardised log1p-CP10k expression.",
        needs="raw counts or log-normalised values; gene symbols or Ensembl IDs (mapped to the reference's kind)",
        annotator="cellfoundry.models.baselines.knn:KNNAnnotator",
    )
)

# --- annotators on frozen foundation-model embeddings (models/embedding_annotators.py) ---------
_FM_NEEDS = {
    "geneformer": "raw counts; Ensembl IDs (symbols are mapped); a Geneformer checkpoint",
    "scgpt": "raw counts; gene symbols (Ensembl IDs are mapped); an scGPT checkpoint",
    "scimilarity": "raw counts; gene symbols (Ensembl IDs are mapped); an SCimilarity checkpoint",
}
_FM_CLASSES = {"geneformer": "Geneformer", "scgpt": "ScGPT", "scimilarity": "SCimilarity"}
for _fm, _prefix in _FM_CLASSES.items():
    register_family(
        FamilyInfo(
            name=f"{_fm}-knn",
            kind="head",
            description=f"Cosine kNN (vote shares) on frozen {_prefix} embeddings of a reference.",
            needs=_FM_NEEDS[_fm] + " (--checkpoint DIR or a registered name)",
            annotator=f"cellfoundry.models.embedding_annotators:{_prefix}KNN",
            extra={"foundation": _fm, "needs_checkpoint": True},
        )
    )
    register_family(
        FamilyInfo(
            name=f"{_fm}-head",
            kind="head",
            description=f"Linear softmax head (calibrated) on frozen {_prefix} embeddings.",
            needs=_FM_NEEDS[_fm] + " (--checkpoint DIR or a registered name)",
            annotator=f"cellfoundry.models.embedding_annotators:{_prefix}Head",
            extra={"foundation": _fm, "needs_checkpoint": True},
        )
    )

# --- fine-tuned encoders (cellfoundry.tuning, `cellfoundry finetune`) ---------------------------
register_family(
    FamilyInfo(
        name="finetuned",
        kind="foundation",
        description="A foundation encoder adapted to a labelled reference (head, LoRA via peft, or full).",
        needs="what its base family needs (see the artifact's manifest); create with `cellfoundry finetune`",
        annotator="cellfoundry.tuning.annotator:FinetunedAnnotator",
        trainable=False,
    )
)
