"""A sharded service annotation keeps the per-cell out-of-reference columns and their summary.

In process (SQLite, local queue) with the local worker loop driven by the test; the library's
``cellfoundry.annotate`` on the same data and model is the reference.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

import cellfoundry
from cellfoundry.config import Settings
from cellfoundry.demo import demo_dataset
from cellfoundry.models.registry import load_model
from cellfoundry.store.tables import Run
from tests.service.test_service_layout import _run, uploaded


def _query(demo_model_dir: Path) -> ad.AnnData:
    """Cells like the training data followed by shuffled-count cells far from it."""
    ref = demo_dataset()
    raw = ref.raw.to_adata() if ref.raw is not None else ref
    genes = (demo_model_dir / "genes.txt").read_text().split()
    raw = raw[:, [g for g in genes if g in raw.var_names]]
    x = sp.csr_matrix(raw.X).toarray().astype(np.float32)[:200]
    rng = np.random.default_rng(7)
    far = rng.permuted(x[:120], axis=1)  # gene profiles not seen in any training cell
    obs = pd.DataFrame(index=[f"c{i}" for i in range(len(x) + len(far))])
    return ad.AnnData(X=sp.csr_matrix(np.vstack([x, far])), obs=obs, var=raw.var[[]].copy())


def written_query(tmp_path: Path, demo_model_dir: Path) -> tuple[ad.AnnData, Path]:
    """``_query`` and the h5ad file it was written to."""
    query = _query(demo_model_dir)
    path = tmp_path / "cells.h5ad"
    query.write_h5ad(path)
    return query, path


def test_sharded_run_summary_and_cells_match_the_library(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    query, path = written_query(tmp_path, demo_model_dir)
    expected = cellfoundry.annotate(ad.read_h5ad(path), load_model(demo_model_dir))
    oor = np.asarray(expected.obs_columns["out_of_reference"], dtype=bool)
    assert 0 < oor.sum() < len(oor)  # both kinds of cells: the share is informative

    settings = Settings(
        home=tmp_path / "home", demo_model=False, local_workers=0, shard_size=90
    )  # 4 shards, merged
    with uploaded(settings, demo_model_dir, path) as (c, platform, model, ds):
        rid = _run(c, settings, ds, model, "annotation", {"layout": "none"})
        with platform.db.session() as s:
            run = s.get(Run, rid)
            assert run is not None and run.n_shards >= 2

        res = c.get(f"/results/{rid}", params={"page_size": 5000}).json()
        got = res["summary"]["out_of_reference"]
        assert got["share"] == float(oor.mean())
        assert got["n_cells"] == int(oor.sum())
        labels = np.asarray(expected.labels, dtype=str)
        for t, row in got["by_predicted_type"].items():
            assert row["share"] == float(oor[labels == t].mean())
            assert row["n_cells"] == int((labels == t).sum())
        assert got["threshold"] == expected.findings["reference_distance"]["threshold"]
        # from the shards' summed counts (test_service_evidence compares every figure)
        assert (
            res["summary"]["marker_overlap"]["by_predicted_type"].keys()
            == expected.findings["marker_overlap"]["by_predicted_type"].keys()
        )

        items = res["cells"]["items"]
        assert [i["cell"] for i in items] == list(query.obs_names)
        np.testing.assert_allclose(
            [i["reference_distance"] for i in items],
            expected.obs_columns["reference_distance"],
            atol=1e-5,
        )
        assert [i["out_of_reference"] for i in items] == oor.tolist()
