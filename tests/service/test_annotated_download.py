"""GET /download?format=h5ad of an .h5ad dataset: the upload's bytes copied, the outputs written in.

The matrices are never decoded (a 5 GB upload would otherwise be loaded into the API process):
X, layers and the dataset's own uns entries come back exactly as uploaded, and obs / obsm / uns
carry the run's stored predictions.
"""

from __future__ import annotations

import io
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd

from cellfoundry.config import Settings
from tests.service.test_service_layout import _run, dataset, uploaded

__all__ = ["dataset"]  # the fixture


def test_annotated_h5ad_keeps_the_uploaded_matrices(
    tmp_path: Path, demo_model_dir: Path, dataset: ad.AnnData
) -> None:
    dataset.layers["counts"] = dataset.X.copy()
    dataset.uns["lab_notes"] = {"batch": "b7"}
    src = tmp_path / "cells.h5ad"
    dataset.write_h5ad(src, compression="gzip")
    settings = Settings(home=tmp_path / "home", demo_model=False, local_workers=0, shard_size=100)
    with uploaded(settings, demo_model_dir, src) as (c, _platform, model, ds):
        rid = _run(c, settings, ds, model, "annotation", {"layout": "none"})
        r = c.get(f"/download/{rid}", params={"format": "h5ad"})
        assert r.status_code == 200
        out = tmp_path / "annotated.h5ad"
        out.write_bytes(r.content)
        pred = pd.read_parquet(
            io.BytesIO(c.get(f"/download/{rid}", params={"format": "parquet"}).content)
        )
    back = ad.read_h5ad(out)
    assert list(back.obs_names) == list(dataset.obs_names)
    assert (back.X != dataset.X).nnz == 0 and (back.layers["counts"] != dataset.X).nnz == 0
    assert back.uns["lab_notes"] == {"batch": "b7"}
    assert back.obs["group"].astype(str).tolist() == dataset.obs["group"].astype(str).tolist()
    # the run's stored calls, in cell order
    assert (
        back.obs["predicted_cell_type"].astype(str).to_numpy()
        == pred["predicted_cell_type"].astype(str).to_numpy()
    ).all()
    np.testing.assert_allclose(
        back.obs["prediction_confidence"].to_numpy(), pred["prediction_confidence"], rtol=1e-6
    )
    assert back.obsm["cellfoundry_probabilities"].shape[0] == dataset.n_obs
    assert back.uns["cellfoundry"]["run_id"] == rid
    # the matrix datasets are the uploaded ones, storage settings (gzip) included
    with h5py.File(src) as a, h5py.File(out) as b:
        for name in ("X/data", "X/indices", "X/indptr", "layers/counts/data"):
            assert a[name].compression == b[name].compression == "gzip"
            assert np.array_equal(a[name][()], b[name][()])
