"""Reading every supported input format, and the errors for unreadable input."""

from __future__ import annotations

import gzip
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from cellfoundry.data.io import read_data
from cellfoundry.data.matrix import read_rows
from cellfoundry.data.report import validate
from cellfoundry.errors import DataError
from tests.conftest import make_counts_adata


def _write_10x_h5(path: Path, adata: ad.AnnData) -> None:
    m = sp.csc_matrix(adata.X.T.astype(np.int32))  # genes x cells, stored by cell
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g["barcodes"] = np.array(adata.obs_names, dtype="S")
        g["data"] = m.data
        g["indices"] = m.indices.astype(np.int64)
        g["indptr"] = m.indptr.astype(np.int64)
        g["shape"] = np.array(m.shape, dtype=np.int32)
        feats = g.create_group("features")
        feats["id"] = np.array([f"ENSG{i:011d}" for i in range(adata.n_vars)], dtype="S")
        feats["name"] = np.array(adata.var_names, dtype="S")
        feats["feature_type"] = np.array(["Gene Expression"] * adata.n_vars, dtype="S")
        feats["genome"] = np.array(["GRCh38"] * adata.n_vars, dtype="S")
        feats["_all_tag_keys"] = np.array(["genome"], dtype="S")


def _write_mex(
    folder: Path, adata: ad.AnnData, features: str = "features.tsv", gz: bool = True
) -> None:
    """A 10x MEX folder; ``features`` 'genes.tsv' writes the older two-column gene list."""
    folder.mkdir()
    opener = gzip.open if gz else open
    end = ".gz" if gz else ""
    with opener(folder / f"matrix.mtx{end}", "wb") as fh:
        scipy.io.mmwrite(fh, sp.coo_matrix(adata.X.T.astype(np.int64)))
    feats = pd.DataFrame(
        {
            "id": [f"ENSG{i:011d}" for i in range(adata.n_vars)],
            "name": adata.var_names,
            "type": "Gene Expression",
        }
    )
    if features == "genes.tsv":
        feats = feats[["id", "name"]]
    feats.to_csv(folder / f"{features}{end}", sep="\t", header=False, index=False)
    pd.Series(adata.obs_names).to_csv(
        folder / f"barcodes.tsv{end}", sep="\t", header=False, index=False
    )


@pytest.fixture
def small() -> ad.AnnData:
    return make_counts_adata(n_cells=40, n_genes=30)


def test_h5ad_in_memory_and_backed(tmp_path: Path, small: ad.AnnData) -> None:
    p = tmp_path / "x.h5ad"
    small.write_h5ad(p)
    mem = read_data(p)
    backed = read_data(p, backed=True)
    assert backed.isbacked and not mem.isbacked
    np.testing.assert_array_equal(mem.X.toarray(), small.X.toarray())
    np.testing.assert_array_equal(backed.X[:5].toarray(), small.X[:5].toarray())


def test_10x_h5(tmp_path: Path, small: ad.AnnData) -> None:
    p = tmp_path / "filtered_feature_bc_matrix.h5"
    _write_10x_h5(p, small)
    a = read_data(p)
    assert a.shape == small.shape
    np.testing.assert_array_equal(a.X.toarray(), small.X.toarray())


def test_10x_mex_folder(tmp_path: Path, small: ad.AnnData) -> None:
    _write_mex(tmp_path / "mex", small)
    a = read_data(tmp_path / "mex")
    assert a.shape == small.shape
    assert a.var_names[0].startswith("ENSG")  # IDs as var_names, symbols kept in var
    np.testing.assert_array_equal(a.X.toarray(), small.X.toarray())


@pytest.mark.parametrize("features", ["features.tsv", "genes.tsv"])
@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
def test_10x_mex_plain_or_gzipped_features_or_genes_read_the_same(
    tmp_path: Path, small: ad.AnnData, features: str, gz: bool
) -> None:
    """Before: a plain folder with features.tsv failed 'Did not find file .../matrix.mtx.gz'
    and a gzipped one with genes.tsv.gz 'No such file or directory: .../features.tsv.gz'."""
    _write_mex(tmp_path / "mex", small, features, gz)
    a = read_data(tmp_path / "mex")
    assert list(a.obs_names) == list(small.obs_names)
    assert list(a.var["gene_symbols"]) == list(small.var_names)
    assert a.var_names[0] == "ENSG00000000000"
    np.testing.assert_array_equal(a.X.toarray(), small.X.toarray())


def test_10x_mex_folder_missing_a_file_names_it(tmp_path: Path, small: ad.AnnData) -> None:
    _write_mex(tmp_path / "mex", small, gz=False)
    (tmp_path / "mex" / "features.tsv").unlink()
    with pytest.raises(DataError, match=r"lacks features\.tsv/genes\.tsv") as err:
        read_data(tmp_path / "mex")
    assert "genes.tsv" in (err.value.hint or "")


