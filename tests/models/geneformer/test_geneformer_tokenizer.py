"""Rank-value tokenisation equals the official algorithm (spec §1.6), on real and synthetic cells."""

from __future__ import annotations

import pickle
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from gf_testlib import ENSEMBL, build_checkpoint, counts_adata, reference_tokenize

from cellfoundry.errors import CoverageError, DataError
from cellfoundry.models.geneformer import GeneformerModel
from cellfoundry.models.geneformer.dictionaries import GeneformerDictionaries, load_dictionaries
from cellfoundry.models.geneformer.tokenizer import RankValueTokenizer


def _dicts(folder: Path) -> tuple[dict, dict]:
    tok = pickle.loads((folder / "token_dictionary.pkl").read_bytes())
    med = pickle.loads((folder / "gene_median_dictionary.pkl").read_bytes())
    return tok, med


def test_real_pbmc3k_tokens_equal_reference(shared_dir: Path, pbmc3k: ad.AnnData) -> None:
    vocab = shared_dir / "vocab" / "geneformer_v1"
    tok, med = _dicts(vocab)  # the official gc30M files (numpy scalars inside)
    assert isinstance(tok["ENSG00000000003"], np.int16)
    dicts = load_dictionaries(vocab, 25426)
    tokenizer = RankValueTokenizer(dicts, 2048)
    ours = tokenizer.tokenize(pbmc3k)
    ref = reference_tokenize(pbmc3k.X, list(pbmc3k.var_names), tok, med, 2048, False)
    assert len(ours) == len(ref) == pbmc3k.n_obs
    mismatched = [i for i, (a, b) in enumerate(zip(ours, ref, strict=True)) if a.tolist() != b]
    assert mismatched == []
    lengths = np.array([len(s) for s in ours])
    assert lengths.max() == 2048 and lengths.min() > 100  # some cells truncated, none empty
    # V2-style framing with the same vocabulary and a 4096 input (as V2 models tokenise)
    v2tok = dict(tok)
    v2tok["<cls>"], v2tok["<eos>"] = 25426, 25427
    v2 = RankValueTokenizer(GeneformerDictionaries(v2tok, med), 4096).tokenize(pbmc3k[:300])
    v2ref = reference_tokenize(pbmc3k[:300].X, list(pbmc3k.var_names), v2tok, med, 4096, True)
    assert [s.tolist() for s in v2] == v2ref


def test_symbol_var_names_are_mapped_to_ensembl(shared_dir: Path, pbmc3k: ad.AnnData) -> None:
    dicts = load_dictionaries(shared_dir / "vocab" / "geneformer_v1", 25426)
    tokenizer = RankValueTokenizer(dicts, 2048)
    sub = pbmc3k[:50].copy()
    by_id = tokenizer.tokenize(sub)
    sym = ad.AnnData(
        X=sub.X.copy(),
        obs=sub.obs.copy(),
        var=pd.DataFrame(
            {"gene_ids": list(sub.var_names)}, index=sub.var["gene_symbols"].astype(str)
        ),
    )
    sym.var_names_make_unique()
    by_symbol = tokenizer.tokenize(sym)
    assert all(a.tolist() == b.tolist() for a, b in zip(by_id, by_symbol, strict=True))


def test_synthetic_cells_equal_reference_v1_and_v2(tmp_path: Path) -> None:
    data = counts_adata(n_cells=30, seed=4)
    for version in ("V1", "V2"):
        folder = build_checkpoint(tmp_path / version, version, max_position_embeddings=40)
        model = GeneformerModel.load(folder, verify=False)
        tok, med = _dicts(folder)
        ours = [c["input_ids"].tolist() for c in model.tokenize(data)]
        ref = reference_tokenize(data.X, list(data.var_names), tok, med, 40, version == "V2")
        assert ours == ref
        assert max(len(s) for s in ours) == 40  # truncated to the model's input size
        if version == "V2":
            assert all(s[0] == tok["<cls>"] and s[-1] == tok["<eos>"] for s in ours)


