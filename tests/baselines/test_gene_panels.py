"""Partial gene panels: missing genes are unobserved, query-aware refit, refusals, reporting."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import cellfoundry as cf
from cellfoundry.data.prepare import features
from cellfoundry.errors import CoverageError
from cellfoundry.models.baselines.refit import clear_refit_cache
from cellfoundry.models.registry import load_model
from tests.conftest import make_counts_adata

# ---------------------------------------------------------------- absent features, exactly


@pytest.mark.parametrize("family", ["logreg", "knn"])
def test_absent_gene_equals_gene_at_reference_mean(family: str, tmp_path: Path) -> None:
    """An absent model gene gives the same answer as that gene observed at the reference mean."""
    ref = make_counts_adata(n_cells=300, n_genes=150, n_types=3, seed=3)
    qry = make_counts_adata(n_cells=60, n_genes=150, n_types=3, seed=4)
    cf.train(ref, "cell_type", family, out=tmp_path / "m", n_features=None)
    model = load_model(tmp_path / "m")
    drop = np.arange(0, 150, 3)  # a third of the genes
    part = qry[:, np.setdiff1d(np.arange(150), drop)].copy()
    plan = model.plan(part, min_coverage=0.0)  # type: ignore[attr-defined]
    assert plan.present.sum() == 100 and not plan.present[drop].any()
    x_missing = features(part, plan)
    # the same cells with the absent genes filled in at the reference mean (log space)
    filled = x_missing.toarray()
    filled[:, drop] = model.state["mean"][drop]  # type: ignore[attr-defined]
    got = model.logits_or_proba(x_missing, plan.present)  # type: ignore[attr-defined]
    want = model.logits_or_proba(sp.csr_matrix(filled))  # type: ignore[attr-defined]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # and the library path does exactly that
    res = cf.annotate(part, tmp_path / "m")
    np.testing.assert_allclose(res.probabilities, got, rtol=1e-5, atol=1e-6)
    assert res.gene_panel_mode == "unobserved"
    assert res.gene_panel is not None and res.gene_panel.n_present == 100


def test_standardised_values_are_clipped_at_ten(tmp_path: Path) -> None:
    ref = make_counts_adata(n_cells=300, n_genes=150, n_types=3, seed=3)
    cf.train(ref, "cell_type", "logreg", out=tmp_path / "m", n_features=None)
    model = load_model(tmp_path / "m")
    st = model.state  # type: ignore[attr-defined]
    qry = make_counts_adata(n_cells=5, n_genes=150, n_types=3, seed=9)
    x = features(qry, model.plan(qry)).toarray()  # type: ignore[attr-defined]
    j = int(np.argmax(st["mean"] / st["scale"] < 1))  # a gene where +10 sd is reachable
    big, bigger = x.copy(), x.copy()
    big[:, j] = st["mean"][j] + 10 * st["scale"][j]
    bigger[:, j] = st["mean"][j] + 1000 * st["scale"][j]
    np.testing.assert_allclose(
        model.logits_or_proba(sp.csr_matrix(big)),  # type: ignore[attr-defined]
        model.logits_or_proba(sp.csr_matrix(bigger)),  # type: ignore[attr-defined]
        rtol=1e-4,
        atol=1e-5,
    )


# ---------------------------------------------------------------- refusals


def test_refusals_follow_five_percent_and_hundred_genes(tmp_path: Path) -> None:
    ref = make_counts_adata(n_cells=240, n_genes=3000, n_types=3, seed=11)
    qry = make_counts_adata(n_cells=40, n_genes=3000, n_types=3, seed=12)
    cf.train(ref, "cell_type", "logreg", out=tmp_path / "big", n_features=None)
    with pytest.raises(CoverageError) as err:  # 140 of 3000 genes = 4.7 %
        cf.annotate(qry[:, :140].copy(), tmp_path / "big")
    assert "reference" in str(err.value.hint)
    ok = cf.annotate(qry[:, :160].copy(), tmp_path / "big")  # 5.3 %: answered
    assert ok.gene_panel_mode == "unobserved" and ok.gene_panel is not None
    assert "give the labelled reference" in " ".join(ok.warnings)
    cf.train(ref[:, :1000].copy(), "cell_type", "logreg", out=tmp_path / "small", n_features=None)
    with pytest.raises(CoverageError):  # 90 genes = 9 % but fewer than 100
        cf.annotate(qry[:, :90].copy(), tmp_path / "small")
    assert cf.annotate(qry[:, :110].copy(), tmp_path / "small").gene_panel_mode == "unobserved"
    # a refit needs 100 genes shared by reference and query
    with pytest.raises(CoverageError, match="shared by the reference and the query") as err2:
        cf.annotate(qry[:, :90].copy(), tmp_path / "small", reference=ref)
    assert err2.value.hint


# ---------------------------------------------------------------- manifest reference


def test_manifest_reference_is_used_only_while_unchanged(tmp_path: Path) -> None:
    clear_refit_cache()
    ref = make_counts_adata(n_cells=300, n_genes=400, n_types=3, seed=21)
    qry = make_counts_adata(n_cells=80, n_genes=400, n_types=3, seed=22)[:, :200].copy()
    path = tmp_path / "ref.h5ad"
    ref.write_h5ad(path)
    model = cf.train(path, "cell_type", "logreg", out=tmp_path / "m", n_features=None)
    rec = model.manifest.training["reference_file"]
    assert rec["path"] == str(path.resolve()) and len(rec["sha256"]) == 64
    res = cf.annotate(qry, tmp_path / "m")
    assert res.gene_panel is not None and res.gene_panel.mode == "refit"
    assert res.gene_panel.n_shared_genes == 200 and str(path.resolve()) in str(
        res.gene_panel.reference
    )
    uns = res.to_adata(qry.copy()).uns["cellfoundry"]
    assert uns["gene_panel_mode"] == "refit" and uns["gene_panel"]["n_shared_genes"] == 200
    assert res.summary()["gene_panel_mode"] == "refit"
    # above the refit level nothing is refit
    assert cf.annotate(qry, tmp_path / "m", refit_below=0.4).gene_panel_mode == "unobserved"
    # the file changes: it is not used any more, and the result says why
    make_counts_adata(n_cells=300, n_genes=400, n_types=3, seed=23).write_h5ad(path)
    changed = cf.annotate(qry, tmp_path / "m")
    assert changed.gene_panel_mode == "unobserved"
    assert any("has changed" in w for w in changed.warnings)
    path.unlink()
    gone = cf.annotate(qry, tmp_path / "m")
    assert gone.gene_panel_mode == "unobserved"
    assert any("no longer there" in w for w in gone.warnings)
    # a reference given explicitly is always used
    given = cf.annotate(qry, tmp_path / "m", reference=ref)
    assert given.gene_panel_mode == "refit"


def test_cli_reference_flag_reports_the_mode(tmp_path: Path) -> None:
    ref = make_counts_adata(n_cells=300, n_genes=400, n_types=3, seed=31)
    qry = make_counts_adata(n_cells=50, n_genes=400, n_types=3, seed=32)[:, :150].copy()
    cf.train(
        ref, "cell_type", "logreg", out=tmp_path / "m", n_features=None
    )  # in memory: no record
    ref.write_h5ad(tmp_path / "ref.h5ad")
    qry.write_h5ad(tmp_path / "q.h5ad")
    cli = [sys.executable, "-m", "cellfoundry.cli", "annotate", str(tmp_path / "q.h5ad")]
    cli += ["--model", str(tmp_path / "m"), "--csv", str(tmp_path / "o.csv")]
    plain = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["gene_panel_mode"] == "unobserved"
    assert "treated as unobserved" in plain.stderr
    refit = subprocess.run(
        [*cli, "--reference", str(tmp_path / "ref.h5ad")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refit.returncode == 0, refit.stderr
    summary = json.loads(refit.stdout)
    assert summary["gene_panel_mode"] == "refit" and summary["gene_panel"]["n_shared_genes"] == 150
    assert "refit on 150" in refit.stderr


# ---------------------------------------------------------------- real data: pbmc3k panel


def test_pbmc3k_top_1267_gene_panel(pbmc3k: ad.AnnData, tmp_path: Path) -> None:
    """The issue's case: a query that keeps only its 1,267 most expressed genes."""
    clear_refit_cache()
    y = pbmc3k.obs["cell_type"].astype(str).to_numpy()
    tr, te = train_test_split(np.arange(pbmc3k.n_obs), test_size=0.25, stratify=y, random_state=0)
    ref_path = tmp_path / "ref.h5ad"
    pbmc3k[tr].copy().write_h5ad(ref_path)
    cf.train(ref_path, "cell_type", "logreg", out=tmp_path / "m")
    q = pbmc3k[te]
    top = np.sort(np.argsort(-np.asarray(q.X.sum(axis=0)).ravel())[:1267])
    panel = q[:, top].copy()
    truth = y[te]

    unobserved = cf.annotate(panel, tmp_path / "m", refit_below=0.0)
    refit = cf.annotate(panel, tmp_path / "m")  # the manifest's reference file is unchanged
    assert unobserved.gene_panel_mode == "unobserved" and refit.gene_panel_mode == "refit"
    assert refit.gene_panel is not None and refit.gene_panel.n_shared_genes == 1267

    # missing genes read as zero expression (the old behaviour), in the same run
    model = load_model(tmp_path / "m")
    plan = model.plan(panel, min_coverage=0.0)  # type: ignore[attr-defined]
    as_zero = model.logits_or_proba(features(panel, plan))  # type: ignore[attr-defined]
    old = np.asarray(model.classes)[as_zero.argmax(axis=1)]

    def f1(pred: np.ndarray) -> float:
        return float(f1_score(truth, pred, average="macro"))

    majority = DummyClassifier(strategy="most_frequent").fit(y[tr], y[tr]).predict(y[te])
    # scikit-learn on exactly the query's genes: standardised log1p-CP10k + logistic regression
    counts = pbmc3k.X[:, top].toarray()
    logn = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)
    sc = StandardScaler().fit(logn[tr])
    sk = LogisticRegression(C=0.3, max_iter=2000, class_weight="balanced")
    sk_pred = sk.fit(sc.transform(logn[tr]), y[tr]).predict(sc.transform(logn[te]))

    f_unobs, f_refit, f_old = f1(unobserved.labels), f1(refit.labels), f1(old)
    assert f_unobs > f1(majority) + 0.4, (f_unobs, f1(majority))
    assert f_unobs > f_old + 0.03, (f_unobs, f_old)
    assert f_refit >= f_unobs - 0.02, (f_refit, f_unobs)
    assert f_refit >= f1(sk_pred) - 0.05, (f_refit, f1(sk_pred))