def test_csv_cells_by_genes_and_tsv_genes_by_cells(tmp_path: Path, small: ad.AnnData) -> None:
    df = pd.DataFrame(small.X.toarray(), index=small.obs_names, columns=small.var_names)
    df.to_csv(tmp_path / "c.csv")
    df.T.to_csv(tmp_path / "g.tsv.gz", sep="\t")
    a = read_data(tmp_path / "c.csv")
    b = read_data(tmp_path / "g.tsv.gz", genes_by_cells=True)
    for x in (a, b):
        assert list(x.obs_names) == list(small.obs_names)
        assert list(x.var_names) == list(small.var_names)
        np.testing.assert_array_equal(x.X.toarray(), small.X.toarray())


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("cells.xlsx", b"PK", "unsupported file type"),
        ("broken.h5ad", b"not an hdf5 file", "broken.h5ad is text, but its name ends in .h5ad"),
        ("text.csv", b"cell,GENE1\nc1,abc\n", "not numeric"),
        # content that no file name reads is named
        ("x.h5ad", b"", "empty"),
        ("x.h5ad", gzip.compress(b"\x89HDF\r\n\x1a\n" + bytes(100)), "gzip-compressed HDF5"),
        ("x.csv", b"PK\x03\x04" + bytes(30), "a zip archive"),
        ("x.csv", "cell,G1\nc1,1\n".encode("utf-16"), "UTF-16"),
        ("x.csv.gz", gzip.compress(gzip.compress(b"a,b\n")), "gzip-compressed"),
    ],
    ids=[
        "xlsx",
        "text-as-h5ad",
        "not-numeric",
        "empty",
        "gzipped-h5ad",
        "zip",
        "utf16",
        "double-gzip",
    ],
)
def test_unreadable_inputs_say_what_to_fix(
    tmp_path: Path, name: str, content: bytes, needle: str
) -> None:
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_data(p)
    assert needle in err.value.message
    assert err.value.hint


def _gzip(path: Path, data: bytes) -> None:
    with gzip.open(path, "wb") as fh:
        fh.write(data)


@pytest.mark.parametrize(
    ("name", "write", "what", "fixed"),
    [
        ("x.csv", lambda p, a: a.write_h5ad(p), "an HDF5 file written by anndata", "x.h5ad"),
        ("x.h5", lambda p, a: a.write_h5ad(p), "an HDF5 file written by anndata", "x.h5ad"),
        ("x.h5ad", lambda p, a: a.to_df().to_csv(p), "a text table", "x.csv"),
        ("x.h5ad", lambda p, a: _write_10x_h5(p, a), "written by Cell Ranger", "x.h5"),
        (
            "x.csv",
            lambda p, a: _gzip(p, a.to_df().to_csv().encode()),
            "gzip-compressed",
            "x.csv.gz",
        ),
        ("x.csv.gz", lambda p, a: p.write_text(a.to_df().to_csv()), "not gzip-compressed", "x.csv"),
        ("x.tsv", lambda p, a: _gzip(p, a.to_df().to_csv(sep="\t").encode()), "gzip", "x.csv.gz"),
    ],
    ids=[
        "h5ad-as-csv",
        "h5ad-as-h5",
        "csv-as-h5ad",
        "10x-as-h5ad",
        "gz-as-csv",
        "csv-as-gz",
        "gz-as-tsv",
    ],
)
def test_a_wrong_extension_is_refused_with_the_name_that_reads(
    tmp_path: Path, small: ad.AnnData, name: str, write, what: str, fixed: str
) -> None:
    """Before: an .h5ad named .csv failed "UnicodeDecodeError: 'utf-8' codec can't decode byte
    0x89", a CSV named .h5ad "file signature not found", a gzipped .csv "can't decode byte 0x8b",
    a 10x .h5 named .h5ad "AnnData.__init__() got an unexpected keyword argument 'matrix'", each
    with the hint 'check that the file is a valid ... file'. Now the message says what the file
    is and the hint names the file name under which it reads (followed here)."""
    p = tmp_path / name
    write(p, small)
    with pytest.raises(DataError) as err:
        read_data(p)
    assert what in err.value.message and name in err.value.message
    assert f"rename it to {fixed}" in (err.value.hint or "")
    p.rename(tmp_path / fixed)
    a = read_data(tmp_path / fixed)
    assert list(a.obs_names) == list(small.obs_names)
    np.testing.assert_array_equal(a.X.toarray(), small.X.toarray())


def test_missing_path_and_non_mex_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_data(tmp_path / "nope.h5ad")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"matrix\.mtx"):
        read_data(tmp_path / "empty")


@pytest.mark.parametrize("where", ["layers", "raw"])
def test_h5ad_without_x_reads_counts_from_layers_or_raw(
    tmp_path: Path, small: ad.AnnData, where: str
) -> None:
    """Before: any .h5ad with no X (counts only in layers['counts'] or .raw) crashed inspect and
    annotate with h5py's KeyError "object 'X' doesn't exist" (a traceback)."""
    bare = ad.AnnData(obs=small.obs.copy(), var=small.var.copy())
    if where == "layers":
        bare.layers["counts"] = small.X.copy()
    else:
        bare.raw = small.copy()
    p = tmp_path / "nox.h5ad"
    bare.write_h5ad(p)
    for backed in (True, False):
        a = read_data(p, backed=backed)
        report = validate(a)
        source = "layers/counts" if where == "layers" else "raw/X"
        assert report.ok and report.chosen["counts"] == source
        np.testing.assert_array_equal(read_rows(a, source, 0, a.n_obs).toarray(), small.X.toarray())


