"""A cell with no counts on a model's genes has no evidence: it is Unknown, never a confident call.

Found by a stranger-data audit: an all-zero cell was called "CD4 T cells" at 0.9745 confidence by
a logreg model (the standardised zero profile sits nearest one class)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import cellfoundry as cf
from cellfoundry.service.predict import Predictor
from cellfoundry.stats.labels import UNKNOWN, called_mask
from cellfoundry.stats.metrics import classification_metrics
from tests.conftest import make_counts_adata

N_GENES = 120
EMPTY = [3, 17, 40]  # all-zero cells
OFF_PANEL = 25  # counts only on genes the model does not use


@pytest.fixture(scope="module", params=["logreg", "knn"])
def model_dir(request, tmp_path_factory) -> Path:
    ref = make_counts_adata(n_cells=400, n_genes=N_GENES, n_types=4, seed=1)
    out = tmp_path_factory.mktemp(request.param) / "model"
    cf.train(ref, "cell_type", request.param, out=out, n_features=None)
    return out


def _query() -> ad.AnnData:
    q = make_counts_adata(n_cells=60, n_genes=N_GENES, n_types=4, seed=2)
    x = q.X.toarray() if sp.issparse(q.X) else np.asarray(q.X)
    x[EMPTY] = 0
    q.X = sp.csr_matrix(x)
    return q


def test_empty_cells_are_unknown_and_the_others_keep_their_answers(model_dir: Path) -> None:
    q = _query()
    res = cf.annotate(q, model_dir)
    k = len(res.classes)
    assert list(res.display_labels[EMPTY]) == [UNKNOWN] * len(EMPTY)
    np.testing.assert_allclose(res.probabilities[EMPTY], 1.0 / k, rtol=1e-6)
    assert res.unknown[EMPTY].all()
    frame = res.to_frame()
    assert frame["prediction_unknown"].iloc[EMPTY].all()
    assert any(f"{len(EMPTY)} of 60 cells have no counts" in w for w in res.warnings), res.warnings
    # the other cells get what they get without the empty ones in the file
    rest = [i for i in range(q.n_obs) if i not in EMPTY]
    alone = cf.annotate(q[rest].copy(), model_dir)
    np.testing.assert_allclose(res.probabilities[rest], alone.probabilities, rtol=1e-5, atol=1e-7)
    assert not any("no counts" in w for w in alone.warnings)


def test_a_forced_call_threshold_still_leaves_empty_cells_unknown(model_dir: Path) -> None:
    res = cf.annotate(_query(), model_dir, threshold=0.0)
    assert res.unknown[EMPTY].all()
    assert res.unknown.sum() == len(EMPTY)  # threshold 0: every cell with evidence is called


def test_counts_only_off_the_model_genes_are_no_evidence(model_dir: Path, tmp_path: Path) -> None:
    """A cell whose counts all fall on genes the model does not use is Unknown too."""
    q = make_counts_adata(n_cells=30, n_genes=N_GENES, n_types=4, seed=5)
    extra = sp.csr_matrix(np.zeros((30, 5), dtype=np.float32))
    x = sp.hstack([q.X, extra]).tolil()
    x[OFF_PANEL % 30, :N_GENES] = 0
    x[OFF_PANEL % 30, N_GENES:] = 50
    wide = ad.AnnData(
        x.tocsr(), obs=q.obs, var={"gene": [*q.var_names, *[f"XTRA{i}" for i in range(5)]]}
    )
    wide.var_names = wide.var["gene"].astype(str).to_numpy()
    res = cf.annotate(wide, model_dir)
    assert res.unknown[OFF_PANEL % 30]
    assert res.unknown.sum() < 30


def test_predict_path_gives_the_batch_answer_for_an_empty_cell(model_dir: Path) -> None:
    pred = Predictor()
    pred.add("m", cf.load_model(model_dir))
    lm = pred.models["m"]
    q = _query()
    names = list(q.var_names)
    row = q.X.tocsr()[0]
    cells = [{names[j]: float(v) for j, v in zip(row.indices, row.data, strict=True)}]
    cells.append({names[0]: 0.0, names[1]: 0.0})  # named genes, all zero
    out = pred.predict(lm, cells, top_k=1, threshold=0.0)["predictions"]
    assert out[1]["unknown"] is True and out[1]["label"] == UNKNOWN
    assert out[0]["unknown"] is False


def test_called_mask_rule() -> None:
    p = np.array([[0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1], [0.3, 0.3, 0.2, 0.2]])
    assert called_mask(p, 0.0).tolist() == [False, True, True]
    assert called_mask(p, 0.5).tolist() == [False, True, False]
    assert called_mask(np.zeros((0, 3)), 0.5).shape == (0,)
    # the Unknown-aware metrics use the same rule: a uniform cell is not called
    m = classification_metrics(
        ["a", "b", "a"],
        ["a", "a", "a"],
        p[:, :2] * 0 + [[0.5, 0.5], [0.9, 0.1], [0.8, 0.2]],
        ["a", "b"],
        threshold=0.0,
    )
    assert m["coverage"] == pytest.approx(2 / 3)
