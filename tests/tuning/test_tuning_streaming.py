"""Fine-tuned models annotate in a streaming way: chunked, backed .h5ad, coverage gate and report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pytest

import cellfoundry
from cellfoundry.errors import CoverageError, DataError
from cellfoundry.models.base import Annotator
from cellfoundry.tuning.annotator import FinetunedAnnotator
from cellfoundry.tuning.finetune import finetune
from tests.conftest import make_counts_adata
from tests.tuning.helpers import real_gene_adata

SMALL: dict[str, Any] = {
    "scratch_hidden": [16, 16],
    "scratch_latent": 8,
    "batch_size": 32,
    "progress": False,
}
N_GENES = 400


@pytest.fixture(autouse=True)
def _empty_zoo(tmp_path_factory, monkeypatch) -> None:
    """No registered checkpoints: family names start from random weights."""
    monkeypatch.setenv("CELLFOUNDRY_HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="module")
def adata() -> ad.AnnData:
    return make_counts_adata(150, N_GENES, 3, seed=5)


@pytest.fixture(scope="module")
def models(adata, tmp_path_factory) -> dict[str, tuple[Path, ad.AnnData]]:
    """Artifact folders of several bases (and the data each one was trained on)."""
    from cellfoundry.models.scimilarity import SCimilarityModel

    mp = pytest.MonkeyPatch()
    mp.setenv("CELLFOUNDRY_HOME", str(tmp_path_factory.mktemp("home_models")))
    root = tmp_path_factory.mktemp("stream")
    out: dict[str, tuple[Path, ad.AnnData]] = {}
    try:
        finetune(adata, "cell_type", "scimilarity", "lora", epochs=2, out=root / "scratch", **SMALL)
        out["scratch"] = (root / "scratch", adata)
        fm = SCimilarityModel.from_random(list(adata.var_names), variant="tiny", seed=1)
        fm.save(root / "ckpt")
        finetune(adata, "cell_type", root / "ckpt", "lora", epochs=2, out=root / "sc", **SMALL)
        out["scimilarity-ckpt"] = (root / "sc", adata)
        small = adata[:, :120].copy()
        finetune(small, "cell_type", "scgpt", "head", epochs=1, out=root / "scgpt", **SMALL)
        out["scgpt"] = (root / "scgpt", small)
        gf = real_gene_adata(90, 150, 3, seed=2)
        finetune(gf, "cell_type", "geneformer", "lora", epochs=1, out=root / "gf", **SMALL)
        out["geneformer"] = (root / "gf", gf)
    finally:
        mp.undo()
    return out


def _spy_tokenize(ann: Annotator, monkeypatch) -> list[int]:
    """Record how many cells each tokenize call sees (the real tokenizer still runs)."""
    assert isinstance(ann, FinetunedAnnotator)
    sizes: list[int] = []
    real = ann.backbone.tokenize

    def spy(part: ad.AnnData, **kw: Any) -> list[dict[str, np.ndarray]]:
        sizes.append(part.n_obs)
        return real(part, **kw)

    monkeypatch.setattr(ann.backbone, "tokenize", spy)
    return sizes


@pytest.mark.parametrize("base", ["scratch", "scimilarity-ckpt", "scgpt", "geneformer"])
def test_small_chunks_equal_one_chunk_and_stream(models, base, monkeypatch) -> None:
    folder, data = models[base]
    whole = cellfoundry.annotate(data, folder)
    ann = cellfoundry.load_model(folder)
    assert isinstance(ann, FinetunedAnnotator)
    sizes = _spy_tokenize(ann, monkeypatch)
    chunked = cellfoundry.annotate(data, ann, chunk_size=7)
    assert max(sizes) <= 7 and sum(sizes) == data.n_obs  # never more than a chunk at once
    assert np.array_equal(chunked.probabilities, whole.probabilities)
    assert chunked.embeddings is not None and whole.embeddings is not None
    assert chunked.embeddings.shape == (data.n_obs, ann.backbone.embedding_dim)
    assert np.array_equal(chunked.embeddings, whole.embeddings)
    assert list(chunked.labels) == list(whole.labels)
    big = cellfoundry.annotate(data, folder, chunk_size=10_000)
    assert np.array_equal(big.probabilities, whole.probabilities)


@pytest.mark.parametrize("base", ["scratch", "scimilarity-ckpt", "geneformer"])
def test_backed_h5ad_equals_in_memory(models, base, tmp_path, monkeypatch) -> None:
    folder, data = models[base]
    path = tmp_path / "query.h5ad"
    data.write_h5ad(path)
    mem = cellfoundry.annotate(data, folder)
    ann = cellfoundry.load_model(folder)
    sizes = _spy_tokenize(ann, monkeypatch)
    backed = cellfoundry.annotate(path, ann, chunk_size=13)
    assert backed.adata is not None and backed.adata.isbacked
    assert max(sizes) <= 13
    assert np.array_equal(backed.probabilities, mem.probabilities)
    assert backed.embeddings is not None and mem.embeddings is not None
    assert np.array_equal(backed.embeddings, mem.embeddings)
    assert list(backed.obs_names) == list(data.obs_names)
    # the whole backed file in one chunk gives the same numbers too
    one = cellfoundry.annotate(path, folder)
    assert np.array_equal(one.probabilities, mem.probabilities)


def _partial(data: ad.AnnData, keep: int) -> ad.AnnData:
    """The same cells with only the first ``keep`` genes recognisable (others renamed)."""
    q = data.copy()
    q.var_names = [n if i < keep else f"NOTAGENE{i}" for i, n in enumerate(q.var_names)]
    return q


def test_coverage_reported(models) -> None:
    folder, data = models["scimilarity-ckpt"]
    full = cellfoundry.annotate(data, folder, chunk_size=50)
    assert full.coverage is not None
    assert full.coverage.n_target == N_GENES and full.coverage.n_present == N_GENES
    assert full.coverage.fraction_present == 1.0
    assert isinstance(full.gene_mapping, str) and full.gene_mapping
    assert full.summary()["gene_coverage"] == 1.0
    part = cellfoundry.annotate(_partial(data, 300), folder, chunk_size=50)
    assert part.coverage is not None
    assert part.coverage.n_present == 300
    assert part.coverage.fraction_present == pytest.approx(300 / N_GENES)
    assert part.summary()["gene_coverage"] == pytest.approx(0.75)
    # scratch base: its genes are the reference's genes
    sfolder, sdata = models["scratch"]
    res = cellfoundry.annotate(sdata, sfolder)
    ann = cellfoundry.load_model(sfolder)
    assert isinstance(ann, FinetunedAnnotator)
    assert res.coverage is not None and res.coverage.n_target == len(ann.backbone.genes)
    assert res.coverage.fraction_present == 1.0


def test_low_coverage_refused_like_the_family(models, adata, tmp_path) -> None:
    q = _partial(adata, 100)  # 25% of the model's genes
    # a scratch base follows the library default (30%): refused, accepted when lowered
    sfolder, _ = models["scratch"]
    with pytest.raises(CoverageError) as e:
        cellfoundry.annotate(q, sfolder)
    assert "25.0%" in e.value.message and "min_coverage" in str(e.value.hint)
    ok = cellfoundry.annotate(q, sfolder, min_coverage=0.2)
    assert ok.coverage is not None and ok.coverage.fraction_present == pytest.approx(0.25)
    # a SCimilarity checkpoint base follows SCimilarity's own threshold, as the frozen annotators do
    folder, _ = models["scimilarity-ckpt"]
    frozen = cellfoundry.train(
        adata, "cell_type", "scimilarity-knn", checkpoint=folder.parent / "ckpt", k=5
    )
    for ann in (frozen, cellfoundry.load_model(folder)):
        res = cellfoundry.annotate(q, ann)  # 25% > 17%: accepted
        assert res.coverage is not None and res.coverage.n_present == 100
        with pytest.raises(CoverageError):
            cellfoundry.annotate(q, ann, min_coverage=0.4)  # an explicit gate is honoured
        with pytest.raises(CoverageError):
            cellfoundry.annotate(_partial(adata, 40), ann)  # 10%: refused


def test_bad_chunk_size_gets_clear_error(models) -> None:
    folder, data = models["scratch"]
    with pytest.raises(DataError, match="chunk_size"):
        cellfoundry.annotate(data, folder, chunk_size=0)
