"""`cellfoundry embed` against stand-in families: detection, --family, obsm keys, order, errors, streaming."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellfoundry.cli import main
from cellfoundry.data.io import read_data
from tests.conftest import make_counts_adata
from tests.models.toy_foundation import TOYS, ToyModel, ToySCimilarity, install_toy_families


@pytest.fixture(autouse=True)
def _toys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_toy_families(monkeypatch)
    monkeypatch.setenv("CELLFOUNDRY_HOME", str(tmp_path / "home"))


def run_cli(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Run the real entry point (exit codes as a user sees them)."""
    monkeypatch.setattr(sys, "argv", ["cellfoundry", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _data(
    tmp_path: Path, *, ensembl: bool = False, n_cells: int = 120, seed: int = 0
) -> tuple[Path, ad.AnnData]:
    a = make_counts_adata(n_cells=n_cells, n_genes=80, seed=seed, symbols=not ensembl)
    a.obs_names = [
        f"c{i:04d}" for i in np.random.default_rng(seed).permutation(n_cells)
    ]  # unsorted names
    path = tmp_path / f"data_{'ens' if ensembl else 'sym'}_{seed}.h5ad"
    a.write_h5ad(path)
    return path, a


@pytest.mark.parametrize("family", ["geneformer", "scgpt", "scimilarity"])
def test_embed_writes_family_key_in_input_order(
    family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    toy = TOYS[family]
    data, a = _data(tmp_path, ensembl=toy.gene_key_kind == "ensembl")
    ckpt = toy.write(tmp_path / "ckpt", list(a.var_names[5:75]), dim=6)
    out = tmp_path / "out.h5ad"
    code, stdout, err = run_cli(
        ["embed", str(data), "--model", str(ckpt), "--out", str(out), "--batch-size", "16"],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    res = ad.read_h5ad(out)
    key = f"X_{family}"
    assert list(res.obsm.keys()) == [key]
    assert list(res.obs_names) == list(a.obs_names)
    expected = toy.load(ckpt).embed(a)
    np.testing.assert_allclose(res.obsm[key], expected, rtol=1e-6)
    # the input's data is carried over unchanged
    assert (res.X != a.X).nnz == 0
    assert res.obs["cell_type"].tolist() == a.obs["cell_type"].tolist()
    rec = res.uns["cellfoundry_embeddings"][key]
    assert (
        rec["family"] == family
        and rec["variant"] == "toy-v1"
        and rec["seed"] == 0
        and rec["batch_size"] == 16
    )
    assert json.loads(rec["load_report"])["ok"] is True
    summary = json.loads(stdout)
    assert summary["obsm_key"] == key and summary["n_cells"] == a.n_obs


def test_rows_follow_the_input_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data, a = _data(tmp_path)
    ckpt = ToySCimilarity.write(tmp_path / "ckpt", list(a.var_names))
    perm = np.random.default_rng(3).permutation(a.n_obs)
    shuffled = tmp_path / "shuffled.h5ad"
    a[perm].copy().write_h5ad(shuffled)
    for src, name in ((data, "o1.h5ad"), (shuffled, "o2.h5ad")):
        code, _, err = run_cli(
            ["embed", str(src), "--model", str(ckpt), "--out", str(tmp_path / name)],
            monkeypatch,
            capsys,
        )
        assert code == 0, err
    e1 = ad.read_h5ad(tmp_path / "o1.h5ad")
    e2 = ad.read_h5ad(tmp_path / "o2.h5ad")
    assert list(e2.obs_names) == list(a.obs_names[perm])
    np.testing.assert_allclose(e2.obsm["X_scimilarity"], e1.obsm["X_scimilarity"][perm], rtol=1e-6)
    # cells differ, so a wrong order would show
    assert not np.allclose(e1.obsm["X_scimilarity"], e2.obsm["X_scimilarity"])


def test_family_override_when_detection_is_ambiguous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data, a = _data(tmp_path)
    ckpt = TOYS["scgpt"].write(tmp_path / "ckpt", list(a.var_names))
    TOYS["scimilarity"].write(ckpt, list(a.var_names))  # the folder now matches two layouts
    out = tmp_path / "out.h5ad"
    code, _, err = run_cli(
        ["embed", str(data), "--model", str(ckpt), "--out", str(out)], monkeypatch, capsys
    )
    assert code == 2
    assert "cannot tell which model family" in err and "--family" in err
    assert not out.exists()
    code, _, err = run_cli(
        ["embed", str(data), "--model", str(ckpt), "--out", str(out), "--family", "scgpt"],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    assert list(ad.read_h5ad(out).obsm) == ["X_scgpt"]


def test_family_override_forces_a_family_the_folder_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data, a = _data(tmp_path)
    ckpt = TOYS["scgpt"].write(tmp_path / "ckpt", list(a.var_names))
    code, _, err = run_cli(
        [
            "embed",
            str(data),
            "--model",
            str(ckpt),
            "--out",
            str(tmp_path / "o.h5ad"),
            "--family",
            "scimilarity",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 2 and "toy_scimilarity.json" in err and "fix:" in err
    code, _, err = run_cli(
        [
            "embed",
            str(data),
            "--model",
            str(ckpt),
            "--out",
            str(tmp_path / "o.h5ad"),
            "--family",
            "nonsense",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 2 and "unknown foundation family" in err and "scimilarity" in err


@pytest.mark.parametrize(
    "breakage", ["unknown_layout", "missing_weights", "wrong_shape", "not_a_folder"]
)
def test_bad_checkpoint_folder_exits_2_with_a_fix(
    breakage: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, a = _data(tmp_path)
    ckpt = ToySCimilarity.write(tmp_path / "ckpt", list(a.var_names))
    target = str(ckpt)
    if breakage == "unknown_layout":
        (ckpt / ToySCimilarity.marker()).unlink()
        expected = "cannot tell which model family"
    elif breakage == "missing_weights":
        (ckpt / "projection.safetensors").unlink()
        expected = "lacks projection.safetensors"
    elif breakage == "wrong_shape":
        ToySCimilarity.write(ckpt, list(a.var_names))
        meta = json.loads((ckpt / ToySCimilarity.marker()).read_text())
        meta["dim"] = 3
        (ckpt / ToySCimilarity.marker()).write_text(json.dumps(meta))
        expected = "shape mismatches"
    else:
        target = str(ckpt / "projection.safetensors")
        expected = "neither a checkpoint folder nor a registered checkpoint"
    out = tmp_path / "out.h5ad"
    code, _, err = run_cli(
        ["embed", str(data), "--model", target, "--out", str(out)], monkeypatch, capsys
    )
    assert code == 2
    assert expected in err
    assert "fix:" in err
    assert not out.exists()


def test_low_gene_coverage_is_refused_with_the_report_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data, a = _data(tmp_path)
    genes = list(a.var_names[:5]) + [f"OTHER{i}" for i in range(95)]
    ckpt = ToySCimilarity.write(tmp_path / "ckpt", genes)
    code, _, err = run_cli(
        ["embed", str(data), "--model", str(ckpt), "--out", str(tmp_path / "o.h5ad")],
        monkeypatch,
        capsys,
    )
    assert code == 2
    assert "only 5 of the 100 genes of scimilarity toy-v1" in err
    assert "min_coverage" in err
    # lowering the threshold explicitly lets it through
    code, _, err = run_cli(
        [
            "embed",
            str(data),
            "--model",
            str(ckpt),
            "--out",
            str(tmp_path / "o.h5ad"),
            "--min-coverage",
            "0.01",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 2  # still below the 50-gene minimum of the shared planner
    assert "only 5 of the 100" in err


def test_log_normalised_only_data_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, a = _data(tmp_path)
    x = a.X.copy()
    x.data = np.log1p(x.data / 3.7)
    lognorm = ad.AnnData(X=x, obs=a.obs, var=a.var)
    path = tmp_path / "lognorm.h5ad"
    lognorm.write_h5ad(path)
    ckpt = ToySCimilarity.write(tmp_path / "ckpt", list(a.var_names))
    code, _, err = run_cli(
        ["embed", str(path), "--model", str(ckpt), "--out", str(tmp_path / "o.h5ad")],
        monkeypatch,
        capsys,
    )
    assert code == 2 and "raw counts" in err and "layers['counts']" in err


@pytest.mark.parametrize("where", ["layers/counts", "raw/X"])
def test_counts_are_read_from_where_the_report_finds_them(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, a = _data(tmp_path)
    counts = a.X.copy()
    x = counts.copy()
    x.data = np.log1p(x.data)
    if where == "raw/X":
        moved = ad.AnnData(X=counts, obs=a.obs, var=a.var)
        moved.raw = moved
        moved.X = x
    else:
        moved = ad.AnnData(X=x, obs=a.obs, var=a.var, layers={"counts": counts})
    path = tmp_path / "layers.h5ad"
    moved.write_h5ad(path)
    ckpt = ToySCimilarity.write(tmp_path / "ckpt", list(a.var_names))
    out = tmp_path / "o.h5ad"
    code, _, err = run_cli(
        ["embed", str(path), "--model", str(ckpt), "--out", str(out)], monkeypatch, capsys
    )
    assert code == 0, err
    res = ad.read_h5ad(out)
    assert res.uns["cellfoundry_embeddings"]["X_scimilarity"]["matrix"] == where
    np.testing.assert_allclose(
        res.obsm["X_scimilarity"], ToySCimilarity.load(ckpt).embed(a), rtol=1e-6
    )


def test_backed_streaming_equals_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data, a = _data(tmp_path, n_cells=700, seed=2)
    ckpt = ToySCimilarity.write(tmp_path / "ckpt", list(a.var_names))
    ToyModel.max_rows_seen = 0
    ToySCimilarity.max_rows_seen = 0
    out = tmp_path / "o.h5ad"
    code, _, err = run_cli(
        ["embed", str(data), "--model", str(ckpt), "--out", str(out), "--batch-size", "64"],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    assert ToySCimilarity.max_rows_seen == 64  # rows were read in chunks, never all at once
    model = ToySCimilarity.load(ckpt)
    in_memory = model.embed(read_data(data))
    backed = read_data(data, backed=True)
    assert backed.isbacked
    np.testing.assert_array_equal(model.embed(backed, batch_size=64), in_memory)
    np.testing.assert_array_equal(ad.read_h5ad(out).obsm["X_scimilarity"], in_memory)


def test_embed_accepts_a_registered_name_and_csv_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, a = _data(tmp_path, n_cells=30)
    ckpt = ToySCimilarity.write(tmp_path / "ckpt", list(a.var_names), variant="toy-v2")
    code, _, err = run_cli(["models", "import", str(ckpt), "--name", "my-toy"], monkeypatch, capsys)
    assert code == 0, err
    csv = tmp_path / "cells.csv"
    pd.DataFrame(sp.csr_matrix(a.X).toarray(), index=a.obs_names, columns=a.var_names).to_csv(csv)
    out = tmp_path / "o.h5ad"
    code, _, err = run_cli(
        ["embed", str(csv), "--model", "my-toy", "--out", str(out)], monkeypatch, capsys
    )
    assert code == 0, err
    res = ad.read_h5ad(out)
    np.testing.assert_allclose(
        res.obsm["X_scimilarity"], ToySCimilarity.load(ckpt).embed(a), rtol=1e-5
    )
    assert res.uns["cellfoundry_embeddings"]["X_scimilarity"]["variant"] == "toy-v2"


def test_embedding_twice_into_one_file_keeps_both_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data, a = _data(tmp_path, n_cells=40)
    c1 = TOYS["scgpt"].write(tmp_path / "c1", list(a.var_names))
    c2 = TOYS["scimilarity"].write(tmp_path / "c2", list(a.var_names), seed=5)
    out = tmp_path / "o.h5ad"
    assert (
        run_cli(["embed", str(data), "--model", str(c1), "--out", str(out)], monkeypatch, capsys)[0]
        == 0
    )
    assert (
        run_cli(["embed", str(out), "--model", str(c2), "--out", str(out)], monkeypatch, capsys)[0]
        == 0
    )
    res = ad.read_h5ad(out)
    assert set(res.obsm) == {"X_scgpt", "X_scimilarity"}
    assert set(res.uns["cellfoundry_embeddings"]) == {"X_scgpt", "X_scimilarity"}


def test_python_embed_dataset_matches_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cellfoundry.models.embedding_annotators import embed_dataset

    data, a = _data(tmp_path, n_cells=50)
    ckpt = TOYS["scgpt"].write(tmp_path / "ckpt", list(a.var_names))
    out = tmp_path / "o.h5ad"
    assert (
        run_cli(["embed", str(data), "--model", str(ckpt), "--out", str(out)], monkeypatch, capsys)[
            0
        ]
        == 0
    )
    emb, model = embed_dataset(data, ckpt)
    assert model.family == "scgpt"
    np.testing.assert_array_equal(emb, ad.read_h5ad(out).obsm["X_scgpt"])
