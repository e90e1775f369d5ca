"""Mouse data through the service: the upload report, an annotation run and /predict map the
genes to human orthologs. The run gives the library's answer, and /predict gives the answer for
the human version of the same cell."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import cellfoundry as cf
from cellfoundry.errors import DataError
from cellfoundry.service.predict import Predictor
from tests.service.conftest import Stack, wait_run
from tests.species_data import mouse_columns

MODEL = "demo-logreg-pbmc68k"


@pytest.fixture(scope="module")
def cells(pbmc3k: ad.AnnData, shared_dir: Path) -> tuple[ad.AnnData, list[str]]:
    """300 real PBMC 3k cells over their genes with a 1:1 mouse ortholog, and the mouse names."""
    sub = pbmc3k[np.linspace(0, pbmc3k.n_obs - 1, 300).astype(int)].copy()
    keep, names = mouse_columns(sub, shared_dir, symbol_column="gene_symbols")
    human = ad.AnnData(X=sp.csr_matrix(sub.X[:, keep]), obs=sub.obs.copy())
    human.var_names = sub.var["gene_symbols"].astype(str).to_numpy()[keep]
    return human, names


@pytest.fixture(scope="module")
def mouse_h5ad(cells: tuple[ad.AnnData, list[str]], tmp_path_factory) -> Path:
    human, names = cells
    mouse = ad.AnnData(X=human.X.copy(), obs=human.obs.copy())
    mouse.var_names = names
    path = tmp_path_factory.mktemp("mouse") / "mouse_pbmc.h5ad"
    mouse.write_h5ad(path)
    return path


def _cell(a: ad.AnnData, i: int) -> dict[str, float]:
    row = sp.csr_matrix(a.X)[i]
    return {str(a.var_names[j]): float(v) for j, v in zip(row.indices, row.data, strict=True)}


def _top(out: dict) -> dict[str, float]:
    return {t["label"]: t["probability"] for t in out["predictions"][0]["top_k"]}


def test_predictor_answers_mouse_cells_as_their_human_version(
    cells: tuple[ad.AnnData, list[str]], mouse_h5ad: Path, demo_model_dir: Path
) -> None:
    human, _ = cells
    mouse = ad.read_h5ad(mouse_h5ad)
    pred = Predictor()
    pred.add("m", cf.load_model(demo_model_dir))
    m = pred.models["m"]
    for i in range(5):
        out = pred.predict(m, [_cell(mouse, i)], top_k=10)
        assert out["species"] == "mouse" and out["orthology"]["n_genes_mapped"] > 0
        ref = pred.predict(m, [_cell(human, i)], top_k=10)
        assert ref["species"] == "human" and ref["orthology"] is None
        assert _top(out) == pytest.approx(_top(ref), rel=1e-5, abs=1e-6)
        assert out["coverage"] == ref["coverage"]
    with pytest.raises(DataError):
        pred.predict(m, [_cell(mouse, 0)], species="macaque")


def test_mouse_upload_run_and_predict(
    stack: Stack, cells: tuple[ad.AnnData, list[str]], mouse_h5ad: Path, demo_model_dir: Path
) -> None:
    c = stack.server.client()
    with open(mouse_h5ad, "rb") as fh:
        up = c.post("/upload", files={"file": (mouse_h5ad.name, fh, "application/octet-stream")})
    assert up.status_code == 200, up.text
    ds = up.json()
    rep = ds["report"]
    assert rep["species"] == "mouse" and rep["species_source"] == "detected"
    assert rep["orthology"]["n_genes_mapped"] == rep["n_genes"]
    ref = cf.annotate(mouse_h5ad, demo_model_dir)
    assert ref.coverage is not None
    cov = next(x for x in rep["coverage"] if MODEL in x["target"])
    assert cov["n_present"] == ref.coverage.n_present > 0  # coverage after the mapping
    job = {"dataset_id": ds["id"], "model_id": MODEL, "application_id": "annotation"}
    params = {"layout": "pca", "species": "mouse"}
    rid = c.post("/submit", json=job | {"params": params}).json()["run_id"]
    st = wait_run(c, rid, timeout=180)
    assert st["state"] == "succeeded", (st, stack.logs())
    summ = c.get(f"/results/{rid}").json()["summary"]
    assert summ["species"] == "mouse" and "human orthologs" in summ["species_mapping"]
    counts = summ["label_counts"]
    labels, n = np.unique(ref.display_labels, return_counts=True)
    assert counts == {str(k): int(v) for k, v in zip(labels, n, strict=True)}
    # /predict: the species field; the answer of the human version of the cell
    cell = _cell(ad.read_h5ad(mouse_h5ad), 0)
    body = {"expression": cell, "model_id": MODEL, "top_k": 10}
    p = c.post("/predict", json=body | {"species": "mouse"}).json()
    assert p["species"] == "mouse" and p["orthology"]["n_human_genes"] > 0
    h = c.post("/predict", json=body | {"expression": _cell(cells[0], 0)}).json()
    assert _top(p) == pytest.approx(_top(h), rel=1e-5, abs=1e-6)
    bad = c.post("/predict", json={"expression": cell, "species": "macaque"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "unknown_species"
