"""Values the validation could not see: it samples the first ``matrix.SAMPLE_ROWS`` cells, so a
negative value further down must still be refused, naming the cell and gene, never a crash
(before: scikit-learn's "Input X contains NaN" ValueError from the log of a negative count)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import cellfoundry as cf
from cellfoundry.data.matrix import SAMPLE_ROWS
from tests.conftest import make_counts_adata

N = SAMPLE_ROWS + 600
ROW = SAMPLE_ROWS + 321


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("m") / "model"
    ref = make_counts_adata(n_cells=400, n_genes=120, n_types=4, seed=1)
    cf.train(ref, "cell_type", "logreg", out=out, n_features=None)
    return out


def _query(tmp_path: Path, value: float) -> tuple[Path, str, str]:
    q = make_counts_adata(n_cells=N, n_genes=120, n_types=4, seed=2)
    x = sp.csr_matrix(q.X, dtype=np.float32)
    at = int(x.indptr[ROW])
    x.data[at] = value
    q.X = x
    path = tmp_path / "q.h5ad"
    q.write_h5ad(path)
    return path, str(q.obs_names[ROW]), str(q.var_names[int(x.indices[at])])


@pytest.mark.parametrize("value", [-50.0, -1.0])
@pytest.mark.parametrize("chunk_size", [500, 10_000])
def test_a_negative_count_past_the_sample_is_refused_with_its_cell(
    model_dir: Path, tmp_path: Path, value: float, chunk_size: int
) -> None:
    path, cell, gene = _query(tmp_path, value)
    assert cf.inspect(path).ok  # the sample holds no negative value
    with pytest.raises(cf.DataError) as err:
        cf.annotate(path, model_dir, chunk_size=chunk_size)
    e = err.value
    assert e.code == "negative_values"
    assert f"cell '{cell}' (row {ROW:,}), gene '{gene}'" in e.message and f"{value:g}" in e.message
    assert e.hint and "never negative" in e.hint


def test_the_cli_says_it_in_one_line(model_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    path, cell, _ = _query(tmp_path, -3.0)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cellfoundry.cli",
            "annotate",
            str(path),
            "--model",
            str(model_dir),
            "--out",
            str(tmp_path / "out.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"cell '{cell}'" in proc.stderr and "Traceback" not in proc.stderr
