"""Baseline annotators: training, artifacts, Unknown, gene mapping, single cell vs batch."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import cellfoundry as cf
from cellfoundry.artifacts import MANIFEST, TRAINING_CELLS_FILE
from cellfoundry.artifacts.heldout import HELDOUT_FILE
from cellfoundry.data.normalize import log1p_cp10k
from cellfoundry.errors import CoverageError, DataError, ModelError
from cellfoundry.result import PROBA_KEY
from tests.conftest import make_counts_adata

FAMILIES = ["logreg", "knn"]


@pytest.fixture(scope="module")
def ref() -> ad.AnnData:
    return make_counts_adata(n_cells=400, n_genes=120, n_types=4, seed=1)


@pytest.fixture(scope="module")
def query() -> ad.AnnData:
    return make_counts_adata(n_cells=150, n_genes=120, n_types=4, seed=2)


@pytest.fixture(scope="module", params=FAMILIES)
def trained(request, ref: ad.AnnData, tmp_path_factory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp(request.param)
    cf.train(ref, "cell_type", request.param, out=out, n_features=None)
    return request.param, out


def test_learns_the_synthetic_types(trained, query: ad.AnnData) -> None:
    _, path = trained
    res = cf.annotate(query, path)
    acc = (res.labels == query.obs["cell_type"].astype(str).to_numpy()).mean()
    assert acc > 0.9
    assert res.probabilities.shape == (150, 4)
    np.testing.assert_allclose(res.probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_artifact_is_versioned_and_pickle_free(trained) -> None:
    family, path = trained
    files = {p.name for p in path.iterdir()}
    assert files == {
        MANIFEST,
        "weights.safetensors",
        "genes.txt",
        TRAINING_CELLS_FILE,
        HELDOUT_FILE,
    }
    m = json.loads((path / MANIFEST).read_text())
    assert m["family"] == family and m["version"] == "1"
    assert m["classes"] == ["type_0", "type_1", "type_2", "type_3"]
    for key in ("genes_sha256", "preprocessing", "library_versions", "metrics", "training"):
        assert m[key]
    assert len(m["training"]["data_sha256"]) == 64
    assert 0 < m["unknown_threshold"] <= 1
    assert m["metrics"]["accuracy"] > 0.9 and "held-out" in m["metrics"]["evaluated_on"]
    assert set(m["files"]) == {
        "weights.safetensors",
        "genes.txt",
        TRAINING_CELLS_FILE,
        HELDOUT_FILE,
    }


def test_tampered_artifact_is_refused(trained, tmp_path: Path) -> None:
    _, path = trained
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in path.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    with open(copy / "genes.txt", "a") as fh:
        fh.write("EXTRA\n")
    with pytest.raises(ModelError, match="does not match its sha256"):
        cf.load_model(copy)


def test_single_cell_equals_batch(trained, query: ad.AnnData) -> None:
    _, path = trained
    batch = cf.annotate(query, path)
    for i in (0, 7, 149):
        alone = cf.annotate(query[i : i + 1].copy(), path)
        np.testing.assert_allclose(
            alone.probabilities[0], batch.probabilities[i], rtol=1e-6, atol=1e-7
        )
        assert alone.labels[0] == batch.labels[i]


def test_chunking_does_not_change_results(trained, query: ad.AnnData) -> None:
    _, path = trained
    a = cf.annotate(query, path, chunk_size=10_000).probabilities
    b = cf.annotate(query, path, chunk_size=7).probabilities
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_backed_file_gives_the_same_answer(trained, query: ad.AnnData, tmp_path: Path) -> None:
    _, path = trained
    p = tmp_path / "q.h5ad"
    query.write_h5ad(p)
    np.testing.assert_allclose(
        cf.annotate(p, path).probabilities, cf.annotate(query, path).probabilities, atol=1e-7
    )


def test_lognormalised_query_matches_counts_query(trained, query: ad.AnnData) -> None:
    _, path = trained
    q2 = query.copy()
    q2.X = log1p_cp10k(q2.X)
    np.testing.assert_allclose(
        cf.annotate(q2, path).probabilities, cf.annotate(query, path).probabilities, atol=1e-5
    )


def test_unknown_threshold_and_override(trained, query: ad.AnnData) -> None:
    _, path = trained
    res = cf.annotate(query, path, threshold=1.01)
    assert res.unknown.all() and (res.display_labels == "Unknown").all()
    assert (res.labels != "Unknown").all()  # predicted_cell_type stays the most probable label
    res0 = cf.annotate(query, path, threshold=0.0)
    assert not res0.unknown.any()


def test_to_adata_frame_summary(trained, query: ad.AnnData) -> None:
    _, path = trained
    res = cf.annotate(query.copy(), path)
    out = res.to_adata()
    for col in ("predicted_cell_type", "prediction_confidence", "prediction_unknown"):
        assert col in out.obs
    assert out.obsm[PROBA_KEY].shape == (150, 4)
    assert out.uns["cellfoundry"]["classes"] == res.classes
    df = res.to_frame()
    assert list(df.index) == list(query.obs_names)
    s = res.summary()
    assert s["n_cells"] == 150 and sum(s["label_counts"].values()) == 150
    top = res.top_k(3)
    assert len(top[0]) == 3 and top[0][0][1] >= top[0][1][1]


def test_query_with_ensembl_ids_against_symbol_reference(tmp_path: Path) -> None:
    table = (
        pd.read_csv(
            Path(cf.__file__).parent / "data" / "resources" / "gencode_v44_human_id2name.csv.gz",
            header=None,
        )
        .drop_duplicates(1)
        .drop_duplicates(0)
    )
    pairs = table.iloc[:120]
    ref = make_counts_adata(n_cells=300, n_genes=120, n_types=3, seed=3)
    ref.var_names = pairs[1].tolist()
    cf.train(ref, "cell_type", "logreg", out=tmp_path / "m", n_features=None)
    q = ref.copy()
    q.var_names = [f"{e}.5" for e in pairs[0]]  # versioned Ensembl IDs, no symbol column
    a = cf.annotate(q, tmp_path / "m")
    b = cf.annotate(ref, tmp_path / "m")
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-7)
    assert (
        a.coverage is not None
        and a.coverage.key_kind == "symbol"
        and a.coverage.fraction_present == 1.0
    )


def test_refuses_low_coverage_and_bad_labels(trained, ref: ad.AnnData) -> None:
    _, path = trained
    other = ref.copy()
    other.var_names = [f"OTHER{i}" for i in range(other.n_vars)]
    with pytest.raises(CoverageError):
        cf.annotate(other, path)
    with pytest.raises(DataError, match="obs has no column 'celltype'") as err:
        cf.train(ref, "celltype", "logreg")
    assert "cell_type" in err.value.hint
    one = ref.copy()
    one.obs["one"] = "x"
    with pytest.raises(DataError, match="usable class"):
        cf.train(one, "one", "logreg")


def test_unlabelled_cells_and_tiny_classes_are_dropped_and_recorded(ref: ad.AnnData) -> None:
    r = ref.copy()
    lab = r.obs["cell_type"].astype(object).to_numpy()
    lab[:5] = None
    lab[5] = "singleton"
    r.obs["cell_type"] = lab
    m = cf.train(r, "cell_type", "logreg", n_features=None)
    assert "singleton" not in m.classes
    assert m.manifest.training["dropped"] == {"unlabelled": 5, "class 'singleton' (<2 cells)": 1}
    assert m.manifest.training["n_cells"] == 400 - 6


def test_unknown_family_and_non_artifact_folder(tmp_path: Path, ref: ad.AnnData) -> None:
    with pytest.raises(ModelError, match="unknown model family"):
        cf.train(ref, "cell_type", "random-forest")
    with pytest.raises(ModelError, match="not a cellfoundry model folder"):
        cf.annotate(ref, tmp_path)
    with pytest.raises(ModelError, match="is a model family"):
        cf.annotate(ref, "logreg")
