"""Consensus weights fitted on held-out reference cells, and the call rule (top class vs rivals)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import cellfoundry as cf
from cellfoundry.artifacts import Manifest, cell_keys
from cellfoundry.artifacts.heldout import HELDOUT_FILE, HeldOutPredictions, key_hashes
from cellfoundry.cli import cli
from cellfoundry.consensus import fitted_weights, heldout_pool, pool_weights
from cellfoundry.models.registry import load_model
from cellfoundry.result import AnnotationResult
from cellfoundry.stats.metrics import macro_f1_true_labels
from tests.ontology.reference import PARSER, cl

CD4 = "CD4-positive, alpha-beta T cell"
CD8 = "CD8-positive, alpha-beta T cell"
NK = "natural killer cell"
B = "B cell"
CLASSES = [CD4, CD8, NK, B]


def result(proba: np.ndarray, name: str, classes: list[str] = CLASSES) -> AnnotationResult:
    return AnnotationResult(
        obs_names=pd.Index([f"cell{i}" for i in range(len(proba))]),
        classes=classes,
        probabilities=np.asarray(proba, dtype=np.float32),
        threshold=0.5,
        model_name=name,
        model_family="test",
    )


def peaked(y: np.ndarray, rng: np.random.Generator, right: float) -> np.ndarray:
    """Probabilities with most mass on y for a share ``right`` of cells, on another class else."""
    k = len(CLASSES)
    called = np.where(rng.random(len(y)) < right, y, (y + rng.integers(1, k, len(y))) % k)
    p = rng.dirichlet(np.ones(k) * 0.5, len(y)) * 0.2
    p[np.arange(len(y)), called] += 0.8
    return p / p.sum(axis=1, keepdims=True)


def objective(support: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """Class-balanced mean log of the pooled mass on the truth (written out independently)."""
    per_class = [np.log(np.maximum(support[y == c], 1e-4) @ w).mean() for c in np.unique(y)]
    return float(np.mean(per_class))


def test_pool_weights_reach_the_best_mixture_on_a_grid() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    s = np.c_[rng.beta(5, 2, 300), rng.beta(2, 2, 300), rng.beta(3, 3, 300)]
    w = pool_weights(s, y)
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0)
    grid = [
        np.array([a, b, 1 - a - b])
        for a in np.linspace(0, 1, 41)
        for b in np.linspace(0, 1, 41)
        if a + b <= 1 + 1e-12
    ]
    best = max(objective(s, y, g) for g in grid)
    assert objective(s, y, w) >= best - 1e-6


def test_pool_weights_count_every_class_alike() -> None:
    # model 0 is right on the big class only, model 1 on the small class only
    y = np.r_[np.zeros(90, int), np.ones(10, int)]
    s = np.c_[np.r_[np.full(90, 0.9), np.full(10, 0.1)], np.r_[np.full(90, 0.1), np.full(10, 0.9)]]
    np.testing.assert_allclose(pool_weights(s, y), [0.5, 0.5], atol=1e-3)  # balanced: a tie
    assert pool_weights(s, np.zeros(100, int))[0] > 0.9  # one class: the big class's model


def test_a_model_of_pure_noise_gets_no_say() -> None:
    rng = np.random.default_rng(1)
    n_ref, n_query = 400, 300
    y_ref = rng.integers(0, 4, n_ref)
    cells = key_hashes(np.asarray([f"ref{i}|100" for i in range(n_ref)]))
    good_ref = peaked(y_ref, rng, 0.9)
    noise_ref = rng.dirichlet(np.ones(4) * 0.3, n_ref)  # confident and unrelated to the truth
    y_q = rng.integers(0, 4, n_query)
    good = result(peaked(y_q, rng, 0.9), "good")
    noise = result(rng.dirichlet(np.ones(4) * 0.3, n_query), "noise")
    held = [
        HeldOutPredictions(cells, y_ref, good_ref.astype(np.float32), "cross_validation"),
        HeldOutPredictions(cells, y_ref, noise_ref.astype(np.float32), "cross_validation"),
    ]
    weighting = fitted_weights([good, noise], held)
    assert weighting is not None and weighting.method == "fitted_on_heldout_cells"
    assert weighting.detail["n_cells"] == n_ref
    assert weighting.weights[1] < 0.02
    c = cf.consensus([good, noise], weights=weighting.weights, weighting=weighting)
    assert (good.labels != noise.labels).mean() > 0.5  # they disagree on most cells
    np.testing.assert_array_equal(c.labels, good.labels)  # the consensus follows the good model
    assert c.summary()["consensus"]["weighting"]["method"] == "fitted_on_heldout_cells"
    equal = cf.consensus([good, noise])  # unweighted, the noise changes calls
    assert (equal.labels != good.labels).any()


def test_weights_are_fitted_only_on_cells_every_model_predicted() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 100)
    keys = key_hashes(np.asarray([f"c{i}|1" for i in range(100)]))
    a = HeldOutPredictions(keys[:60], y[:60], peaked(y[:60], rng, 0.9).astype(np.float32), "x")
    b = HeldOutPredictions(keys[40:], y[40:], peaked(y[40:], rng, 0.9).astype(np.float32), "x")
    res = [result(peaked(y, rng, 0.9), "a"), result(peaked(y, rng, 0.9), "b")]
    w = fitted_weights(res, [a, b], min_cells=20)
    assert w is not None and w.detail["n_cells"] == 20  # cells 40..59
    assert fitted_weights(res, [a, b], min_cells=21) is None
    assert fitted_weights(res, [a, None]) is None


def test_the_top_class_is_called_when_it_beats_every_rival() -> None:
    # CD4 leads but has no majority; CD8 and NK (rivals: neither above nor below CD4) trail
    p = np.array([[0.45, 0.40, 0.15, 0.0]])
    c = cf.consensus([result(p, "a"), result(p, "b")])
    assert c.labels[0] == CD4 and c.confidence[0] == pytest.approx(0.45)
    # a tie between rivals goes to their closest common term (checked against the parser)
    tie = np.array([[0.45, 0.45, 0.1, 0.0]])
    t = cf.consensus([result(tie, "a"), result(tie, "b")])
    assert t.term_ids[0] in PARSER.get_term_ancestors(cl(CD4))
    assert t.term_ids[0] in PARSER.get_term_ancestors(cl(CD8))


def test_a_broader_term_beats_a_leading_class_of_another_lineage() -> None:
    # B cell leads among the classes, but the T cells together outweigh it: a T-cell term
    p = np.array([[0.3, 0.3, 0.0, 0.4]])
    c = cf.consensus([result(p, "a"), result(p, "b")])
    assert c.labels[0] != B and not c.unknown[0]
    assert c.term_ids[0] in PARSER.get_term_ancestors(cl(CD4))
    assert c.term_ids[0] in PARSER.get_term_ancestors(cl(CD8))


def test_trained_models_keep_out_of_fold_predictions(pbmc_split, tmp_path: Path) -> None:
    ref, query = pbmc_split
    small = ref[:600].copy()
    model = cf.train(small, "cell_type", "logreg", out=tmp_path / "lr", cv_folds=3, n_features=500)
    assert (tmp_path / "lr" / HELDOUT_FILE).is_file()
    loaded = load_model(tmp_path / "lr")
    held = loaded.heldout_predictions
    assert held is not None and held.kind == "cross_validation"
    assert loaded.manifest.training["heldout_predictions"]["folds"] == 3
    # every reference cell of a trained class (classes of < 2 cells are left out) once
    labels = small.obs["cell_type"].astype(str)
    kept = labels.map(labels.value_counts()).to_numpy() >= 2
    np.testing.assert_array_equal(np.sort(held.cells), np.sort(key_hashes(cell_keys(small)[kept])))
    by_cell = dict(
        zip(key_hashes(cell_keys(small)), small.obs["cell_type"].astype(str), strict=True)
    )
    assert [model.classes[i] for i in held.y] == [by_cell[c] for c in held.cells]
    np.testing.assert_allclose(held.probabilities.sum(axis=1), 1.0, atol=1e-4)
    # out of fold: less sure of the true class than the final model, which saw every cell
    fit_all = cf.annotate(small, loaded)
    order = {c: i for i, c in enumerate(key_hashes(cell_keys(small)))}
    rows = np.asarray([order[c] for c in held.cells])
    own = fit_all.probabilities[rows, held.y]
    assert held.probabilities[np.arange(len(held.y)), held.y].mean() < own.mean()
    # by default the stop and test parts of the held-out split are kept instead
    knn = cf.train(small, "cell_type", "knn", n_features=500)
    assert knn.heldout_predictions is not None and knn.heldout_predictions.kind == "held_out"
    assert 0 < len(knn.heldout_predictions.cells) < small.n_obs
    # a consensus of the two is weighted on the cells both predicted without fitting on them
    res = cf.annotate(query[:200].copy(), [tmp_path / "lr", knn])
    weighting = res.summary()["consensus"]["weighting"]
    assert weighting["method"] == "fitted_on_heldout_cells"
    assert weighting["n_cells"] == len(knn.heldout_predictions.cells)


def test_cv_folds_must_be_zero_or_at_least_two(pbmc_split) -> None:
    ref, _ = pbmc_split
    with pytest.raises(ValueError, match="cv_folds"):
        cf.train(ref[:200].copy(), "cell_type", "logreg", cv_folds=1, n_features=300)


def test_models_without_heldout_predictions_fall_back_to_macro_f1(
    pbmc_split, pbmc_models, tmp_path: Path
) -> None:
    _, query = pbmc_split
    folders = []
    for name, path in pbmc_models.items():
        dest = tmp_path / name
        dest.mkdir()
        for f in Path(path).iterdir():
            if f.name != HELDOUT_FILE:
                (dest / f.name).write_bytes(f.read_bytes())
        manifest = Manifest.read(dest, verify=False)
        manifest.training.pop("heldout_predictions", None)
        manifest.write(dest)  # re-hashes the files that are there (an older artifact)
        folders.append(dest)
    res = cf.annotate(query[:100].copy(), folders)
    assert res.summary()["consensus"]["weighting"]["method"] == "heldout_macro_f1"


def test_cv_folds_is_refused_for_families_without_it(pbmc_split) -> None:
    ref, _ = pbmc_split
    with pytest.raises(ValueError, match="out-of-fold"):
        cf.train(ref[:100].copy(), "cell_type", "geneformer-knn", cv_folds=3)


def test_cli_train_keeps_out_of_fold_predictions(pbmc_split, tmp_path: Path) -> None:
    ref, _ = pbmc_split
    path = tmp_path / "ref.h5ad"
    ref[:300].copy().write_h5ad(path)
    run = CliRunner().invoke(
        cli,
        [
            "train",
            str(path),
            "--model",
            "knn",
            "--n-features",
            "300",
            "--cv-folds",
            "2",
            "--out",
            str(tmp_path / "m"),
        ],
    )
    assert run.exit_code == 0, run.output
    held = load_model(tmp_path / "m").heldout_predictions
    assert held is not None and held.kind == "cross_validation"


def skewed(y: np.ndarray, rng: np.random.Generator, rare: int) -> np.ndarray:
    """Sure of every common class (0.97) but calls the rare class's cells NK (B 0.35, NK 0.6)."""
    p = rng.dirichlet(np.ones(4), len(y)) * 0.03
    common = y != rare
    p[np.nonzero(common)[0], y[common]] += 0.97
    p[np.ix_(np.nonzero(~common)[0], [CLASSES.index(B), CLASSES.index(NK)])] += [0.35, 0.6]
    return p / p.sum(axis=1, keepdims=True)


