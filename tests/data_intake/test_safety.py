"""Hostile files: refused by the library readers and by the sandboxed intake, nothing outside read.

Each attack is first shown to work against the bare reader (anndata / h5py / gzip), so the test
proves a refusal rather than a file that was harmless anyway. "Nothing of the secret read" is
checked on the secret file's access time (set far in the past, which a read moves forward).
"""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pytest

from cellfoundry.data.io import read_data
from cellfoundry.data.report import validate
from cellfoundry.data.untrusted import IntakeLimits, check_hdf5, open_untrusted
from cellfoundry.data.untrusted.structure import check_structure
from cellfoundry.data.untrusted.text import stream_bytes
from cellfoundry.errors import DataError, FileLimitError, UnsafeFileError
from tests.conftest import make_counts_adata
from tests.data_intake import hostile
from tests.data_intake.test_io import _write_10x_h5

SECRET = b"cf-SECRET-KEY-do-not-leak-0123456789abcdef"[:40]


def _untouched(path: Path) -> None:
    os.utime(path, (0, time.time()))  # atime in 1970, mtime now: any read moves atime (relatime)


def _was_read(path: Path) -> bool:
    return os.stat(path).st_atime > 0


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    p = tmp_path / "local-api-key"
    p.write_bytes(SECRET)
    return p


def _attack(kind: str, tmp_path: Path, secret: Path) -> tuple[Path, Path]:
    """The hostile .h5ad of ``kind`` and the file whose bytes it would expose."""
    if kind == "external_storage":
        return hostile.external_storage_h5ad(tmp_path / "x.h5ad", secret), secret
    target = hostile.secret_h5(tmp_path / "other.h5", SECRET)
    if kind == "external_link":
        return hostile.external_link_h5ad(tmp_path / "x.h5ad", target, len(SECRET)), target
    return hostile.virtual_h5ad(tmp_path / "x.h5ad", target, len(SECRET)), target


ATTACKS = ["external_storage", "external_link", "virtual_dataset"]


@pytest.mark.parametrize("kind", ATTACKS)
def test_bare_anndata_reads_the_secret_and_read_data_refuses(
    kind: str, tmp_path: Path, secret: Path
) -> None:
    path, target = _attack(kind, tmp_path, secret)
    _untouched(target)
    leaked = ad.read_h5ad(path).X
    assert SECRET in bytes(np.asarray(leaked).ravel())  # the attack works on the bare reader
    assert _was_read(target)

    _untouched(target)
    for backed in (False, True):
        with pytest.raises(UnsafeFileError) as err:
            read_data(path, backed=backed)
        assert err.value.status == 422 and err.value.code == "unsafe_file"
        assert err.value.hint and "/X" in err.value.message
        assert SECRET.decode() not in str(err.value)
    assert not _was_read(target)


@pytest.mark.parametrize("kind", ATTACKS)
def test_sandboxed_intake_refuses_outside_references(
    kind: str, tmp_path: Path, secret: Path
) -> None:
    path, target = _attack(kind, tmp_path, secret)
    _untouched(target)
    with pytest.raises(UnsafeFileError) as err:
        open_untrusted(path)
    assert err.value.status == 422 and err.value.hint
    assert SECRET.decode() not in str(err.value) and str(tmp_path) not in str(err.value)
    assert not _was_read(target)


def test_soft_links_are_refused(tmp_path: Path) -> None:
    path = hostile.soft_link_h5ad(tmp_path / "soft.h5ad")
    assert ad.read_h5ad(path).shape == (4, 8)  # anndata follows it
    with pytest.raises(UnsafeFileError, match="soft link"):
        read_data(path)


def test_10x_h5_with_external_storage_is_refused(tmp_path: Path, secret: Path) -> None:
    path = tmp_path / "filtered_feature_bc_matrix.h5"
    _write_10x_h5(path, make_counts_adata(n_cells=5, n_genes=8))
    with h5py.File(path, "r+") as f:
        n = f["matrix/data"].shape[0]
        del f["matrix/data"]
        f["matrix"].create_dataset(
            "data", shape=(n,), dtype="uint8", external=[(str(secret), 0, len(SECRET))]
        )
    _untouched(secret)
    with pytest.raises(UnsafeFileError, match="external storage"):
        read_data(path)
    with pytest.raises(UnsafeFileError):
        open_untrusted(path)
    assert not _was_read(secret)


def test_huge_declared_shapes_are_refused_before_reading(tmp_path: Path) -> None:
    dense = hostile.huge_dense_h5ad(tmp_path / "dense.h5ad")
    sparse = hostile.huge_sparse_h5ad(tmp_path / "sparse.h5ad")
    assert dense.stat().st_size < 1_000_000 and sparse.stat().st_size < 1_000_000
    with pytest.raises(FileLimitError, match="declares") as err:
        open_untrusted(dense)
    assert err.value.status == 413 and err.value.hint
    with pytest.raises(FileLimitError, match="cells x"):
        check_structure(sparse, IntakeLimits())
    # without limits (the library on the user's own file) shapes are the user's business
    assert check_hdf5(dense).n_objects > 0


def test_csv_with_a_million_columns_is_refused(tmp_path: Path) -> None:
    path = hostile.wide_csv(tmp_path / "wide.csv")
    with pytest.raises(FileLimitError, match="1,000,001 columns") as err:
        open_untrusted(path)
    assert err.value.status == 413 and err.value.hint


