"""The CLI on a stranger's files: the answer is right or a refusal that says what to fix (exit 2,
no traceback), and no input is ever overwritten."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from cellfoundry.errors import DataError
from cellfoundry.outputs import check_outputs
from tests.conftest import make_counts_adata

CLI = [sys.executable, "-m", "cellfoundry.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def refused(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "fix:" in proc.stderr, proc.stderr
    for w in words:
        assert w in proc.stderr, proc.stderr


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("stranger")
    ref = make_counts_adata(n_cells=300, n_genes=150, n_types=3, seed=1)
    ref.write_h5ad(d / "ref.h5ad")
    qry = make_counts_adata(n_cells=40, n_genes=150, n_types=3, seed=2)
    qry.write_h5ad(d / "query.h5ad")
    qry.to_df().to_csv(d / "query.csv")
    proc = run("train", str(d / "ref.h5ad"), "--out", str(d / "model"))
    assert proc.returncode == 0, proc.stderr
    return {"dir": d, "model": d / "model", "h5ad": d / "query.h5ad", "csv": d / "query.csv"}


def test_an_output_never_overwrites_an_input(files) -> None:
    d, model = files["dir"], str(files["model"])
    csv, h5ad = files["csv"], files["h5ad"]
    before = {p: sha(p) for p in (csv, h5ad)}
    # before: the predictions table replaced the 40-cell CSV it was computed from
    refused(run("annotate", str(csv), "--model", model, "--out", str(csv)), "is an input")
    # before: --csv onto the .h5ad query replaced it with text, then a traceback
    refused(
        run(
            "annotate", str(h5ad), "--model", model, "--out", str(d / "o.h5ad"), "--csv", str(h5ad)
        ),
        "is an input",
    )
    refused(
        run("annotate", str(h5ad), "--model", model, "--out", str(files["model"] / "p.csv")),
        "inside model",
    )
    refused(run("train", str(h5ad), "--out", str(h5ad)), "is an input")
    assert {p: sha(p) for p in before} == before
    # an annotated .h5ad into its own input stays possible (obs/obsm/uns entries are added)
    inplace = d / "inplace.h5ad"
    inplace.write_bytes(h5ad.read_bytes())
    ok = run("annotate", str(inplace), "--model", model, "--out", str(inplace))
    assert ok.returncode == 0, ok.stderr


def test_unwritable_outputs_are_refused_before_any_work(files) -> None:
    model, h5ad = str(files["model"]), str(files["h5ad"])
    # before: FileNotFoundError / FileExistsError tracebacks after the whole annotation ran
    refused(
        run("annotate", h5ad, "--model", model, "--out", "/proc/cellfoundry-x.csv"),
        "not writable",
    )
    refused(run("annotate", h5ad, "--model", model, "--out", f"{h5ad}/x.h5ad"), "not a folder")
    two = str(files["dir"] / "same.csv")
    refused(run("annotate", h5ad, "--model", model, "--out", two, "--csv", two), "two outputs")


def test_check_outputs_library(tmp_path: Path) -> None:
    data = tmp_path / "data.h5ad"
    data.write_bytes(b"x")
    check_outputs([tmp_path / "new" / "deeper" / "out.csv"], [data])  # a new folder is fine
    check_outputs([data], [data], in_place=(data, data))
    with pytest.raises(DataError) as e:
        check_outputs([data], [data])
    assert e.value.code == "output_is_input" and e.value.hint
    with pytest.raises(DataError, match="existing file"):
        check_outputs([data], [], folders=True)
    with pytest.raises(DataError, match="is a folder"):
        check_outputs([tmp_path], [])


def test_a_misnamed_file_is_refused_with_its_real_kind(files) -> None:
    """Before: an .h5ad named .csv ended "could not read q.csv as csv: UnicodeDecodeError: 'utf-8'
    codec can't decode byte 0x89 in position 0" (fix: 'check that the file is a valid csv file')."""
    d, model = files["dir"], str(files["model"])
    misnamed = d / "h5ad_named.csv"
    misnamed.write_bytes(files["h5ad"].read_bytes())
    proc = run("annotate", str(misnamed), "--model", model, "--out", str(d / "m.csv"))
    refused(
        proc, "h5ad_named.csv is an HDF5 file written by anndata", "rename it to h5ad_named.h5ad"
    )
    proc = run("inspect", str(misnamed))
    refused(proc, "is an HDF5 file written by anndata")