def modest(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Right on every cell, but only 0.6 sure."""
    p = rng.dirichlet(np.ones(4), len(y)) * 0.4
    p[np.arange(len(y)), y] += 0.6
    return p / p.sum(axis=1, keepdims=True)


def heldout_case(seed: int) -> tuple[list[AnnotationResult], list[HeldOutPredictions], np.ndarray]:
    """Query results and held-out predictions of a modest model that is always right and a sure
    model that misses the rare class (B cells, 5 %); the query truth."""
    rng = np.random.default_rng(seed)
    share = [0.4, 0.3, 0.25, 0.05]
    rare = CLASSES.index(B)
    y_ref, y_q = rng.choice(4, 800, p=share), rng.choice(4, 400, p=share)
    cells = key_hashes(np.asarray([f"ref{i}|100" for i in range(len(y_ref))]))
    held = [
        HeldOutPredictions(cells, y_ref, modest(y_ref, rng).astype(np.float32), "x"),
        HeldOutPredictions(cells, y_ref, skewed(y_ref, rng, rare).astype(np.float32), "x"),
    ]
    query = [result(modest(y_q, rng), "modest"), result(skewed(y_q, rng, rare), "sure")]
    return query, held, y_q


def test_the_pool_gives_way_to_one_model_that_calls_the_heldout_cells_better() -> None:
    query, held, y_q = heldout_case(3)
    # the log-likelihood favours the sure model (far likelier on the common classes) ...
    fitted = fitted_weights(query, held, select=False)
    assert fitted is not None and fitted.weights[1] > 0.5
    # ... whose calls lose the rare class, which macro-F1 counts as much as the others
    truth = np.asarray(CLASSES)[y_q]
    pooled = cf.consensus(query, weights=fitted.weights)
    f1_modest = macro_f1_true_labels(truth, query[0].labels)
    assert macro_f1_true_labels(truth, pooled.labels) < f1_modest
    w = fitted_weights(query, held)
    assert w is not None and w.weights == [1.0, 0.0]
    assert w.detail["chosen"] == "modest"
    scores = w.detail["heldout_macro_f1"]
    assert scores["single"]["modest"] > scores["pooled"]
    np.testing.assert_allclose(w.detail["fitted_weights"], fitted.weights)
    c = cf.consensus(query, ["modest", "sure"], weights=w.weights, weighting=w)
    np.testing.assert_array_equal(c.labels, query[0].labels)
    assert macro_f1_true_labels(truth, c.labels) == f1_modest
    # both models still count in the agreement: the sure model disagrees on the B cells
    b_cells = y_q == CLASSES.index(B)
    np.testing.assert_allclose(c.obs_columns["consensus_agreement"][b_cells], 0.5)
    assert c.summary()["consensus"]["weighting"]["chosen"] == "modest"


def test_a_pool_that_calls_the_heldout_cells_as_well_is_kept() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 4, 300)
    cells = key_hashes(np.asarray([f"c{i}|1" for i in range(len(y))]))
    p = peaked(y, rng, 0.9).astype(np.float32)
    same = [HeldOutPredictions(cells, y, p, "x"), HeldOutPredictions(cells, y, p, "x")]
    q = peaked(y, rng, 0.9)
    w = fitted_weights([result(q, "a"), result(q, "b")], same)
    assert w is not None and w.detail["chosen"] == "pooled"  # a tie keeps the pool
    assert w.weights == w.detail["fitted_weights"]


def test_heldout_macro_f1_is_the_consensus_macro_f1_on_those_cells() -> None:
    query, held, _ = heldout_case(5)
    pool = heldout_pool(query, held)
    assert pool is not None
    as_results = [result(h.probabilities, name) for h, name in zip(held, "ab", strict=True)]
    truth = np.asarray(CLASSES)[held[0].y]
    for w in ([1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.2, 0.8]):
        labels = cf.consensus(as_results, weights=w).labels
        assert pool.macro_f1(w) == pytest.approx(macro_f1_true_labels(truth, labels))


def test_real_models_are_weighed_by_the_calls_on_their_heldout_cells(
    pbmc_split, pbmc_models
) -> None:
    _, query = pbmc_split
    annotators = [load_model(pbmc_models[n]) for n in ("logreg", "knn")]
    res = cf.annotate(query[:300].copy(), annotators)
    weighting = res.summary()["consensus"]["weighting"]
    assert weighting["method"] == "fitted_on_heldout_cells"
    scores = weighting["heldout_macro_f1"]
    # each model alone, recomputed through the public consensus on the shared held-out cells
    held = [a.heldout_predictions for a in annotators]
    assert held[0] is not None and held[1] is not None
    common = np.intersect1d(held[0].cells, held[1].cells)
    assert len(common) == weighting["n_cells"] > 100
    alone = []
    for a, h in zip(annotators, held, strict=True):
        assert h is not None
        rows = np.asarray([np.nonzero(h.cells == c)[0][0] for c in common])
        alone.append(result(h.probabilities[rows], a.name, list(a.manifest.classes)))
        truth = np.asarray(a.manifest.classes)[h.y[rows]]
    for i, name in enumerate(("logreg", "knn")):
        labels = cf.consensus(alone, weights=np.eye(2)[i]).labels
        assert scores["single"][name] == pytest.approx(macro_f1_true_labels(truth, labels))
    pooled = cf.consensus(alone, weights=weighting["fitted_weights"]).labels
    assert scores["pooled"] == pytest.approx(macro_f1_true_labels(truth, pooled))
    # the weights used are those of the best of the pool and each model alone on those cells
    chosen = weighting["chosen"]
    best = max(scores["pooled"], *scores["single"].values())
    assert (scores["pooled"] if chosen == "pooled" else scores["single"][chosen]) == best
    used = list(res.summary()["consensus"]["weights"].values())
    expected = (
        weighting["fitted_weights"]
        if chosen == "pooled"
        else np.eye(2)[["logreg", "knn"].index(chosen)]
    )
    np.testing.assert_allclose(used, np.asarray(expected) / np.sum(expected), atol=1e-6)