def test_reference_given_in_memory_is_not_cached(tmp_path: Path) -> None:
    """Refits from an in-memory reference are recomputed (no fingerprint to key a cache on)."""
    ref = make_counts_adata(n_cells=300, n_genes=300, n_types=3, seed=41)
    qry = make_counts_adata(n_cells=40, n_genes=300, n_types=3, seed=42)[:, :150].copy()
    cf.train(ref, "cell_type", "logreg", out=tmp_path / "m", n_features=None)
    a = cf.annotate(qry, tmp_path / "m", reference=ref)
    other = ref.copy()
    other.obs["cell_type"] = other.obs["cell_type"].cat.rename_categories(lambda c: f"x_{c}")
    b = cf.annotate(qry, tmp_path / "m", reference=other)
    assert a.gene_panel_mode == b.gene_panel_mode == "refit"
    assert all(c.startswith("x_") for c in b.classes) and not any(
        c.startswith("x_") for c in a.classes
    )
    shutil.rmtree(tmp_path / "m")


def test_platform_trained_baseline_keeps_its_reference(tmp_path: Path) -> None:
    """A baseline trained by the service's finetune task refits on its stored dataset later."""
    from cellfoundry.jobs.applications import FinetuneParams, TaskContext, finetune_task

    clear_refit_cache()
    ref = make_counts_adata(n_cells=300, n_genes=400, n_types=3, seed=51)
    stored = tmp_path / "datasets" / "ref.h5ad"
    stored.parent.mkdir()
    ref.write_h5ad(stored)
    ctx = TaskContext(
        run_id="r1",
        dataset_path=stored,
        model_dir=tmp_path / "unused",
        model_family="logreg",
        params=FinetuneParams(label_key="cell_type", options={"n_features": None}),
        out_dir=tmp_path / "run",
        report=lambda _msg, _pct: None,
    )
    finetune_task(ctx)
    qry = make_counts_adata(n_cells=40, n_genes=400, n_types=3, seed=52)[:, :180].copy()
    res = cf.annotate(qry, tmp_path / "run" / "model")
    assert res.gene_panel is not None and res.gene_panel.mode == "refit"
    assert str(stored.resolve()) in str(res.gene_panel.reference)