def test_duplicate_gene_columns_are_summed() -> None:
    genes = ENSEMBL[:60]
    dicts = GeneformerDictionaries(
        {"<pad>": 0, "<mask>": 1, **{g: i + 2 for i, g in enumerate(genes)}},
        {g: 1.0 for g in genes},
    )
    tokenizer = RankValueTokenizer(dicts, 100)
    x = np.zeros((1, 61), dtype=np.float32)
    x[0, :60] = np.arange(60) % 7 + 1  # distinct-ish values, gene 0 has 1 count
    x[0, 60] = 10  # a second column of genes[0] -> 11 counts, the highest
    var = pd.DataFrame(index=[*genes, genes[0] + ".5"])  # versioned duplicate of genes[0]
    data = ad.AnnData(X=sp.csr_matrix(x), var=var)
    seq = tokenizer.tokenize(data)[0]
    assert seq[0] == dicts.token_dict[genes[0]]
    assert len(seq) == 60


def test_ranking_uses_medians_and_all_gene_total() -> None:
    genes = ENSEMBL[:60]
    med = {g: 1.0 for g in genes}
    med[genes[3]] = 0.01  # low median -> ranked first despite a small count
    dicts = GeneformerDictionaries(
        {"<pad>": 0, "<mask>": 1, **{g: i + 2 for i, g in enumerate(genes)}}, med
    )
    x = np.ones((1, 60), dtype=np.float32) * 5
    x[0, 3] = 1
    data = ad.AnnData(X=sp.csr_matrix(x), var=pd.DataFrame(index=genes))
    seq = RankValueTokenizer(dicts, 100).tokenize(data)[0]
    assert seq[0] == dicts.token_dict[genes[3]]


def test_log_normalised_input_is_refused(tmp_path: Path) -> None:
    folder = build_checkpoint(tmp_path / "m", "V1")
    data = counts_adata()
    data.X = sp.csr_matrix(np.log1p(data.X.toarray() * 0.37))
    model = GeneformerModel.load(folder, verify=False)
    with pytest.raises(DataError, match="raw counts"):
        model.embed(data)


def test_low_gene_coverage_is_refused(tmp_path: Path) -> None:
    model = GeneformerModel.load(build_checkpoint(tmp_path / "m", "V1"), verify=False)
    data = counts_adata()[:, :40].copy()
    data.var_names = [f"GENE{i}" for i in range(40)]
    with pytest.raises(CoverageError) as e:
        model.embed(data)
    assert e.value.hint


def test_embed_streams_row_chunks_and_backed_files(tmp_path: Path) -> None:
    folder = build_checkpoint(tmp_path / "m", "V1")
    model = GeneformerModel.load(folder, verify=False)
    data = counts_adata(n_cells=40)
    data.write_h5ad(tmp_path / "d.h5ad")
    backed = ad.read_h5ad(tmp_path / "d.h5ad", backed="r")
    seen: list[int] = []
    real = model.tokenizer.tokenize_rows

    def spy(rows, plan, n_counts=None):
        seen.append(rows.shape[0])
        return real(rows, plan, n_counts)

    model.tokenizer.tokenize_rows = spy  # type: ignore[method-assign]
    a = model.embed(backed, chunk_size=7)
    assert max(seen) <= 7 and sum(seen) == 40
    backed.file.close()
    model.tokenizer.tokenize_rows = real  # type: ignore[method-assign]
    b = model.embed(data)
    assert np.abs(a - b).max() <= 1e-5


def test_empty_cells_get_zero_embeddings_in_v1(tmp_path: Path) -> None:
    model = GeneformerModel.load(build_checkpoint(tmp_path / "m", "V1"), verify=False)
    data = counts_adata(n_cells=5)
    x = data.X.toarray()
    x[2, :] = 0
    data.X = sp.csr_matrix(x)
    with pytest.warns(UserWarning, match="1 cells express none"):
        emb = model.embed(data)
    assert np.all(emb[2] == 0) and np.abs(emb[[0, 1, 3, 4]]).sum(axis=1).min() > 0
    assert model.last_embed_info["n_empty_cells"] == 1
