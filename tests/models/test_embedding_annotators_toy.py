"""kNN and linear-head annotators on frozen embeddings (stand-in family): train → save → load → annotate."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from safetensors.numpy import load_file

import cellfoundry
from cellfoundry.artifacts import sha256_file
from cellfoundry.cli import main
from cellfoundry.errors import ModelError
from cellfoundry.models import zoo
from cellfoundry.models.embedding_annotators import ANNOTATORS, cosine_knn_vote
from cellfoundry.models.registry import families, load_model
from tests.conftest import make_counts_adata
from tests.models.toy_foundation import TOYS, ToySCimilarity, install_toy_families


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_toy_families(monkeypatch)
    monkeypatch.setenv("CELLFOUNDRY_HOME", str(tmp_path / "home"))


@pytest.fixture
def reference() -> ad.AnnData:
    return make_counts_adata(n_cells=240, n_genes=90, n_types=3, seed=4)


def _ckpt(tmp_path: Path, a: ad.AnnData, family: str = "scimilarity", dim: int = 16) -> Path:
    return TOYS[family].write(tmp_path / f"ckpt_{family}", list(a.var_names), dim=dim, seed=7)


def test_every_family_has_a_knn_and_a_head() -> None:
    names = {f.name: f for f in families()}
    for fam in ("geneformer", "scgpt", "scimilarity"):
        for method in ("knn", "head"):
            info = names[f"{fam}-{method}"]
            assert info.kind == "head" and info.extra["foundation"] == fam
            assert ANNOTATORS[info.name].foundation_family == fam


@pytest.mark.parametrize(
    "model", ["scimilarity-knn", "scimilarity-head", "scgpt-knn", "geneformer-head"]
)
def test_train_save_load_reproduces_held_out_predictions(
    model: str, reference: ad.AnnData, tmp_path: Path
) -> None:
    fam = model.split("-")[0]
    a = reference
    if fam == "geneformer":  # an Ensembl-keyed family gets Ensembl-named data
        a = make_counts_adata(n_cells=240, n_genes=90, n_types=3, seed=4, symbols=False)
    ckpt = _ckpt(tmp_path, a, fam)
    out = tmp_path / "model"
    trained = cellfoundry.train(
        a, "cell_type", model, out=out, checkpoint=ckpt, refit=False, seed=1
    )
    assert trained.holdout is not None
    m = trained.manifest
    assert m.family == model and m.metrics["accuracy"] > 0.8  # the toy types are well separated
    base = m.extra["base_checkpoint"]
    assert (
        base["family"] == fam
        and base["variant"] == "toy-v1"
        and base["path"] == str(ckpt.resolve())
    )
    for name in ("projection.safetensors", f"toy_{fam}.json"):
        assert base["files"][name] == sha256_file(ckpt / name)
    weights = load_file(str(out / "weights.safetensors"))
    if model.endswith("knn"):
        assert weights["ref_embedding"].shape == (int(0.8 * a.n_obs), 16)
        np.testing.assert_allclose(np.linalg.norm(weights["ref_embedding"], axis=1), 1.0, rtol=1e-5)
    else:
        assert weights["W"].shape == (16, 3) and m.temperature > 0

    loaded = load_model(out)
    assert type(loaded) is ANNOTATORS[model]
    held = a[trained.holdout["index"]].copy()
    res = cellfoundry.annotate(held, out)
    np.testing.assert_allclose(res.probabilities, trained.holdout["proba"], rtol=1e-5, atol=1e-6)
    assert res.embedding_key == f"X_{fam}" and res.embeddings is not None
    np.testing.assert_allclose(res.embeddings, TOYS[fam].load(ckpt).embed(held), rtol=1e-6)
    annotated = res.to_adata()
    assert annotated.obsm[f"X_{fam}"].shape == (held.n_obs, 16)
    assert list(annotated.obs["predicted_cell_type"].cat.categories) == m.classes


def test_refit_uses_every_labelled_cell(reference: ad.AnnData, tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path, reference)
    reference.obs["cell_type"] = reference.obs["cell_type"].astype(object)
    reference.obs.iloc[:10, 0] = None  # unlabelled cells are left out
    model = cellfoundry.train(reference, "cell_type", "scimilarity-knn", checkpoint=ckpt, k=5)
    assert model.state["ref_embedding"].shape[0] == reference.n_obs - 10
    assert model.manifest.training["dropped"] == {"unlabelled": 10}
    # each reference cell is its own nearest neighbour: annotating the reference recovers its labels
    res = cellfoundry.annotate(reference[10:].copy(), model)
    assert (res.labels == reference.obs["cell_type"].iloc[10:].astype(str).to_numpy()).mean() > 0.95


def test_cosine_knn_vote_majority_and_weighted() -> None:
    ref = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.05, 1]], dtype=np.float32)
    y = np.array([0, 0, 1, 1, 1])
    unit = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    q = np.array([[1.0, 0.02], [0.2, 1.0]], dtype=np.float32)
    maj = cosine_knn_vote(unit, y, 2, q, k=3, weighting="majority")
    np.testing.assert_allclose(maj, [[2 / 3, 1 / 3], [0, 1]], atol=1e-6)
    w = cosine_knn_vote(unit, y, 2, q, k=3, weighting="distance")
    assert w[0, 0] > 0.99  # the two near-identical neighbours dominate
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
    # k larger than the reference uses every cell
    np.testing.assert_allclose(
        cosine_knn_vote(unit, y, 2, q, k=50, weighting="majority"), [[0.4, 0.6]] * 2
    )


def test_registered_name_and_moved_checkpoint(reference: ad.AnnData, tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path, reference)
    zoo.import_checkpoint(ckpt, name="toy-base", copy=True)
    out = tmp_path / "model"
    cellfoundry.train(reference, "cell_type", "scimilarity-head", checkpoint="toy-base", out=out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["extra"]["base_checkpoint"]["registered_name"] == "toy-base"
    first = cellfoundry.annotate(reference, out).probabilities
    # the stored path disappears: the registered name still finds the checkpoint
    copy = Path(manifest["extra"]["base_checkpoint"]["path"])
    moved = tmp_path / "moved"
    copy.rename(moved)
    with pytest.raises(ModelError, match=r"no longer exists|not at"):
        cellfoundry.annotate(reference, out)
    zoo.import_checkpoint(moved, name="toy-base", overwrite=True)
    np.testing.assert_allclose(cellfoundry.annotate(reference, out).probabilities, first, rtol=1e-6)


def test_a_changed_base_checkpoint_is_refused(reference: ad.AnnData, tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path, reference)
    out = tmp_path / "model"
    cellfoundry.train(reference, "cell_type", "scimilarity-knn", checkpoint=ckpt, out=out)
    ToySCimilarity.write(
        ckpt, list(reference.var_names), dim=16, seed=99
    )  # same layout, other weights
    with pytest.raises(ModelError, match="differs from the one model") as exc:
        cellfoundry.annotate(reference, out)
    assert "retrain" in (exc.value.hint or "")
    # an explicit override to the right weights works again
    good = _ckpt(tmp_path / "again", reference)
    model = load_model(out)
    model.use_checkpoint(good)  # type: ignore[attr-defined]
    assert cellfoundry.annotate(reference, model).n_cells == reference.n_obs


def test_missing_checkpoint_or_wrong_family_is_a_clear_error(
    reference: ad.AnnData, tmp_path: Path
) -> None:
    with pytest.raises(ModelError, match="needs a scgpt checkpoint") as exc:
        cellfoundry.train(reference, "cell_type", "scgpt-knn")
    assert "--checkpoint" in (exc.value.hint or "")
    ckpt = _ckpt(tmp_path, reference, "scimilarity")
    with pytest.raises(ModelError, match=r"toy_scgpt\.json"):
        cellfoundry.train(reference, "cell_type", "scgpt-head", checkpoint=ckpt)
    with pytest.raises(ModelError, match=r"not a published|neither a checkpoint folder"):
        cellfoundry.train(reference, "cell_type", "scgpt-head", checkpoint=tmp_path / "nowhere")


def test_cli_train_with_checkpoint_then_annotate(
    reference: ad.AnnData,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ckpt = _ckpt(tmp_path, reference)
    ref_path = tmp_path / "ref.h5ad"
    reference.write_h5ad(ref_path)

    def run(args: list[str]) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["cellfoundry", *args])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = run(
        [
            "train",
            str(ref_path),
            "--model",
            "scimilarity-knn",
            "--checkpoint",
            str(ckpt),
            "--out",
            str(tmp_path / "m"),
        ]
    )
    assert code == 0, err
    assert "held-out accuracy" in out
    code, out, err = run(
        [
            "annotate",
            str(ref_path),
            "--model",
            str(tmp_path / "m"),
            "--out",
            str(tmp_path / "a.h5ad"),
        ]
    )
    assert code == 0, err
    res = ad.read_h5ad(tmp_path / "a.h5ad")
    assert "X_scimilarity" in res.obsm and res.obsm["X_scimilarity"].shape == (reference.n_obs, 16)
    assert (
        res.obs["predicted_cell_type"].astype(str) == reference.obs["cell_type"].astype(str)
    ).mean() > 0.9
    code, _, err = run(
        ["train", str(ref_path), "--model", "scimilarity-knn", "--out", str(tmp_path / "m2")]
    )
    assert code == 2 and "--checkpoint" in err


def test_streamed_backed_query_equals_in_memory(reference: ad.AnnData, tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path, reference)
    out = tmp_path / "model"
    cellfoundry.train(reference, "cell_type", "scimilarity-head", checkpoint=ckpt, out=out)
    q = make_counts_adata(n_cells=150, n_genes=90, n_types=3, seed=11)
    path = tmp_path / "q.h5ad"
    q.write_h5ad(path)
    backed = cellfoundry.annotate(path, out)  # .h5ad paths are read backed
    assert backed.adata is not None and backed.adata.isbacked
    mem = cellfoundry.annotate(q, out)
    np.testing.assert_allclose(backed.probabilities, mem.probabilities, rtol=1e-6)
    np.testing.assert_allclose(backed.embeddings, mem.embeddings, rtol=1e-6)  # type: ignore[arg-type]


def test_cosine_knn_vote_is_independent_of_the_query_block_size() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(300, 6)).astype(np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    y = rng.integers(0, 4, 300)
    q = rng.normal(size=(57, 6)).astype(np.float32)
    whole = cosine_knn_vote(ref, y, 4, q, k=7)
    np.testing.assert_array_equal(cosine_knn_vote(ref, y, 4, q, k=7, chunk=5), whole)