def test_float16_matrices_are_read_as_float32(tmp_path: Path, small: ad.AnnData) -> None:
    """Before: a dense float16 X (which anndata writes) crashed inspect/annotate in
    scipy.sparse ("does not support dtype float16"); a float16 CSR data array too when backed."""
    dense = small.copy()
    dense.X = small.X.toarray().astype(np.float16)
    dense.write_h5ad(tmp_path / "dense16.h5ad")
    small.write_h5ad(tmp_path / "sparse16.h5ad")
    with h5py.File(tmp_path / "sparse16.h5ad", "r+") as f:
        data = f["X/data"][:]
        del f["X/data"]
        f["X/data"] = data.astype(np.float16)
    for name in ("dense16.h5ad", "sparse16.h5ad"):
        a = read_data(tmp_path / name, backed=True)
        report = validate(a)
        assert report.ok and report.chosen["counts"] == "X", report.render()
        rows = read_rows(a, "X", 0, a.n_obs)
        assert rows.dtype == np.float32
        np.testing.assert_array_equal(rows.toarray(), small.X.toarray())
    mem = read_data(tmp_path / "dense16.h5ad")
    assert validate(mem).ok
    np.testing.assert_array_equal(read_rows(mem, "X", 0, 40).toarray(), small.X.toarray())


def _table(small: ad.AnnData) -> pd.DataFrame:
    return pd.DataFrame(small.X.toarray(), index=small.obs_names, columns=small.var_names)


def test_csv_separator_is_detected(tmp_path: Path, small: ad.AnnData) -> None:
    """Before: a semicolon CSV (as European spreadsheets save it) was refused as 'holds no
    cells or no genes' with a hint about the first column; a tab-separated .csv likewise."""
    _table(small).to_csv(tmp_path / "semi.csv", sep=";")
    _table(small).to_csv(tmp_path / "tabs.csv.gz", sep="\t")
    for name in ("semi.csv", "tabs.csv.gz"):
        a = read_data(tmp_path / name)
        assert list(a.obs_names) == list(small.obs_names)
        assert list(a.var_names) == list(small.var_names)
        np.testing.assert_array_equal(a.X.toarray(), small.X.toarray())


def test_csv_without_an_index_column_keeps_its_first_gene(
    tmp_path: Path, small: ad.AnnData
) -> None:
    """Before: a table saved without cell names (df.to_csv(index=False)) lost its first gene,
    whose counts became the cell names (duplicated, e.g. '0', '3', '0')."""
    _table(small).to_csv(tmp_path / "noindex.csv", index=False)
    a = read_data(tmp_path / "noindex.csv")
    assert list(a.var_names) == list(small.var_names)
    assert a.obs_names.is_unique
    np.testing.assert_array_equal(a.X.toarray(), small.X.toarray())
    # names in the first column, of any kind, stay the index: R's write.csv (empty header),
    # write.table (one header name fewer) and numeric cell ids
    df = _table(small)
    df.to_csv(tmp_path / "r.csv")
    with (tmp_path / "r.csv").open() as fh:
        lines = fh.read().splitlines()
    (tmp_path / "rtable.csv").write_text("\n".join([lines[0][1:], *lines[1:]]) + "\n")
    df.index = range(1, small.n_obs + 1)
    df.index.name = "cell_id"
    df.to_csv(tmp_path / "ids.csv")
    for name, cells in (
        ("r.csv", list(small.obs_names)),
        ("rtable.csv", list(small.obs_names)),
        ("ids.csv", [str(i) for i in range(1, small.n_obs + 1)]),
    ):
        a = read_data(tmp_path / name)
        assert list(a.obs_names) == cells, name
        assert list(a.var_names) == list(small.var_names), name


def test_genes_by_cells_table_is_detected(tmp_path: Path) -> None:
    """Before: a genes x cells table was read as 12,445 'cells' x 300 'genes' (inspect said OK;
    annotate refused with 0 model genes and a hint about Ensembl IDs)."""
    from cellfoundry.data.genes import gene_table

    small = make_counts_adata(n_cells=40, n_genes=30)
    small.var_names = sorted(gene_table().symbol_to_id)[1000:1030]
    small.obs_names = [f"AAACATACAACC{i:02d}-1" for i in range(40)]
    _table(small).T.to_csv(tmp_path / "g.csv")
    _table(small).to_csv(tmp_path / "c.csv")
    for name in ("g.csv", "c.csv"):
        a = read_data(tmp_path / name)
        assert list(a.obs_names) == list(small.obs_names), name
        assert list(a.var_names) == list(small.var_names), name
        np.testing.assert_array_equal(a.X.toarray(), small.X.toarray())
    assert "genes_by_cells" in {m.code for m in validate(read_data(tmp_path / "g.csv")).messages}
    # an explicit orientation wins over detection
    forced = read_data(tmp_path / "g.csv", genes_by_cells=False)
    assert forced.shape == (30, 40)
