"""The foundation-model families (human vocabularies) see mouse data through the same ortholog step.

Real PBMC 3k cells are turned into mouse data (1:1 orthologs, mouse symbols). Each family gets a
tiny random checkpoint over human genes in its published layout. ``cellfoundry embed`` on the mouse
file must give the embeddings of the same cells in human genes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellfoundry.cli import main
from cellfoundry.data.genes import gene_table
from cellfoundry.models.foundation import foundation_class, load_foundation
from tests.species_data import mouse_columns

FAMILIES = ["geneformer", "scgpt", "scimilarity"]


@pytest.fixture(autouse=True)
def _home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CELLFOUNDRY_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def human_and_mouse(pbmc3k: ad.AnnData, shared_dir: Path) -> tuple[ad.AnnData, ad.AnnData]:
    """60 real cells over the genes with a 1:1 mouse ortholog (and a GENCODE v44 ID that matches)."""
    cells = pbmc3k[np.linspace(0, pbmc3k.n_obs - 1, 60).astype(int)]
    keep, mouse_names = mouse_columns(cells, shared_dir, symbol_column="gene_symbols")
    table = gene_table()
    syms = cells.var["gene_symbols"].astype(str).to_numpy()[keep]
    ok = np.array(
        [table.symbol_to_id.get(s) == g for s, g in zip(syms, cells.var_names[keep], strict=True)]
    )
    keep, mouse_names = keep[ok], [m for m, o in zip(mouse_names, ok, strict=True) if o]
    human = ad.AnnData(
        X=cells.X[:, keep].copy(),
        obs=cells.obs.copy(),
        var=pd.DataFrame({"gene_symbols": syms[ok]}, index=cells.var_names[keep]),
    )
    mouse = ad.AnnData(X=human.X.copy(), obs=human.obs.copy(), var=pd.DataFrame(index=mouse_names))
    return human, mouse


def test_embed_mouse_data_equals_embedding_the_human_cells(
    human_and_mouse: tuple[ad.AnnData, ad.AnnData],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    human, mouse = human_and_mouse
    data = tmp_path / "mouse.h5ad"
    mouse.write_h5ad(data)
    # the checkpoint's genes: the 300 most expressed human genes (IDs for Geneformer)
    top = np.argsort(-np.asarray(human.X.sum(axis=0)).ravel())[:300]
    for family in FAMILIES:
        cls = foundation_class(family)
        ids = list(human.var_names[top])
        genes = ids if family == "geneformer" else list(human.var["gene_symbols"].iloc[top])
        model = cls.from_random(genes, seed=0)
        saver: Callable[[Path], Path] = getattr(model, "save", None) or model.save_pretrained
        folder = saver(tmp_path / family) or tmp_path / family
        out = tmp_path / f"{family}.h5ad"
        args = ["embed", str(data), "--model", str(folder), "--out", str(out)]
        monkeypatch.setattr(sys, "argv", ["cellfoundry", *args, "--batch-size", "16"])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = int(exc.code or 0)
        _, err = capsys.readouterr()
        assert code == 0, err
        got = ad.read_h5ad(out).obsm[f"X_{family}"]
        ref = load_foundation(folder).embed(human, batch_size=16)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5, err_msg=family)
        assert np.abs(ref).sum() > 0
