"""Annotators on frozen foundation-model embeddings: cosine kNN and a linear (softmax) head.

Both embed cells with a foundation checkpoint (any family, see ``models.foundation``), then
classify the embeddings. Training follows ``models.fitting``: a stratified held-out split gives
the metrics, the temperature (head) and the Unknown threshold, then the model is refit on all
labelled cells. The artifact stores the base checkpoint's identity (family, variant, path,
registered name, file sha256s), the head weights or the reference embeddings (safetensors) and
the model's input genes; ``annotate()`` reloads that checkpoint and embeds the query.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Any, ClassVar, cast

import anndata as ad
import numpy as np
from sklearn.linear_model import LogisticRegression

from cellfoundry.artifacts import Manifest, load_arrays
from cellfoundry.data.genes import genes_hash
from cellfoundry.data.prepare import DEFAULT_MIN_COVERAGE, InputPlan, iter_features, plan_input
from cellfoundry.data.report import ValidationReport, validate
from cellfoundry.errors import DataError, ModelError
from cellfoundry.models.base import Annotator, Prediction
from cellfoundry.models.baselines.common import write_artifact
from cellfoundry.models.fitting import fit_with_holdout, read_labels
from cellfoundry.models.foundation import FoundationModel, load_foundation
from cellfoundry.stats.calibration import apply_temperature
from cellfoundry.stats.labels import no_evidence_rows, uniform_where

# Gene coverage below which embedding is refused, per family (share of the model's genes present).
# SCimilarity's official aligner needs 5000 of its 28,231 genes; the transformer vocabularies are
# larger than any one dataset's gene set, so a lower share is normal for them.
FAMILY_MIN_COVERAGE: dict[str, float] = {"scimilarity": 0.17, "scgpt": 0.1, "geneformer": 0.1}
FALLBACK_MIN_COVERAGE = 0.1


def family_min_coverage(family: str, model: FoundationModel | None = None) -> float:
    """The family's own threshold (a ``min_coverage`` class attribute) or the table above."""
    own = getattr(type(model), "min_coverage", None) if model is not None else None
    if isinstance(own, int | float):
        return float(own)
    return FAMILY_MIN_COVERAGE.get(family, FALLBACK_MIN_COVERAGE)


