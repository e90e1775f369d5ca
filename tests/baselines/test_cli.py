"""The CLI contract used by outside checks: inspect, train, annotate, models, demo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anndata as ad
import pandas as pd
import pytest

from tests.conftest import make_counts_adata

CLI = [sys.executable, "-m", "cellfoundry.cli"]


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    ref = make_counts_adata(n_cells=300, n_genes=100, n_types=3, seed=5)
    qry = make_counts_adata(n_cells=80, n_genes=100, n_types=3, seed=6)
    ref.write_h5ad(d / "ref.h5ad")
    qry.write_h5ad(d / "query.h5ad")
    return {"dir": d, "ref": d / "ref.h5ad", "query": d / "query.h5ad"}


def test_inspect_prints_report_and_json(files) -> None:
    out = run("inspect", str(files["ref"])).stdout
    assert "raw_counts" in out and "status: OK" in out
    rep = json.loads(run("inspect", str(files["ref"]), "--json").stdout)
    assert rep["n_cells"] == 300 and rep["chosen"]["counts"] == "X" and rep["ok"] is True


def test_train_then_annotate_writes_obs_columns_and_csv(files) -> None:
    model = files["dir"] / "model"
    out = run(
        "train",
        str(files["ref"]),
        "--label-key",
        "cell_type",
        "--model",
        "logreg",
        "--out",
        str(model),
    )
    assert "held-out accuracy" in out.stdout
    assert (model / "manifest.json").is_file()
    res = run(
        "annotate",
        str(files["query"]),
        "--model",
        str(model),
        "--out",
        str(files["dir"] / "o.h5ad"),
        "--csv",
        str(files["dir"] / "o.csv"),
    )
    summary = json.loads(res.stdout)
    assert summary["n_cells"] == 80
    a = ad.read_h5ad(files["dir"] / "o.h5ad")
    for col in ("predicted_cell_type", "prediction_confidence", "prediction_unknown"):
        assert col in a.obs.columns
    assert a.obsm["cellfoundry_probabilities"].shape == (80, 3)
    assert a.X.shape == (80, 100)  # the input data travels with the predictions
    csv = pd.read_csv(files["dir"] / "o.csv", index_col=0)
    assert list(csv.index) == list(a.obs_names)
    assert (
        csv["predicted_cell_type"].to_numpy() == a.obs["predicted_cell_type"].astype(str).to_numpy()
    ).all()


def test_user_errors_exit_2_with_a_fix(files) -> None:
    bad = run(
        "train",
        str(files["ref"]),
        "--label-key",
        "nope",
        "--out",
        str(files["dir"] / "m2"),
        ok=False,
    )
    assert bad.returncode == 2
    assert "obs has no column 'nope'" in bad.stderr and "fix:" in bad.stderr
    nomodel = run(
        "annotate", str(files["query"]), "--model", str(files["dir"]), "--out", "x.h5ad", ok=False
    )
    assert nomodel.returncode == 2 and "manifest.json" in nomodel.stderr


def test_models_lists_baselines() -> None:
    out = run("models").stdout
    assert "logreg" in out and "knn" in out


def test_demo_runs_offline() -> None:
    out = run("demo").stdout
    assert "pbmc68k_reduced" in out and "accuracy" in out and "most confused" in out