# ---------------------------------------------------------------- refit normalisation


def test_refit_normalises_the_reference_over_the_shared_genes(tmp_path: Path) -> None:
    """A count query is normalised over its own genes, so the refit's reference is too: per cell,
    counts of the shared genes scaled to 10,000 in total, then natural log1p (numpy reference)."""
    from cellfoundry.models.baselines.refit import predict_with_panel

    clear_refit_cache()
    ref = make_counts_adata(n_cells=300, n_genes=400, n_types=3, seed=61)
    cf.train(ref, "cell_type", "logreg", out=tmp_path / "m", n_features=None)
    keep = np.sort(np.random.default_rng(0).choice(400, size=150, replace=False))
    qry = make_counts_adata(n_cells=60, n_genes=400, n_types=3, seed=62)[:, keep].copy()
    pred, fitted = predict_with_panel(load_model(tmp_path / "m"), qry, reference=ref)
    assert pred.gene_panel is not None and pred.gene_panel.mode == "refit"
    genes = list(fitted.genes)
    assert genes == list(qry.var_names)  # every shared gene, in reference order
    counts = ref[:, genes].X.toarray().astype(np.float64)
    want = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)
    st = fitted.state  # type: ignore[attr-defined]
    np.testing.assert_allclose(st["mean"], want.mean(axis=0), rtol=1e-4, atol=1e-5)
    sd = want.std(axis=0)
    sd[sd < 1e-8] = 1.0  # a gene constant in the reference is left unscaled
    np.testing.assert_allclose(st["scale"], sd, rtol=1e-3, atol=1e-5)
    # normalised over all 400 genes instead, the means would be lower by the dropped share
    over_all = ref.X.toarray().astype(np.float64)
    wrong = np.log1p(over_all / over_all.sum(axis=1, keepdims=True) * 1e4)[:, keep]
    assert np.abs(st["mean"] - wrong.mean(axis=0)).max() > 0.3
    # a log-normalised query: the reference keeps its own log-normalised values (over all genes)
    lognorm = qry.copy()
    x = lognorm.X.toarray()
    lognorm.X = sp.csr_matrix(np.log1p(x / x.sum(axis=1, keepdims=True) * 1e4))
    _, fitted_ln = predict_with_panel(load_model(tmp_path / "m"), lognorm, reference=ref)
    np.testing.assert_allclose(
        fitted_ln.state["mean"],  # type: ignore[attr-defined]
        wrong.mean(axis=0),
        rtol=1e-4,
        atol=1e-5,
    )


