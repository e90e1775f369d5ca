"""evaluate() writes every report file, and every number agrees with the stored predictions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cellfoundry.evaluation.compare import SUMMARY_COLUMNS, evaluate, uncalibrated
from tests.conftest import make_counts_adata


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    adata = make_counts_adata(220, 100, 3, seed=7)
    rep = evaluate(
        adata,
        "cell_type",
        "scimilarity",
        seeds=2,
        out=out,
        methods=("logreg", "head", "lora"),
        epochs=3,
        finetune_options={"scratch_hidden": [16, 16], "scratch_latent": 8, "batch_size": 32},
    )
    return out, rep


def test_every_listed_file_is_written(report) -> None:
    out, _ = report
    expected = [
        "summary.csv",
        "misclassified_top5.csv",
        "per_class_report.csv",
        "report.json",
        "report.html",
    ]
    for key in ("logreg-logreg", "scimilarity-head", "scimilarity-lora"):
        expected += [
            f"confusion_{key}.csv",
            f"confusion_{key}_counts.png",
            f"confusion_{key}_normalized.png",
            f"reliability_{key}.png",
        ]
    for key in ("scimilarity-head", "scimilarity-lora"):
        expected += [f"umap_{key}_truth.png", f"umap_{key}_prediction.png"]
    for name in expected:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    preds = sorted(p.name for p in (out / "predictions").iterdir())
    assert len(preds) == 6 and "scimilarity_lora_seed1.csv" in preds
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 * 3 + 2 * 2
    assert "src='confusion" not in html  # self-contained: no file references
    assert "RANDOMLY INITIALISED" in html


def test_summary_numbers_match_the_stored_predictions(report) -> None:
    out, _rep = report
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS
    ref_rows = summary[summary.model == "reference"]
    assert sorted(ref_rows.method) == ["chance", "chance", "majority", "majority"]
    summary = summary[summary.model != "reference"]
    assert len(summary) == 6 and set(summary["seed"]) == {0, 1}
    for row in ref_rows.itertuples():
        truth = pd.read_csv(out / "predictions" / f"logreg_logreg_seed{row.seed}.csv")["true"]
        share = truth.value_counts(normalize=True)
        assert row.accuracy == pytest.approx(
            share.max() if row.method == "majority" else (share**2).sum()
        )
    for row in summary.itertuples():
        df = pd.read_csv(out / "predictions" / f"{row.model}_{row.method}_seed{row.seed}.csv")
        assert row.accuracy == pytest.approx(
            float((df["true"] == df["predicted"]).mean()), abs=1e-12
        )
        probs = df[[c for c in df.columns if c.startswith("p::")]].to_numpy()
        classes = [c[3:] for c in df.columns if c.startswith("p::")]
        assert (np.asarray(classes)[probs.argmax(axis=1)] == df["predicted"].to_numpy()).all()
        if row.method != "logreg":
            assert (
                row.trainable_parameters > 0
                and np.isfinite(row.triplet_loss)
                and np.isfinite(row.input_reconstruction_mse)  # the SCimilarity decoder
                and np.isnan(row.base_embedding_mse)  # a measure defined differently: not mixed in
            )
        called = df["called"].to_numpy(bool)
        assert row.coverage == pytest.approx(called.mean())
        assert row.called_accuracy == pytest.approx(
            float((df["true"] == df["predicted"])[called].mean())
        )
    lora = summary[summary.method == "lora"]
    head = summary[summary.method == "head"]
    assert (lora.trainable_parameters.to_numpy() > head.trainable_parameters.to_numpy()).all()
    # the same split for every method of a seed
    cells = {
        p.name: pd.read_csv(p)["cell"].tolist() for p in (out / "predictions").glob("*seed0.csv")
    }
    assert len({tuple(v) for v in cells.values()}) == 1
    js = json.loads((out / "report.json").read_text())
    assert js["summary"] == json.loads(pd.read_csv(out / "summary.csv").to_json(orient="records"))
    assert js["context"]["macro_f1_over"] == "true labels"
    assert all(
        r["ontology"]["credit_rule"] == js["context"]["ontology_credit_rule"] for r in js["runs"]
    )
    # baselines and fine-tunes of one seed fit on the very same cells (their own records)
    for seed in (0, 1):
        hashes = {r["train_cells_sha256"] for r in js["runs"] if r["seed"] == seed}
        assert len(hashes) == 1 and "" not in hashes
    ms = {(r["model"], r["method"]): r for r in js["mean_std"]}
    assert ms[("logreg", "logreg")]["accuracy_mean"] == pytest.approx(
        summary[summary.method == "logreg"].accuracy.mean()
    )


def test_top5_confusions_and_per_class_are_consistent(report) -> None:
    out, _ = report
    top = pd.read_csv(out / "misclassified_top5.csv")
    assert list(top.columns) == ["model", "method", "true", "predicted", "count", "share_of_true"]
    for (model, method), grp in top.groupby(["model", "method"]):
        assert len(grp) <= 5
        frames = [
            pd.read_csv(p)
            for p in sorted((out / "predictions").glob(f"{model}_{method}_seed*.csv"))
        ]
        df = pd.concat(frames)
        for r in grp.itertuples():
            n = int(((df["true"] == r.true) & (df["predicted"] == r.predicted)).sum())
            assert n == r.count
            assert r.share_of_true == pytest.approx(n / int((df["true"] == r.true).sum()))
    pcr = pd.read_csv(out / "per_class_report.csv")
    assert {"precision", "recall", "f1", "support"} <= set(pcr.columns)
    assert (pcr.groupby(["model", "method"])["support"].sum() == 2 * len(frames[0])).all()


def test_uncalibrated_inverts_temperature() -> None:
    from cellfoundry.stats.calibration import apply_temperature

    z = np.random.default_rng(0).normal(size=(10, 4)) * 3
    assert np.allclose(
        uncalibrated(apply_temperature(z, 2.5), 2.5), apply_temperature(z, 1.0), atol=1e-5
    )