class _CheckedRows:
    """Forwards ``out[start:stop] = block`` to a sink, checking shape and finiteness per block."""

    def __init__(self, sink: Any, family: str, dim: int) -> None:
        self.sink, self.family, self.dim = sink, family, dim
        self.rows_written = 0

    def __setitem__(self, rows: slice, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[1] != self.dim:
            raise ModelError(
                f"{self.family} returned a block of shape {block.shape}, expected (n, {self.dim})",
                "this is a bug in the model family; please report it",
            )
        if not np.isfinite(block).all():
            raise ModelError(
                f"{self.family} produced non-finite embeddings",
                "check the checkpoint weights (a corrupt or untrained file?)",
            )
        self.sink[rows] = block
        self.rows_written += block.shape[0]


def embed_cells(
    model: FoundationModel,
    adata: ad.AnnData,
    *,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = False,
    report: ValidationReport | None = None,
    min_coverage: float | None = None,
    out: Any = None,
    device: str | None = None,
    precision: str | None = None,
    max_tokens: int | None = None,
    empty: np.ndarray | None = None,
) -> tuple[Any, InputPlan]:
    """Embeddings (n_cells x dim, float32, input order) after the raw-count and coverage checks.

    ``out``: write them there block by block instead of into a new array (e.g. an
    ``ObsmWriter`` on the output file, so memory stays flat however many cells); returned.
    ``empty`` (bool, one per cell): set True for the cells without evidence, no count on any
    gene the model reads (``FoundationModel.embed``; the family's own alignment, found in the
    same pass). A family that does not report them gets them from the aligned counts.
    ``device`` / ``precision`` (see ``models.accel``) go to families that take them; None keeps
    the family's default (auto: a CUDA GPU when present, else the CPU in float32).
    ``max_tokens``: padded tokens per forward pass (cells x the batch's longest cell) for the
    families that batch by token budget (Geneformer, scGPT); None keeps the family's default;
    a family without a token budget (SCimilarity) refuses it.
    """
    rep = report or validate(adata)
    if rep.chosen["counts"] is None:
        found = ", ".join(f"{m.source}={m.kind}" for m in rep.matrices) or "no matrix"
        raise DataError(
            f"{model.family} embeds raw counts and none were found ({found})",
            "store raw integer counts in layers['counts'] (or .raw / X)",
            code="no_raw_counts",
        )
    mc = family_min_coverage(model.family, model) if min_coverage is None else float(min_coverage)
    plan = plan_input(
        adata,
        model.genes,
        representation="counts",
        key_kind="ensembl" if model.gene_key_kind == "ensembl" else "symbol",
        target_name=f"genes of {model.family} {model.variant}",
        min_coverage=mc,
        report=rep,
    )
    sink = _CheckedRows(
        out if out is not None else np.empty((adata.n_obs, model.embedding_dim), np.float32),
        model.family,
        model.embedding_dim,
    )
    kwargs: dict[str, Any] = {"batch_size": batch_size, "seed": seed, "progress": progress}
    params = inspect.signature(model.embed).parameters
    for name, value in (("device", device), ("precision", precision)):
        if value is None:
            continue
        if name in params:
            kwargs[name] = value
        elif value not in ("auto", "cpu", "fp32"):
            raise ModelError(
                f"{model.family} embeds on the CPU in float32 only ({name} {value!r} asked)",
                f"leave --{name} at auto for {model.family}",
            )
    if max_tokens is not None:
        if "max_tokens" not in params:
            raise ModelError(
                f"{model.family} has no token budget (max_tokens {max_tokens} asked): it reads "
                "cells in row chunks of --batch-size",
                f"leave out --max-tokens for {model.family} (use --batch-size)",
            )
        if isinstance(max_tokens, bool) or int(max_tokens) != max_tokens or max_tokens < 1:
            raise ModelError(
                f"max_tokens must be a positive whole number (got {max_tokens!r})",
                "pass e.g. --max-tokens 16384 (padded tokens per forward pass)",
            )
        kwargs["max_tokens"] = int(max_tokens)
    reports_empty = "empty" in params
    if empty is not None and reports_empty:
        kwargs["empty"] = empty
    if "out" in params:
        model.embed(adata, report=rep, out=sink, **kwargs)
    else:  # a family written before ``out`` existed: one block
        sink[0 : adata.n_obs] = model.embed(adata, report=rep, **kwargs)
    if sink.rows_written != adata.n_obs:
        raise ModelError(
            f"{model.family} wrote {sink.rows_written} embeddings for {adata.n_obs} cells",
            "this is a bug in the model family; please report it",
        )
    if empty is not None and not reports_empty:  # a family that does not mark them
        for start, x in iter_features(adata, plan):
            empty[start : start + x.shape[0]] = no_evidence_rows(x)
    return sink.sink, plan


def embed_dataset(
    data: ad.AnnData | str | Path,
    checkpoint: str | Path,
    *,
    family: str | None = None,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = False,
    min_coverage: float | None = None,
    max_tokens: int | None = None,
) -> tuple[np.ndarray, FoundationModel]:
    """Embeddings of a dataset (an .h5ad path is streamed) with a checkpoint folder or registered
    name. ``max_tokens``: padded tokens per forward pass (Geneformer, scGPT; see ``embed_cells``)."""
    from cellfoundry.data.io import as_anndata
    from cellfoundry.models.zoo import resolve_checkpoint

    folder, _ = resolve_checkpoint(checkpoint)
    model = load_foundation(folder, family, verify=True)
    backed = isinstance(data, str | Path) and str(data).endswith(".h5ad")
    adata = as_anndata(data, backed=backed)
    emb, _plan = embed_cells(
        model,
        adata,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        min_coverage=min_coverage,
        max_tokens=max_tokens,
    )
    return emb, model


# ---------------------------------------------------------------------------------------------
# classifiers on embeddings
# ---------------------------------------------------------------------------------------------


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def cosine_knn_vote(
    ref_unit: np.ndarray,
    ref_y: np.ndarray,
    n_classes: int,
    query: np.ndarray,
    k: int,
    weighting: str = "distance",
    chunk: int = 2048,
) -> np.ndarray:
    """Vote shares of the ``k`` most cosine-similar reference cells (majority or 1/distance weighted)."""
    if weighting not in ("majority", "distance"):
        raise ValueError(f"weighting must be 'majority' or 'distance', not {weighting!r}")
    k = int(min(k, len(ref_unit)))
    q = _unit(query)
    out = np.zeros((len(q), n_classes), dtype=np.float64)
    chunk = max(1, min(chunk, (1 << 25) // max(len(ref_unit), 1)))  # similarity block <= 128 MiB
    for s in range(0, len(q), chunk):
        sims = q[s : s + chunk] @ ref_unit.T
        idx = (
            np.argpartition(-sims, k - 1, axis=1)[:, :k]
            if k < sims.shape[1]
            else np.tile(np.arange(sims.shape[1]), (len(sims), 1))
        )
        top = np.take_along_axis(sims, idx, axis=1)
        dist = np.clip(1.0 - top, 0.0, 2.0)
        w = np.ones_like(dist) if weighting == "majority" else 1.0 / np.maximum(dist, 1e-6)
        rows = np.repeat(np.arange(len(idx)), k) + s
        np.add.at(out, (rows, ref_y[idx].ravel()), w.ravel())
    out /= out.sum(axis=1, keepdims=True)
    return out.astype(np.float32)


def _fit_head(
    x: np.ndarray, y: np.ndarray, n_classes: int, seed: int, c: float, max_iter: int
) -> dict[str, np.ndarray]:
    mean = x.mean(axis=0)
    sd = x.std(axis=0)
    sd[sd < 1e-8] = 1.0
    clf = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    clf.fit(((x - mean) / sd).astype(np.float32), y)
    coef = np.zeros((n_classes, x.shape[1]))
    bias = np.zeros(n_classes)
    if clf.coef_.shape[0] == 1:  # binary: sklearn keeps one row
        coef[clf.classes_[1]], bias[clf.classes_[1]] = clf.coef_[0], clf.intercept_[0]
    else:
        coef[clf.classes_], bias[clf.classes_] = clf.coef_, clf.intercept_
    w = (coef / sd).T  # standardisation folded into the weights
    b = bias - (mean / sd) @ coef.T
    return {
        "W": w.astype(np.float32),
        "b": b.astype(np.float32),
        "mean": mean.astype(np.float32),
        "scale": sd.astype(np.float32),
    }


def _head_logits(state: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32) @ state["W"] + state["b"]


# ---------------------------------------------------------------------------------------------
# the annotators
# ---------------------------------------------------------------------------------------------


def _embedding_sha256(emb: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.sha256()
    for arr in (emb.astype(np.float32), y.astype(np.int64)):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _base_identity(model: FoundationModel, folder: Path, reg: Any) -> dict[str, Any]:
    from cellfoundry.models.zoo import _hash_files, find_entry

    rep = model.load_report
    files, sizes = _hash_files(folder, dict(rep.files))
    zoo = (
        find_entry(reg.zoo_name if reg else None, model.family)
        or find_entry(rep.known_release, model.family)
        or find_entry(model.variant, model.family)
    )
    registered_name = reg.name if reg else None
    return {
        "family": model.family,
        "variant": model.variant,
        "known_release": rep.known_release,
        "zoo_name": zoo.name if zoo else None,
        "path": str(folder),
        "registered_name": registered_name,
        "files": files,
        "sizes": sizes,
        "embedding_key": model.embedding_key,
        "embedding_dim": int(model.embedding_dim),
        "gene_key_kind": model.gene_key_kind,
        "embedding_rule": zoo.embedding_rule
        if zoo
        else f"the official {model.family} embedding rule",
    }


class EmbeddingAnnotator(Annotator):
    """Shared machinery: base-checkpoint handling, embedding, artifact I/O."""

    family: ClassVar[str]
    foundation_family: ClassVar[str]
    method: ClassVar[str]  # "knn" | "head"

    def __init__(self, manifest: Manifest, genes: list[str], state: dict[str, np.ndarray]) -> None:
        super().__init__(manifest)
        self.genes = genes
        self.state = state
        self._foundation: FoundationModel | None = None
        self._checkpoint_override: Path | None = None

    # --- base checkpoint -------------------------------------------------------------------
    @property
    def base(self) -> dict[str, Any]:
        return dict(self.manifest.extra.get("base_checkpoint", {}))

    def use_checkpoint(self, checkpoint: str | Path) -> None:
        """Load the base model from ``checkpoint`` (folder or registered name) instead of the stored path."""
        from cellfoundry.models.zoo import resolve_checkpoint

        self._checkpoint_override, _ = resolve_checkpoint(checkpoint)
        self._foundation = None

    def _base_folder(self) -> Path:
        from cellfoundry.models.zoo import get_registered

        if self._checkpoint_override is not None:
            return self._checkpoint_override
        base = self.base
        p = Path(base.get("path") or "")
        if base.get("path") and p.is_dir():
            return p
        name = base.get("registered_name") or base.get("zoo_name")
        reg = get_registered(name) if name else None
        if reg is not None and Path(reg.path).is_dir():
            return Path(reg.path)
        raise ModelError(
            f"the base checkpoint of model '{self.name}' ({base.get('family')} {base.get('variant')}) is not at "
            f"{base.get('path')} and is not registered" + (f" as '{name}'" if name else ""),
            "register it: cellfoundry models import DIR"
            + (f" --name {name}" if name else "")
            + " (or call model.use_checkpoint(DIR))",
        )

    def foundation(self) -> FoundationModel:
        """The base foundation model (loaded once, strictly, and checked against the manifest)."""
        if self._foundation is not None:
            return self._foundation
        folder = self._base_folder()
        fm = load_foundation(folder, self.foundation_family, verify=True)
        base = self.base
        want: dict[str, str] = base.get("files", {})
        have = dict(fm.load_report.files)
        for rel, digest in want.items():
            if rel not in have:
                f = folder / rel
                if not f.is_file():
                    raise ModelError(
                        f"base checkpoint file {rel} is missing from {folder}",
                        "restore the checkpoint folder the model was trained with",
                    )
                from cellfoundry.artifacts import sha256_file

                have[rel] = sha256_file(f)
            if have[rel] != digest:
                raise ModelError(
                    f"base checkpoint file {rel} in {folder} differs from the one model '{self.name}' was trained with "
                    f"(sha256 {have[rel][:12]}… vs {digest[:12]}…)",
                    "use the original checkpoint, or retrain the model on this one",
                )
        if fm.embedding_dim != int(base.get("embedding_dim", fm.embedding_dim)):
            raise ModelError(
                f"base checkpoint embeds to {fm.embedding_dim} dims, the model expects "
                f"{base.get('embedding_dim')}",
                "use the checkpoint the model was trained with",
            )
        self._foundation = fm
        return fm

    # --- prediction ------------------------------------------------------------------------
    def proba_from_embeddings(self, emb: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities for a block of embeddings."""
        raise NotImplementedError

    def predict(
        self,
        adata: ad.AnnData,
        *,
        report: ValidationReport | None = None,
        chunk_size: int = 10_000,
        min_coverage: float = DEFAULT_MIN_COVERAGE,
        progress: bool = False,
    ) -> Prediction:
        fm = self.foundation()
        # the library-wide default is tuned for baselines; use the family's own unless the caller set one
        mc = None if min_coverage == DEFAULT_MIN_COVERAGE else min_coverage
        params = self.manifest.params
        # cells with no count on any gene the model reads: their embedding is the network's
        # answer to an empty input (Geneformer's and scGPT's <cls> state of no genes, SCimilarity's
        # encoding of a zero vector), a constant that the classifier would call confidently
        empty = np.zeros(adata.n_obs, dtype=bool)
        emb, plan = embed_cells(
            fm,
            adata,
            batch_size=int(params.get("batch_size", 32)),
            seed=int(params.get("seed", 0)),
            progress=progress,
            report=report,
            min_coverage=mc,
            empty=empty,
        )
        proba = np.empty((adata.n_obs, len(self.classes)), dtype=np.float32)
        for s in range(0, adata.n_obs, chunk_size):
            proba[s : s + chunk_size] = uniform_where(
                self.proba_from_embeddings(emb[s : s + chunk_size]), empty[s : s + chunk_size]
            )
        pred = Prediction(
            probabilities=proba,
            plan=plan,
            embeddings=emb,
            embedding_key=fm.embedding_key,
            warnings=list(plan.warnings),
        )
        pred.note_no_evidence(empty, plan.coverage.n_present)
        return pred

    # --- training --------------------------------------------------------------------------
    @classmethod
    def _train(
        cls,
        adata: ad.AnnData,
        label_key: str,
        *,
        checkpoint: str | Path | None,
        name: str | None,
        params: dict[str, Any],
        fit: Any,
        score: Any,
        seed: int,
        holdout_fraction: float,
        refit: bool,
        batch_size: int,
        progress: bool,
    ) -> EmbeddingAnnotator:
        from cellfoundry.models.zoo import resolve_checkpoint

        if checkpoint is None:
            raise ModelError(
                f"model '{cls.family}' needs a {cls.foundation_family} checkpoint",
                f"pass checkpoint=DIR (or a registered name; see `cellfoundry models`), e.g. "
                f"cellfoundry train REF.h5ad --model {cls.family} --checkpoint DIR --out MODEL",
            )
        folder, reg = resolve_checkpoint(checkpoint)
        fm = load_foundation(folder, cls.foundation_family, verify=True)
        labels = read_labels(adata, label_key)
        ref = adata if labels.keep.all() else adata[labels.keep]
        if ref.is_view and not ref.isbacked:
            ref = ref.copy()
        emb, plan = embed_cells(fm, ref, batch_size=batch_size, seed=seed, progress=progress)
        n_classes = len(labels.classes)
        out = fit_with_holdout(
            cast(Any, emb),
            labels.y,
            labels.classes,
            fit,
            lambda st, x: score(st, x, n_classes),
            seed=seed,
            holdout_fraction=holdout_fraction,
            refit=refit,
        )
        counts = np.bincount(labels.y, minlength=len(labels.classes))
        base = _base_identity(fm, folder, reg)
        manifest = Manifest(
            family=cls.family,
            name=name or cls.family,
            classes=labels.classes,
            genes_sha256=genes_hash(fm.genes),
            n_genes=len(fm.genes),
            gene_key_kind=fm.gene_key_kind,
            preprocessing={
                "representation": "counts",
                "embedding": base["embedding_rule"],
                "embedding_key": fm.embedding_key,
                "classifier": cls.method,
            },
            unknown_threshold=out.threshold,
            temperature=out.temperature,
            params=params | {"seed": seed, "batch_size": batch_size},
            metrics=out.metrics,
            training={
                "label_key": label_key,
                "n_cells": len(labels.y),
                "n_cells_in_file": int(adata.n_obs),
                "dropped": labels.dropped,
                "matrix": plan.source,
                "class_counts": {c: int(n) for c, n in zip(labels.classes, counts, strict=True)},
                "data_sha256": _embedding_sha256(emb, labels.y),
                "holdout_fraction": holdout_fraction,
                "refit_on_all": refit,
                "gene_coverage": plan.coverage.fraction_present,
            },
            extra={"base_checkpoint": base, "load_report": fm.load_report.to_dict()},
        )
        model = cls(manifest, list(fm.genes), out.state)
        model._foundation = fm
        model.holdout = out.holdout
        return model

    def save(self, folder: str | Path) -> Path:
        return write_artifact(folder, self.manifest, self.state, self.genes)

    @classmethod
    def load(cls, folder: str | Path, manifest: Manifest) -> EmbeddingAnnotator:
        from cellfoundry.artifacts import load_genes

        return cls(manifest, load_genes(Path(folder)), load_arrays(Path(folder)))

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        base = self.base
        d["base_checkpoint"] = {
            k: base.get(k) for k in ("family", "variant", "zoo_name", "registered_name", "path")
        }
        return d


class EmbeddingKNNAnnotator(EmbeddingAnnotator):
    """Cosine kNN on foundation-model embeddings against the labelled reference's embeddings."""

    method: ClassVar[str] = "knn"

    def proba_from_embeddings(self, emb: np.ndarray) -> np.ndarray:
        p = self.manifest.params
        return cosine_knn_vote(
            self.state["ref_embedding"],
            self.state["ref_labels"],
            len(self.classes),
            emb,
            int(p.get("k", 15)),
            str(p.get("weighting", "distance")),
        )

    @classmethod
    def train(
        cls,
        adata: ad.AnnData,
        label_key: str,
        *,
        checkpoint: str | Path | None = None,
        name: str | None = None,
        k: int = 15,
        weighting: str = "distance",
        seed: int = 0,
        holdout_fraction: float = 0.2,
        refit: bool = True,
        batch_size: int = 32,
        progress: bool = False,
        n_features: int
        | None = None,  # accepted for CLI symmetry; embeddings use the model's genes
    ) -> EmbeddingAnnotator:
        """Embed the reference with ``checkpoint`` and keep its embeddings as the kNN index."""
        if k < 1:
            raise DataError(
                f"k must be at least 1 (got {k})", "pass k=15 or another positive number"
            )
        if weighting not in ("majority", "distance"):
            raise DataError(f"unknown kNN weighting '{weighting}'", "use 'majority' or 'distance'")

        def fit(x: np.ndarray, y: np.ndarray, n: int, s: int) -> dict[str, np.ndarray]:
            return {"ref_embedding": _unit(x), "ref_labels": np.asarray(y, dtype=np.int64)}

        def score(st: dict[str, np.ndarray], x: np.ndarray, n: int) -> tuple[np.ndarray, bool]:
            return cosine_knn_vote(st["ref_embedding"], st["ref_labels"], n, x, k, weighting), False

        return cls._train(
            adata,
            label_key,
            checkpoint=checkpoint,
            name=name,
            params={"k": k, "weighting": weighting, "metric": "cosine"},
            fit=fit,
            score=score,
            seed=seed,
            holdout_fraction=holdout_fraction,
            refit=refit,
            batch_size=batch_size,
            progress=progress,
        )


class EmbeddingHeadAnnotator(EmbeddingAnnotator):
    """A linear softmax head (multinomial logistic regression) on frozen, standardised embeddings."""

    method: ClassVar[str] = "head"

    def proba_from_embeddings(self, emb: np.ndarray) -> np.ndarray:
        return apply_temperature(_head_logits(self.state, emb), self.manifest.temperature)

    @classmethod
    def train(
        cls,
        adata: ad.AnnData,
        label_key: str,
        *,
        checkpoint: str | Path | None = None,
        name: str | None = None,
        C: float = 1.0,
        max_iter: int = 1000,
        seed: int = 0,
        holdout_fraction: float = 0.2,
        refit: bool = True,
        batch_size: int = 32,
        progress: bool = False,
        n_features: int
        | None = None,  # accepted for CLI symmetry; embeddings use the model's genes
    ) -> EmbeddingAnnotator:
        """Embed the reference with ``checkpoint`` and fit the head on the frozen embeddings."""

        def fit(x: np.ndarray, y: np.ndarray, n: int, s: int) -> dict[str, np.ndarray]:
            return _fit_head(np.asarray(x), y, n, s, C, max_iter)

        def score(st: dict[str, np.ndarray], x: np.ndarray, n: int) -> tuple[np.ndarray, bool]:
            return _head_logits(st, x), True

        return cls._train(
            adata,
            label_key,
            checkpoint=checkpoint,
            name=name,
            params={"C": C, "max_iter": max_iter},
            fit=fit,
            score=score,
            seed=seed,
            holdout_fraction=holdout_fraction,
            refit=refit,
            batch_size=batch_size,
            progress=progress,
        )


class GeneformerKNN(EmbeddingKNNAnnotator):
    family: ClassVar[str] = "geneformer-knn"
    foundation_family: ClassVar[str] = "geneformer"


class GeneformerHead(EmbeddingHeadAnnotator):
    family: ClassVar[str] = "geneformer-head"
    foundation_family: ClassVar[str] = "geneformer"


class ScGPTKNN(EmbeddingKNNAnnotator):
    family: ClassVar[str] = "scgpt-knn"
    foundation_family: ClassVar[str] = "scgpt"


class ScGPTHead(EmbeddingHeadAnnotator):
    family: ClassVar[str] = "scgpt-head"
    foundation_family: ClassVar[str] = "scgpt"


class SCimilarityKNN(EmbeddingKNNAnnotator):
    family: ClassVar[str] = "scimilarity-knn"
    foundation_family: ClassVar[str] = "scimilarity"


class SCimilarityHead(EmbeddingHeadAnnotator):
    family: ClassVar[str] = "scimilarity-head"
    foundation_family: ClassVar[str] = "scimilarity"


ANNOTATORS: dict[str, type[EmbeddingAnnotator]] = {
    c.family: c
    for c in (GeneformerKNN, GeneformerHead, ScGPTKNN, ScGPTHead, SCimilarityKNN, SCimilarityHead)
}
