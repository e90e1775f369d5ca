"""scGPT tokenisation: binning equals the official algorithm on real cells; cls, order, subsampling, seeds."""

from __future__ import annotations

from typing import Any

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from scgpt_reference import official_cell

from cellfoundry.data.normalize import log1p_cp10k
from cellfoundry.errors import CoverageError, DataError
from cellfoundry.models.scgpt import ScGPTModel
from cellfoundry.models.scgpt.binning import bin_values
from cellfoundry.models.scgpt.tokenizer import cell_seed


def _vocab_columns(adata: ad.AnnData, genes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """What embed_data does: var symbols -> vocab ids, columns outside the vocab dropped."""
    index = {g: i for i, g in enumerate(genes)}
    ids = np.array([index.get(s, -1) for s in adata.var["gene_symbols"].astype(str)])
    keep = np.nonzero(ids >= 0)[0]
    return keep, ids[keep]


def test_binning_equals_official_on_real_cells(ref: Any, pbmc3k: ad.AnnData) -> None:
    rows = pbmc3k.X[:300].toarray().astype(np.float32)
    # (a) the embedding path: positive values only; (b) whole rows with zeros (Preprocessor path)
    for with_zeros in (False, True):
        np.random.seed(123)
        mine = np.random.RandomState(123)
        n_ties = 0
        for row in rows:
            x = row if with_zeros else row[row != 0]
            theirs = ref.binning(row=x.copy(), n_bins=51)
            ours = bin_values(x, 51, mine)
            np.testing.assert_array_equal(ours, theirs)
            n_ties += int(len(np.unique(x[x > 0])) < 50)
            assert ours.max() <= 50 and (ours[x > 0] >= 1).all() and (ours[x == 0] == 0).all()
        assert n_ties > 250  # real counts have ties: the random spreading was exercised
    assert (bin_values(np.zeros(5, np.float32), 51, mine) == 0).all()


def test_tokenize_equals_official_dataset_and_binning(
    ref: Any, real_genes: list[str], pbmc_cells: ad.AnnData
) -> None:
    m = ScGPTModel.from_random(real_genes, seed=0)
    cells = m.tokenize(pbmc_cells, seed=7)
    assert len(cells) == pbmc_cells.n_obs
    keep, col_ids = _vocab_columns(pbmc_cells, real_genes)
    dense = pbmc_cells.X[:, keep].toarray()
    cls_id = m.vocab.cls_id
    n_sub = 0
    for i, c in enumerate(cells):
        off = official_cell(dense[i], col_ids, cls_id, -2)
        genes, raw = off["genes"].numpy(), off["expressions"].numpy().copy()
        np.random.seed(cell_seed(7, genes[1:], raw[1:]))
        raw[1:] = ref.binning(row=raw[1:], n_bins=51)
        assert c["gene_ids"][0] == cls_id and c["values"][0] == -2.0
        assert c["gene_ids"].dtype == np.int64 and c["values"].dtype == np.float32
        if len(genes) <= 1200:
            np.testing.assert_array_equal(c["gene_ids"], genes)  # data column order, as official
            np.testing.assert_array_equal(c["values"], raw)
        else:  # random subset of 1,199 genes (+ <cls>), each with its full-row bin
            n_sub += 1
            assert len(c["gene_ids"]) == 1200 and len(set(c["gene_ids"])) == 1200
            lookup = dict(zip(genes[1:], raw[1:], strict=True))
            assert all(
                lookup[g] == v for g, v in zip(c["gene_ids"][1:], c["values"][1:], strict=True)
            )
    assert n_sub >= 4


def test_seeds_cls_value_and_cell_independence(
    real_genes: list[str], pbmc_cells: ad.AnnData
) -> None:
    m = ScGPTModel.from_random(real_genes)
    a = m.tokenize(pbmc_cells, seed=1)
    b = m.tokenize(pbmc_cells, seed=1)
    c = m.tokenize(pbmc_cells, seed=2)
    assert all(np.array_equal(x["values"], y["values"]) for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(x["values"], y["values"]) for x, y in zip(a, c, strict=True))
    # a cell's tokens do not depend on its neighbours or position
    alone = m.tokenize(pbmc_cells[[17]].copy(), seed=1)[0]
    assert np.array_equal(alone["gene_ids"], a[17]["gene_ids"]) and np.array_equal(
        alone["values"], a[17]["values"]
    )
    m.config.cls_value = (
        0.0  # the fine-tuning convention (tokenize_and_pad_batch), stored as config
    )
    assert m.tokenize(pbmc_cells[:2], seed=1)[0]["values"][0] == 0.0
    m.max_length = 50
    short = m.tokenize(pbmc_cells[:3], seed=1)
    assert all(len(t["gene_ids"]) == 50 and t["gene_ids"][0] == m.vocab.cls_id for t in short)


def test_collate_pads_with_pad_token_and_value(
    real_genes: list[str], pbmc_cells: ad.AnnData
) -> None:
    m = ScGPTModel.from_random(real_genes)
    cells = m.tokenize(pbmc_cells[:4], seed=0)
    batch = m.collate(cells)
    n = max(len(c["gene_ids"]) for c in cells)
    assert batch["gene_ids"].shape == (4, n)
    for i, c in enumerate(cells):
        k = len(c["gene_ids"])
        assert (batch["gene_ids"][i, k:] == m.vocab.pad_id).all() and (
            batch["values"][i, k:] == -2
        ).all()
        assert not batch["padding_mask"][i, :k].any() and batch["padding_mask"][i, k:].all()


def test_input_errors_are_clear(real_genes: list[str], pbmc_cells: ad.AnnData) -> None:
    m = ScGPTModel.from_random(real_genes)
    lognorm = ad.AnnData(log1p_cp10k(pbmc_cells.X), var=pbmc_cells.var.copy())
    with pytest.raises(DataError, match="needs raw counts"):
        m.tokenize(lognorm)
    few = pbmc_cells[:, :200].copy()  # only a handful of these are in the vocab
    few.var_names = [f"NOTAGENE{i}" for i in range(200)]
    few.var["gene_symbols"] = few.var_names
    with pytest.raises(CoverageError, match="scGPT vocabulary genes"):
        m.tokenize(few)


def test_symbols_from_var_names_work_too(real_genes: list[str], pbmc_cells: ad.AnnData) -> None:
    m = ScGPTModel.from_random(real_genes)
    by_symbol = ad.AnnData(
        sp.csr_matrix(pbmc_cells.X), var=pbmc_cells.var.set_index("gene_symbols")
    )
    a = m.tokenize(pbmc_cells[:5], seed=3)
    b = m.tokenize(by_symbol[:5], seed=3)
    assert all(
        np.array_equal(x["gene_ids"], y["gene_ids"]) and np.array_equal(x["values"], y["values"])
        for x, y in zip(a, b, strict=True)
    )
