"""``SCimilarityModel``: the SCimilarity family behind the ``FoundationModel`` protocol."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from cellfoundry.data.report import ValidationReport
from cellfoundry.errors import ModelError
from cellfoundry.models.foundation import FoundationModel, LoadReport
from cellfoundry.models.scimilarity import checkpoint as ck
from cellfoundry.models.scimilarity import preprocess as pp
from cellfoundry.models.scimilarity.knn import (
    DEFAULT_K,
    KNNResult,
    LabelledReference,
    read_hnswlib_index,
)
from cellfoundry.models.scimilarity.network import V11_HIDDEN, V11_LATENT, Decoder, Encoder
from cellfoundry.stats.labels import no_evidence_rows

# from_random sizes: None -> a small test network; "model_v1.1" -> the published sizes.
RANDOM_VARIANTS: dict[str, tuple[tuple[int, ...], int]] = {
    "tiny": ((32, 32, 32), 16),
    ck.V11_VARIANT: (V11_HIDDEN, V11_LATENT),
}


class SCimilarityModel(FoundationModel):
    """SCimilarity encoder (+ decoder) over a fixed gene order; embeddings are 128-d, unit norm."""

    family: ClassVar[str] = "scimilarity"
    embedding_key: ClassVar[str] = "X_scimilarity"
    gene_key_kind: ClassVar[str] = "symbol"
    # every Linear of the encoder; these are v1.1's (3 hidden layers), instances list their own
    default_lora_targets: ClassVar[list[str]] = [
        "network.0.1",
        "network.1.1",
        "network.2.1",
        "network.3",
    ]

    def __init__(
        self,
        encoder: Encoder,
        gene_order: Sequence[str],
        *,
        decoder: Decoder | None = None,
        checkpoint_dir: Path | None = None,
        variant: str = "custom",
        load_report: LoadReport | None = None,
        int2label: Mapping[int, str] | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        reference: LabelledReference | None = None,
    ) -> None:
        if encoder.n_genes != len(gene_order):
            raise ModelError(
                f"the encoder takes {encoder.n_genes} genes but the gene order lists {len(gene_order)}",
                "build the encoder with n_genes=len(gene_order)",
            )
        self.network = encoder.eval()
        self.decoder = decoder.eval() if decoder is not None else None
        self.gene_order = list(gene_order)
        self.checkpoint_dir = checkpoint_dir if checkpoint_dir is not None else Path("<random>")
        self.variant = variant
        self.load_report = load_report or LoadReport(family=self.family, variant=variant)
        self.int2label = dict(int2label) if int2label is not None else None
        self.hyperparameters = dict(hyperparameters) if hyperparameters else {}
        self._reference = reference
        self._reference_source: tuple[Path, list[tuple[str, str]], int] | None = None
        lin = [n for n, m in encoder.named_modules() if isinstance(m, torch.nn.Linear)]
        self.default_lora_targets = lin  # type: ignore[misc]

    # --- loading ----------------------------------------------------------------------------
    @classmethod
    def detect(cls, folder: Path) -> bool:
        p = Path(folder)
        return all((p / f).is_file() for f in ck.REQUIRED_FILES)

    @classmethod
    def load(cls, folder: str | Path, *, verify: bool = True) -> SCimilarityModel:
        """Strictly load a published model folder (see ``checkpoint.read_checkpoint``)."""
        c = ck.read_checkpoint(folder, verify=verify)
        enc = Encoder(c.n_genes, c.hidden, c.latent, c.dropout, c.input_dropout)
        enc_expected = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
        enc.load_state_dict(ck.fill_optional(c.encoder_state, enc_expected), strict=True)
        dec = None
        if c.decoder_state is not None:
            dec = Decoder(c.n_genes, c.hidden, c.latent, c.dropout)
            dec_expected = {k: tuple(v.shape) for k, v in dec.state_dict().items()}
            dec.load_state_dict(ck.fill_optional(c.decoder_state, dec_expected), strict=True)
        model = cls(
            enc,
            c.gene_order,
            decoder=dec,
            checkpoint_dir=c.folder,
            variant=c.report.variant or "custom",
            load_report=c.report,
            int2label=c.int2label,
            hyperparameters=c.hyperparameters,
        )
        if c.reference_labels is not None and (c.folder / ck.KNN_INDEX_FILE).is_file():
            # read on first use: the published index holds millions of cells
            model._reference_source = (c.folder / ck.KNN_INDEX_FILE, c.reference_labels, c.latent)
            c.report.messages.append(
                f"kNN reference: {len(c.reference_labels)} labelled cells in {ck.KNN_INDEX_FILE} "
                "(read when first used)"
            )
        return model

    @classmethod
    def from_random(
        cls, genes: list[str], *, variant: str | None = None, seed: int = 0
    ) -> SCimilarityModel:
        """Random weights over ``genes``: ``tiny`` (default) or ``model_v1.1`` sizes."""
        name = variant or "tiny"
        if name not in RANDOM_VARIANTS:
            raise ModelError(
                f"unknown SCimilarity variant '{name}'",
                f"choose one of: {', '.join(RANDOM_VARIANTS)}",
            )
        if len(set(genes)) != len(genes) or not genes:
            raise ModelError("the gene list is empty or has repeats", "pass each gene symbol once")
        hidden, latent = RANDOM_VARIANTS[name]
        gen = torch.random.fork_rng(devices=[])
        with gen:
            torch.manual_seed(seed)
            enc = Encoder(len(genes), hidden, latent)
            dec = Decoder(len(genes), hidden, latent)
        report = LoadReport(
            family=cls.family,
            variant=f"random-{name}",
            messages=[f"RANDOM weights (seed {seed}), {name} sizes: not a pretrained model"],
        )
        return cls(enc, genes, decoder=dec, variant=f"random-{name}", load_report=report)

    def save(self, folder: str | Path) -> Path:
        """Write the published layout (encoder/decoder.ckpt, gene_order.tsv, layer_sizes.json, …)."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        sd = self.network.state_dict()
        torch.save({"state_dict": sd}, out / ck.ENCODER_FILE)
        if self.decoder is not None:
            torch.save({"state_dict": self.decoder.state_dict()}, out / ck.DECODER_FILE)
        (out / ck.LAYER_SIZES_FILE).write_text(
            json.dumps({k: list(v.shape) for k, v in sd.items()})
        )
        ck.write_gene_order(out / ck.GENE_ORDER_FILE, self.gene_order)
        ck.write_label_ints(out / ck.LABEL_INTS_FILE, self.int2label or {})
        hyper = {
            **self.hyperparameters,
            "latent_dim": self.network.latent,
            "hidden_dim": self.network.hidden,
        }
        (out / ck.HYPERPARAMETERS_FILE).write_text(json.dumps(hyper))
        return out

    # --- protocol ---------------------------------------------------------------------------
    @property
    def embedding_dim(self) -> int:
        return self.network.latent

    @property
    def genes(self) -> list[str]:
        return list(self.gene_order)

    def embed(
        self,
        adata: ad.AnnData,
        *,
        batch_size: int = 32,
        seed: int = 0,
        progress: bool = False,
        report: ValidationReport | None = None,
        out: Any = None,
        empty: Any = None,
    ) -> Any:
        """log1p-CP10k aligned cells -> encoder (eval mode) -> float32 unit-norm embeddings.

        Rows are read ``max(batch_size, 1024)`` at a time and never densified: the first layer
        sums the weights of each cell's non-zero genes (same result as the dense product).
        ``seed`` is unused: the embedding is deterministic. ``empty``: the cells with no count on
        any aligned gene are marked there (see FoundationModel.embed).
        """
        if batch_size < 1:
            raise ModelError(
                f"batch_size must be at least 1 (got {batch_size})", "pass a positive batch size"
            )
        plan = pp.plan(adata, self.gene_order, report=report)
        if out is None:
            out = np.empty((adata.n_obs, self.embedding_dim), dtype=np.float32)
        was_training = self.network.training
        self.network.eval()
        chunks = pp.iter_lognorm(adata, plan, max(batch_size, pp.DEFAULT_CHUNK))
        bar = tqdm(total=adata.n_obs, disable=not progress, desc="SCimilarity embed", unit="cell")
        try:
            with torch.inference_mode():
                for start, x in chunks:
                    if empty is not None:
                        empty[start : start + x.shape[0]] = no_evidence_rows(x)
                    for s in range(0, x.shape[0], batch_size):
                        rows = x[s : s + batch_size]
                        emb = self._forward_rows(rows)
                        if not np.isfinite(emb).all():  # per block: ``out`` may be a file
                            raise ModelError(
                                "the encoder produced NaN/Inf embeddings",
                                "check the checkpoint weights",
                            )
                        out[start + s : start + s + rows.shape[0]] = emb
                    bar.update(x.shape[0])
        finally:
            bar.close()
            self.network.train(was_training)
        return out

    def _forward_rows(self, rows: sp.csr_matrix) -> np.ndarray:
        """Encoder output for CSR rows (inference): sparse first layer when exact, else dense."""
        if self.network.supports_sparse():
            res = self.network.forward_sparse(
                torch.from_numpy(rows.indptr.astype(np.int64)),
                torch.from_numpy(rows.indices.astype(np.int64)),
                torch.from_numpy(rows.data.astype(np.float32, copy=False)),
            )
        else:
            res = self.network(torch.from_numpy(rows.toarray()))
        return res.numpy()  # type: ignore[no-any-return]

    def tokenize(
        self, adata: ad.AnnData, *, seed: int = 0, report: ValidationReport | None = None
    ) -> list[dict[str, np.ndarray]]:
        """Per cell: the non-zero entries of its aligned log1p-CP10k vector (``indices``, ``values``)."""
        plan = pp.plan(adata, self.gene_order, report=report)
        cells: list[dict[str, np.ndarray]] = []
        for _, x in pp.iter_lognorm(adata, plan):
            for i in range(x.shape[0]):
                lo, hi = x.indptr[i], x.indptr[i + 1]
                cells.append(
                    {"indices": x.indices[lo:hi].astype(np.int32), "values": x.data[lo:hi].copy()}
                )
        return cells

    def no_evidence(self, cells: list[dict[str, np.ndarray]]) -> np.ndarray:
        """True for cells with no non-zero aligned gene (``tokenize`` keeps the non-zero ones)."""
        return np.fromiter((not np.any(c["values"]) for c in cells), dtype=bool, count=len(cells))

    def collate(self, cells: list[dict[str, np.ndarray]]) -> dict[str, Any]:
        """Dense ``x`` (B x n_genes float32), the exact network input of ``embed``."""
        n = len(self.gene_order)
        rows = np.repeat(np.arange(len(cells)), [len(c["indices"]) for c in cells])
        cols = np.concatenate([c["indices"] for c in cells]) if cells else np.zeros(0, np.int32)
        vals = np.concatenate([c["values"] for c in cells]) if cells else np.zeros(0, np.float32)
        x = sp.csr_matrix((vals.astype(np.float32), (rows, cols)), shape=(len(cells), n)).toarray()
        return {"x": torch.from_numpy(x)}

    def forward_embeddings(self, batch: dict[str, Any]) -> torch.Tensor:
        """Unit-norm encoder output with gradients (train/eval mode is the caller's choice)."""
        return self.network(batch["x"])  # type: ignore[no-any-return]

    def reconstruct(self, batch: dict[str, Any]) -> torch.Tensor:
        """Decoder output for a batch (the reconstruction term of SCimilarity's training loss)."""
        if self.decoder is None:
            raise ModelError(
                "this SCimilarity model has no decoder", "load a folder that includes decoder.ckpt"
            )
        return self.decoder(self.network(batch["x"]))  # type: ignore[no-any-return]

    # --- kNN annotation ---------------------------------------------------------------------
    @property
    def reference(self) -> LabelledReference | None:
        """The labelled kNN reference (from ``annotation/`` of the folder, or ``set_reference``)."""
        if self._reference is None and self._reference_source is not None:
            self._reference = _reference_from_index(*self._reference_source)
        return self._reference

    @reference.setter
    def reference(self, value: LabelledReference | None) -> None:
        self._reference = value
        self._reference_source = None

    def set_reference(
        self,
        adata: ad.AnnData,
        label_key: str,
        *,
        study_key: str | None = None,
        batch_size: int = 256,
    ) -> LabelledReference:
        """Embed a labelled AnnData and use it as the kNN reference."""
        if label_key not in adata.obs:
            raise ModelError(
                f"obs has no column '{label_key}'",
                f"choose one of: {', '.join(map(str, adata.obs.columns))}",
            )
        emb = self.embed(adata, batch_size=batch_size)
        studies = adata.obs[study_key].astype(str).tolist() if study_key else None
        ref = LabelledReference(emb, adata.obs[label_key].astype(str).tolist(), studies)
        self.reference = ref
        return ref

    def annotate(
        self,
        adata: ad.AnnData,
        *,
        k: int = DEFAULT_K,
        weighting: bool = False,
        batch_size: int = 256,
        embeddings: np.ndarray | None = None,
    ) -> KNNResult:
        """kNN cell-type hints for ``adata`` against the reference (official statistics included)."""
        ref = self.reference
        if ref is None:
            raise ModelError(
                "no labelled reference is set for kNN annotation",
                "call set_reference(ref_adata, 'cell_type') or load a folder with annotation/",
            )
        emb = embeddings if embeddings is not None else self.embed(adata, batch_size=batch_size)
        return ref.annotate(emb, k, weighting=weighting)


def _reference_from_index(path: Path, labels: list[tuple[str, str]], dim: int) -> LabelledReference:
    data = read_hnswlib_index(path, dim)
    if len(data.labels) != len(labels) or not np.array_equal(data.labels, np.arange(len(labels))):
        raise ModelError(
            f"{path} holds {len(data.labels)} items (ids {data.labels[:3].tolist()}…) but "
            f"reference_labels.tsv has {len(labels)} lines",
            "use annotation/labelled_kNN.bin and reference_labels.tsv from the same release",
        )
    keep = ~data.deleted
    return LabelledReference(
        data.vectors[keep],
        [labels[i][0] for i in np.flatnonzero(keep)],
        [labels[i][1] for i in np.flatnonzero(keep)],
    )