def test_refit_query_genes_the_reference_lacks_do_not_change_the_calls(tmp_path: Path) -> None:
    """A count query is normalised over the genes it shares with the reference (as the reference
    is): genes only the query has change no probability of a refit."""
    clear_refit_cache()
    ref = make_counts_adata(n_cells=300, n_genes=400, n_types=3, seed=71)
    cf.train(ref, "cell_type", "logreg", out=tmp_path / "m", n_features=None)
    shared = make_counts_adata(n_cells=50, n_genes=400, n_types=3, seed=72)[:, :150].copy()
    rng = np.random.default_rng(3)
    extra = rng.poisson(30.0, size=(50, 100)).astype(np.float32)  # more than the shared counts
    x = sp.hstack([shared.X, sp.csr_matrix(extra)], format="csr")
    wider = ad.AnnData(
        X=x,
        obs=shared.obs.copy(),
        var=pd.DataFrame(index=[*shared.var_names, *[f"ONLYQ{i}" for i in range(100)]]),
    )
    assert extra.sum() > shared.X.sum()  # normalised over all genes, the values would halve
    a = cf.annotate(shared, tmp_path / "m", reference=ref)
    b = cf.annotate(wider, tmp_path / "m", reference=ref)
    assert a.gene_panel_mode == b.gene_panel_mode == "refit"
    assert b.gene_panel is not None and b.gene_panel.n_shared_genes == 150
    np.testing.assert_allclose(b.probabilities, a.probabilities, rtol=1e-4, atol=1e-5)