def test_semicolon_csv_columns_count_against_the_limit(tmp_path: Path) -> None:
    """The reader takes a .csv's separator from its header line (';' here), so the column
    limit counts the same separator: a ';' table is not one column to the limits."""
    path = hostile.wide_csv(tmp_path / "wide.csv")
    path.write_text(path.read_text().replace(",", ";"))
    with pytest.raises(FileLimitError, match="1,000,001 columns"):
        open_untrusted(path)


def test_gzip_bomb_is_stopped_early(tmp_path: Path) -> None:
    path = hostile.gzip_bomb_csv(tmp_path / "bomb.csv.gz")  # ~25 MB expanding to 10 GB
    assert path.stat().st_size < 50 * 1024**2
    with pytest.raises(FileLimitError, match="decompression bomb") as err:
        open_untrusted(path)
    assert err.value.status == 413
    # the stream stops within a few chunks of the ratio floor, long before 10 GB
    limits = IntakeLimits()
    seen = 0
    with pytest.raises(FileLimitError):
        for chunk in stream_bytes(path, limits):
            seen += len(chunk)
    assert seen <= limits.gzip_ratio_floor_bytes + 2 * 1024**2


def test_gzip_stream_equals_gzip_module_on_multi_member_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    parts = [",".join(map(str, rng.integers(0, 10, 300_000))).encode() for _ in range(3)]
    path = tmp_path / "multi.csv.gz"
    path.write_bytes(b"".join(gzip.compress(p) for p in parts))
    assert b"".join(stream_bytes(path, IntakeLimits())) == gzip.decompress(path.read_bytes())


def test_mex_declaring_a_huge_matrix_is_refused(tmp_path: Path) -> None:
    folder = hostile.huge_mex(tmp_path / "mex")
    with pytest.raises(FileLimitError, match="declares 1,000,000,000 genes"):
        open_untrusted(folder)


def test_mex_with_a_symlinked_file_is_refused(tmp_path: Path, secret: Path) -> None:
    folder = hostile.huge_mex(tmp_path / "mex", n_genes=1, n_cells=1)
    (folder / "barcodes.tsv.gz").unlink()
    (folder / "barcodes.tsv").symlink_to(secret)
    with pytest.raises(UnsafeFileError, match="symbolic link"):
        check_structure(folder, IntakeLimits())


def test_memory_limit_refuses_with_413(tmp_path: Path) -> None:
    """A dense X whose 2,000-row sample needs 1.6 GB, opened under a 1.2 GB limit."""
    path = hostile.unwritten_dense_h5ad(tmp_path / "wide.h5ad", n_obs=2000, n_vars=200_000)
    with pytest.raises(FileLimitError, match="MiB of memory") as err:
        open_untrusted(path, limits=IntakeLimits(memory_mb=1200))
    assert err.value.status == 413


def test_cpu_limit_refuses_with_413(tmp_path: Path) -> None:
    path = tmp_path / "slow.csv"
    row = b"c," + b",".join(b"%d" % i for i in range(1000)) + b"\n"
    path.write_bytes(b"cell," + b",".join(b"G%d" % i for i in range(1000)) + b"\n" + row * 20_000)
    with pytest.raises(FileLimitError, match="CPU time") as err:
        open_untrusted(path, limits=IntakeLimits(cpu_s=1))
    assert err.value.status == 413


def test_valid_files_give_the_in_process_summary(tmp_path: Path) -> None:
    a = make_counts_adata(n_cells=120, n_genes=60)
    a.write_h5ad(tmp_path / "ok.h5ad")
    a.to_df().to_csv(tmp_path / "ok.csv.gz")
    for p in (tmp_path / "ok.h5ad", tmp_path / "ok.csv.gz"):
        s = open_untrusted(p)
        ref = validate(read_data(p))
        assert (s.n_cells, s.n_genes) == a.shape
        assert s.report["chosen"] == ref.chosen
        assert [m["code"] for m in s.report["messages"]] == [m.code for m in ref.messages]
        assert s.errors == []


def test_real_datasets_pass_the_structural_check(shared_dir: Path) -> None:
    files = sorted((shared_dir / "data").glob("*.h5ad"))
    assert files
    for p in files:
        facts = check_structure(p, IntakeLimits())
        with h5py.File(p, "r") as f:
            shape = ad.io.read_elem(f["obs"]).shape[0], ad.io.read_elem(f["var"]).shape[0]
        assert facts["declared"]["matrices"]["/X"] == list(shape), p.name


def test_real_dataset_through_the_sandbox(shared_dir: Path) -> None:
    p = shared_dir / "data" / "pbmc3k_labeled_counts.h5ad"
    s = open_untrusted(p)
    ref = ad.read_h5ad(p, backed="r")
    assert (s.n_cells, s.n_genes) == ref.shape
    assert s.report["chosen"]["counts"] == "X" and s.errors == []


def test_unreadable_upload_is_a_data_error_without_paths(tmp_path: Path) -> None:
    p = tmp_path / "broken.h5ad"
    p.write_bytes(b"not an hdf5 file at all" * 100)
    with pytest.raises(DataError) as err:
        open_untrusted(p)
    assert not isinstance(err.value, FileLimitError | UnsafeFileError)
    assert str(tmp_path) not in str(err.value)
