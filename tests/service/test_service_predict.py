"""The real-time path gives the batch path's answer (same plan, same normalisation), in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

import cellfoundry as cf
from cellfoundry.data.prepare import (
    cell_features,
    cell_plan,
    plan_from_genes,
    plan_input,
    stack_cells,
    transform,
)
from cellfoundry.service.predict import Predictor
from tests.conftest import make_counts_adata


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    ref = make_counts_adata(n_cells=300, n_genes=120, seed=3)
    out = tmp_path_factory.mktemp("m") / "model"
    cf.train(ref, "cell_type", "logreg", out=out, n_features=None)
    return make_counts_adata(n_cells=40, n_genes=120, seed=4), out


def test_plan_from_genes_matches_plan_input(trained: tuple[object, Path]) -> None:
    query, model_dir = trained
    model = cf.load_model(model_dir)
    batch_plan = plan_input(query, model.genes, key_kind="symbol")  # type: ignore[arg-type,attr-defined]
    rt_plan = plan_from_genes(
        list(query.var_names), model.genes, values="counts", key_kind="symbol"
    )  # type: ignore[attr-defined]
    np.testing.assert_array_equal(rt_plan.alignment.source_index, batch_plan.alignment.source_index)
    x = query.X  # type: ignore[attr-defined]
    np.testing.assert_allclose(
        transform(x, rt_plan).toarray(), transform(x, batch_plan).toarray(), rtol=1e-6
    )


def test_predictor_equals_annotate_per_cell(trained: tuple[object, Path]) -> None:
    query, model_dir = trained
    res = cf.annotate(query, model_dir)  # type: ignore[arg-type]
    pred = Predictor()
    pred.add("m", cf.load_model(model_dir))
    lm = pred.models["m"]
    x = query.X.tocsr()  # type: ignore[attr-defined]
    names = list(query.var_names)  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    for i in range(10):
        row = x[i]
        order = rng.permutation(len(row.indices))  # gene order in the request does not matter
        cell = {names[row.indices[j]]: float(row.data[j]) for j in order}
        out = pred.predict(lm, [cell], top_k=len(res.classes))
        got = {t["label"]: t["probability"] for t in out["predictions"][0]["top_k"]}
        want = dict(zip(res.classes, res.probabilities[i].tolist(), strict=True))
        assert got == pytest.approx(want, rel=1e-5, abs=1e-7)
        assert out["predictions"][0]["unknown"] == bool(res.unknown[i])
    # several cells in one request give the same answers as one at a time
    cells = [
        {names[j]: float(v) for j, v in zip(x[i].indices, x[i].data, strict=True)} for i in range(5)
    ]
    many = pred.predict(lm, cells, top_k=1)["predictions"]
    assert [p["top_k"][0]["label"] for p in many] == list(res.labels[:5])
    assert len(lm.plans) >= 10  # one cached plan per distinct gene list


def test_predictor_with_panel_equals_batch_on_a_filtered_matrix(tmp_path: Path) -> None:
    """A request that names its measured genes (`panel`) gets the batch answer for a matrix of
    exactly those genes: model genes outside the panel are unobserved, not zero."""
    ref = make_counts_adata(n_cells=400, n_genes=300, seed=5)
    cf.train(ref, "cell_type", "logreg", out=tmp_path / "m", n_features=None)
    full = make_counts_adata(n_cells=30, n_genes=300, seed=6)
    keep = np.random.default_rng(1).permutation(300)[:210]  # a 70 % panel
    query = full[:, np.sort(keep)].copy()
    res = cf.annotate(query, tmp_path / "m")
    assert res.summary()["gene_panel_mode"] == "unobserved"

    pred = Predictor()
    pred.add("m", cf.load_model(tmp_path / "m"))
    lm = pred.models["m"]
    x = query.X.tocsr()  # type: ignore[union-attr]
    names = list(query.var_names)
    cells = [
        {names[j]: float(v) for j, v in zip(x[i].indices, x[i].data, strict=True)}
        for i in range(query.n_obs)
    ]
    k = len(res.classes)
    with_panel = pred.predict(lm, cells, top_k=k, panel=names)["predictions"]
    without = pred.predict(lm, cells, top_k=k)["predictions"]
    differs = 0
    for i, (p, q) in enumerate(zip(with_panel, without, strict=True)):
        got = {t["label"]: t["probability"] for t in p["top_k"]}
        want = dict(zip(res.classes, res.probabilities[i].tolist(), strict=True))
        assert got == pytest.approx(want, rel=1e-5, abs=1e-7)
        old = {t["label"]: t["probability"] for t in q["top_k"]}
        differs += old != pytest.approx(want, rel=1e-3, abs=0)  # the small ones move too
    assert differs > 0  # without the panel, absent model genes are read as zero expression
    # a single cell with the panel gets the same answer as inside the batch
    one = pred.predict(lm, cells[:1], top_k=k, panel=names)["predictions"][0]
    assert one["top_k"] == with_panel[0]["top_k"]


@pytest.mark.parametrize("values", ["counts", "lognorm"])
def test_cell_features_are_transform_of_the_one_row_matrix(
    trained: tuple[object, Path], values: str
) -> None:
    """The real-time single-cell features are exactly (bit for bit) the batch transform's."""
    query, model_dir = trained
    model = cf.load_model(model_dir)
    x = query.X.tocsr()  # type: ignore[attr-defined]
    names = np.asarray(query.var_names)  # type: ignore[attr-defined]
    rng = np.random.default_rng(7)
    for i in range(8):
        row = x[i]
        order = rng.permutation(len(row.indices))
        genes = [*names[row.indices[order]], "NOT_A_MODEL_GENE"]  # one gene the model lacks
        vals = np.append(row.data[order], 3.0).astype(np.float32)
        if values == "lognorm":
            vals = np.log1p(vals / vals.sum() * 1e4).astype(np.float32)
        plan = plan_from_genes(genes, model.genes, values=values, key_kind="symbol")  # type: ignore[arg-type,attr-defined]
        matrix = sp.csr_matrix((vals, np.arange(len(vals)), [0, len(vals)]), shape=(1, len(vals)))
        want = transform(matrix, plan).toarray()
        parts = cell_features(vals, plan)
        assert parts is not None  # the matrix-free path applies to this plan
        hoisted = cell_plan(plan)  # /predict's: the plan's part done once per gene list
        assert hoisted is not None
        again = cell_features(vals, plan, hoisted)
        assert again is not None
        for a, b in zip(again, parts, strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        got = stack_cells([parts], len(plan.alignment.target)).toarray()
        assert got.dtype == want.dtype == np.float32
        np.testing.assert_array_equal(got, want)
        assert (got != 0).sum() == len(row.indices)  # every named model gene is kept, no other
        plan.totals_columns = np.arange(len(vals) // 2)  # totals over some genes (a refit's)
        assert cell_features(vals, plan) is None  # left to the general path (``transform``)
        assert cell_plan(plan) is None


def test_a_gene_list_named_again_reuses_its_plan(trained: tuple[object, Path]) -> None:
    """The plan cache: the same genes (equal, not the same objects) find the same plan; another
    list, species or kind of values does not; an answer is the same from a fresh predictor."""
    pred, lm, x, names = _loaded(trained)
    row = x[0]
    cell = {names[j]: float(v) for j, v in zip(row.indices, row.data, strict=True)}
    again = {"".join(g): v for g, v in cell.items()}  # equal strings, other objects
    first = lm.plan(tuple(cell), None, "counts")
    assert lm.plan(tuple(again), None, "counts") is first
    assert lm.plan(tuple(cell), None, "lognorm") is not first
    other = lm.plan(tuple(cell)[1:], None, "counts")
    assert other is not first and lm.plan(tuple(again), None, "counts") is first
    assert len(lm.plans) == 3
    fresh = Predictor()
    fresh.add("m", lm.annotator)
    for c in (cell, again, cell):
        assert pred.predict(lm, [c], top_k=3) == fresh.predict(fresh.models["m"], [cell], top_k=3)


def _loaded(trained: tuple[object, Path]) -> tuple[Predictor, Any, sp.csr_matrix, list[str]]:
    """A predictor with the trained model, its loaded model, the query's matrix and genes."""
    query, model_dir = trained
    pred = Predictor()
    pred.add("m", cf.load_model(model_dir))
    return pred, pred.models["m"], query.X.tocsr(), list(query.var_names)  # type: ignore[attr-defined]


def test_a_cell_alone_gets_its_answer_inside_a_batch(trained: tuple[object, Path]) -> None:
    pred, lm, x, names = _loaded(trained)
    cells = [
        {names[j]: float(v) for j, v in zip(x[i].indices, x[i].data, strict=True)}
        for i in range(12)
    ]
    batch = pred.predict(lm, cells, top_k=3)["predictions"]
    for cell, inside in zip(cells, batch, strict=True):
        alone = pred.predict(lm, [cell], top_k=3)["predictions"][0]
        assert alone["label"] == inside["label"] and alone["unknown"] == inside["unknown"]
        assert [t["label"] for t in alone["top_k"]] == [t["label"] for t in inside["top_k"]]
        got = [t["probability"] for t in alone["top_k"]]
        assert got == pytest.approx([t["probability"] for t in inside["top_k"]], rel=1e-6)


def test_concurrent_cells_share_one_model_call_and_get_their_answers_alone(
    trained: tuple[object, Path],
) -> None:
    """Micro-batching: one-cell requests prepared together share a model call, and each gets
    exactly (bit for bit) the answer it gets alone."""
    import asyncio

    from cellfoundry.service.predict import ProbaBatcher

    pred, lm, x, names = _loaded(trained)
    rng = np.random.default_rng(3)
    cells = []
    for i in range(12):  # each cell its own genes (a random part of its expressed ones)
        row = x[i]
        keep = rng.permutation(len(row.indices))[: max(5, len(row.indices) * 2 // 3)]
        cells.append({names[row.indices[j]]: float(row.data[j]) for j in keep})
    alone = [pred.predict(lm, [c], top_k=4) for c in cells]
    batcher = ProbaBatcher()

    async def one(cell: dict[str, float]) -> dict[str, object]:
        prep = pred.prepare(lm, [cell])
        assert prep.batchable
        return pred.answer(prep, await batcher.proba(prep), top_k=4)

    async def together() -> list[dict[str, object]]:
        return await asyncio.gather(*[one(c) for c in cells])

    assert asyncio.run(together()) == alone
    assert (batcher.calls, batcher.cells) == (1, 12)
    labels = {a["predictions"][0]["label"] for a in alone}  # type: ignore[index]
    assert len(labels) > 1  # the cells are not all alike
