"""kNN annotation: exact cosine neighbours, the official vote, tie rule and statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scim_helpers import official

from cellfoundry.errors import ModelError
from cellfoundry.models.scimilarity import LabelledReference, SCimilarityModel, cosine_knn
from cellfoundry.models.scimilarity.knn import read_hnswlib_index, vote


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_cosine_knn_is_exact() -> None:
    rng = np.random.default_rng(0)
    ref, q = rng.normal(size=(500, 12)), rng.normal(size=(70, 12))
    idx, dist = cosine_knn(q, ref * rng.uniform(0.5, 3, (500, 1)), 25)  # scale must not matter
    full = 1.0 - _unit(q) @ _unit(ref).T
    expected = np.argsort(full, axis=1, kind="stable")[:, :25]
    assert np.array_equal(idx, expected)
    np.testing.assert_allclose(dist, np.take_along_axis(full, expected, axis=1), atol=1e-6)
    assert (np.diff(dist, axis=1) >= 0).all()
    idx_all, _ = cosine_knn(q, ref, 500)  # k = whole reference
    assert np.array_equal(idx_all[:, :25], expected)


def test_equal_distances_keep_reference_order() -> None:
    ref = np.array([[1, 0], [0, 1], [1, 0], [1, 0], [0, 1]], dtype=np.float32)
    idx, dist = cosine_knn(np.array([[1, 0]], dtype=np.float32), ref, 2)
    assert idx.tolist() == [[0, 2]] and dist.tolist() == [[0.0, 0.0]]


def test_vote_tie_goes_to_the_label_met_first() -> None:
    labels = ["A", "B", "B", "A", "C"]
    # neighbours in distance order: B, A, A, B -> 2 vs 2, B was met first
    res = vote(np.array([[1, 0, 3, 2]]), np.array([[0.1, 0.2, 0.3, 0.4]]), labels)
    assert res.predictions.tolist() == ["B"]
    assert json.loads(res.stats["hits"][0]) == {"B": 2.0, "A": 2.0}
    assert res.stats["vs2nd"][0] == 0.5 and res.stats["vsAll"][0] == 0.5
    assert res.stats["min_dist"][0] == pytest.approx(0.1) and res.stats["max_dist"][
        0
    ] == pytest.approx(0.4)
    # weighting: 1/d favours the closer pair (B: 10 + 2.5, A: 5 + 3.33)
    w = vote(np.array([[1, 0, 3, 2]]), np.array([[0.1, 0.2, 0.3, 0.4]]), labels, weighting=True)
    assert w.predictions.tolist() == ["B"]
    assert w.stats["vsAll_weighted"][0] == pytest.approx(12.5 / (12.5 + 5 + 1 / 0.3))
    one = vote(np.array([[4, 4]]), np.array([[0.0, 0.0]]), labels)  # d=0 -> weight 1/1e-6
    assert one.predictions.tolist() == ["C"] and one.stats["vs2nd"][0] == 1.0
    assert json.loads(one.stats["hits_weighted"][0]) == {"C": 2e6}


class _FakeAnnotation:
    """Just what the official get_predictions_knn reads from ``self``."""

    def __init__(self, idx: np.ndarray, dist: np.ndarray, labels: list[str]) -> None:
        self._nn = (idx, dist)
        self.idx2label = dict(enumerate(labels))

    def get_nearest_neighbors(
        self, embeddings: np.ndarray, k: int, ef: int
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._nn


@pytest.mark.parametrize("weighting", [False, True])
def test_vote_and_statistics_equal_official(weighting: bool) -> None:
    cell_annotation = official("cell_annotation")
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(400, 8))
    labels = [["T", "B", "NK", "Mono"][i] for i in rng.integers(0, 4, 400)]
    q = rng.normal(size=(60, 8))
    idx, dist = cosine_knn(q, ref, 15)
    preds, _, _, stats = cell_annotation.CellAnnotation.get_predictions_knn(
        _FakeAnnotation(idx, dist, labels), q, k=15, weighting=weighting, disable_progress=True
    )
    ours = vote(idx, dist, labels, weighting=weighting)
    assert ours.predictions.tolist() == preds.tolist()
    assert ours.stats["hits"].tolist() == stats["hits"].tolist()
    assert ours.stats["hits_weighted"].tolist() == stats["hits_weighted"].tolist()
    for c in ("min_dist", "max_dist", "vs2nd", "vsAll", "vs2nd_weighted", "vsAll_weighted"):
        np.testing.assert_allclose(
            ours.stats[c].to_numpy(float), stats[c].to_numpy(float), rtol=1e-12
        )
    # the whole path through a reference (distances recomputed from stored unit vectors)
    full = LabelledReference(ref, labels).annotate(q, 15, weighting=weighting)
    assert full.predictions.tolist() == preds.tolist() and np.array_equal(full.nn_idxs, idx)
    np.testing.assert_allclose(
        full.stats["vsAll_weighted"].to_numpy(float), stats["vsAll_weighted"], rtol=1e-5
    )
    obs = full.to_obs()
    assert list(obs.columns) == [
        "celltype_hint",
        "min_dist",
        "celltype_hits",
        "celltype_hits_weighted",
        "celltype_hint_stat",
        "celltype_hint_weighted_stat",
    ]


def test_exclude_labels_and_errors() -> None:
    ref = LabelledReference(np.eye(4, dtype=np.float32), ["A", "B", "C", "D"])
    res = ref.annotate(np.array([[1, 0.1, 0, 0]], dtype=np.float32), 1, exclude_labels=["A"])
    assert res.predictions.tolist() == ["B"]
    with pytest.raises(ModelError, match="4 reference embeddings but 3 labels"):
        LabelledReference(np.eye(4), ["A", "B", "C"])
    with pytest.raises(ModelError, match="k=9 but the reference has 4 cells"):
        cosine_knn(np.eye(4), np.eye(4), 9)
    with pytest.raises(ModelError, match="dimensions"):
        cosine_knn(np.ones((1, 3)), np.eye(4), 1)


def test_reads_hnswlib_index_file(tmp_path: Path) -> None:
    hnswlib = pytest.importorskip("hnswlib", reason="hnswlib is needed to write a real index file")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    index = hnswlib.Index(space="cosine", dim=16)
    index.init_index(max_elements=350, ef_construction=200, M=12)
    index.add_items(x, np.arange(300))
    index.mark_deleted(7)
    index.save_index(str(tmp_path / "labelled_kNN.bin"))
    data = read_hnswlib_index(tmp_path / "labelled_kNN.bin", 16)
    assert data.labels.tolist() == list(range(300)) and data.m == 12 and data.ef_construction == 200
    assert data.deleted.tolist() == [i == 7 for i in range(300)]
    np.testing.assert_allclose(data.vectors, _unit(x), atol=1e-6)
    # exact search over the stored vectors == hnswlib with an exhaustive ef
    index.unmark_deleted(7)
    index.set_ef(300)
    q = rng.normal(size=(20, 16)).astype(np.float32)
    h_idx, h_dist = index.knn_query(q, k=10)
    idx, dist = cosine_knn(q, data.vectors, 10)
    assert np.array_equal(idx, h_idx.astype(np.int64))
    np.testing.assert_allclose(dist, h_dist, atol=1e-5)
    with pytest.raises(ModelError, match="8-dimensional"):
        read_hnswlib_index(tmp_path / "labelled_kNN.bin", 8)
    (tmp_path / "cut.bin").write_bytes((tmp_path / "labelled_kNN.bin").read_bytes()[:5000])
    with pytest.raises(ModelError, match="truncated"):
        read_hnswlib_index(tmp_path / "cut.bin", 16)


def test_model_folder_with_annotation_index(tiny_folder: Path) -> None:
    hnswlib = pytest.importorskip("hnswlib", reason="hnswlib is needed to write a real index file")
    m = SCimilarityModel.load(tiny_folder)
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(120, m.embedding_dim)).astype(np.float32)
    labels = [f"type{i % 3}" for i in range(120)]
    index = hnswlib.Index(space="cosine", dim=m.embedding_dim)
    index.init_index(max_elements=120, ef_construction=100, M=16)
    index.add_items(ref, np.arange(120))
    (tiny_folder / "annotation").mkdir()
    index.save_index(str(tiny_folder / "annotation" / "labelled_kNN.bin"))
    pd.DataFrame({"l": labels, "s": ["study1"] * 120}).to_csv(
        tiny_folder / "annotation" / "reference_labels.tsv", sep="\t", header=False, index=False
    )
    m2 = SCimilarityModel.load(tiny_folder)
    assert (
        m2.reference is not None
        and len(m2.reference) == 120
        and m2.reference.studies == ["study1"] * 120
    )
    res = m2.reference.annotate(ref[:10], k=1)
    assert res.predictions.tolist() == labels[:10]
    assert any(
        "120 labelled cells in annotation/labelled_kNN.bin" in msg
        for msg in m2.load_report.messages
    )