def test_pbmc3k_half_panel_refit_genes_and_normalisation(
    pbmc3k: ad.AnnData, tmp_path: Path
) -> None:
    """On a real count panel (a random half of pbmc3k's genes) the refit trains on the model's
    n_features (2,000) most variable of the shared genes, each reference cell normalised over
    every shared gene (as the query is over its panel), and calls the cell types well."""
    from cellfoundry.models.baselines.refit import predict_with_panel

    y = pbmc3k.obs["cell_type"].astype(str).to_numpy()
    tr, te = train_test_split(np.arange(pbmc3k.n_obs), test_size=0.25, stratify=y, random_state=0)
    ref = pbmc3k[tr].copy()
    cf.train(ref, "cell_type", "logreg", out=tmp_path / "m")  # n_features=2000
    keep = np.sort(np.random.default_rng(0).choice(pbmc3k.n_vars, pbmc3k.n_vars // 2, False))
    panel = pbmc3k[te][:, keep].copy()
    clear_refit_cache()
    pred, fitted = predict_with_panel(load_model(tmp_path / "m"), panel, reference=ref)
    assert pred.gene_panel is not None and pred.gene_panel.mode == "refit"
    assert pred.gene_panel.n_shared_genes == len(keep)
    assert len(fitted.genes) == 2000 and set(fitted.genes) <= set(panel.var_names)
    assert fitted.manifest.training["refit_of"]["model"] == "logreg"
    # normalised over all shared genes, not over the 2,000 kept nor over all reference genes
    counts = ref[:, keep].X.toarray().astype(np.float64)
    lognorm = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)
    cols = panel.var_names.get_indexer(list(fitted.genes))
    st = fitted.state  # type: ignore[attr-defined]
    np.testing.assert_allclose(st["mean"], lognorm[:, cols].mean(axis=0), rtol=1e-3, atol=1e-5)
    labels = np.asarray(fitted.classes)[pred.probabilities.argmax(axis=1)]
    truth = y[te]
    majority = DummyClassifier(strategy="most_frequent").fit(y[tr], y[tr]).predict(truth)
    f_refit = float(f1_score(truth, labels, average="macro"))
    assert f_refit > float(f1_score(truth, majority, average="macro")) + 0.5, f_refit
    assert f_refit > 0.85, f_refit
