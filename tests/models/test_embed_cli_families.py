"""End to end with the real families: tiny random checkpoints in each published layout.

`cellfoundry embed` detects the layout, writes the family's obsm key in input order, equals the
family's own ``embed``; streamed (backed) input equals in-memory; the registry imports each layout;
kNN / linear-head annotators train on the embeddings and reproduce their held-out predictions.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import cellfoundry
from cellfoundry.artifacts import sha256_file
from cellfoundry.cli import main
from cellfoundry.data.genes import gene_table
from cellfoundry.data.io import close_backed, read_data
from cellfoundry.models import zoo
from cellfoundry.models.foundation import detect_family, foundation_class, load_foundation

FAMILIES = ["geneformer", "scgpt", "scimilarity"]
N_GENES = 160


@pytest.fixture(autouse=True)
def _home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CELLFOUNDRY_HOME", str(tmp_path / "home"))


def family_or_skip(family: str) -> type:
    try:
        return foundation_class(family)
    except (ImportError, AttributeError) as exc:  # the family is not in this checkout yet
        pytest.skip(f"{family} family not importable: {exc}")


def real_genes(n: int = N_GENES) -> tuple[list[str], list[str]]:
    """(Ensembl IDs, symbols) of ``n`` genes from the shipped GENCODE table, one-to-one."""
    t = gene_table()
    ids, syms = [], []
    for sym, gid in sorted(t.symbol_to_id.items()):
        if sym.isalnum() and t.id_to_symbol.get(gid) == sym and not sym.startswith("MT"):
            ids.append(gid)
            syms.append(sym)
        if len(ids) == n:
            break
    return ids, syms


def counts_data(n_cells: int = 90, seed: int = 0) -> ad.AnnData:
    """Raw counts, 3 cell types with distinct gene blocks; Ensembl var_names + symbol column."""
    ids, syms = real_genes()
    rng = np.random.default_rng(seed)
    types = rng.integers(0, 3, n_cells)
    rates = np.tile(rng.gamma(0.6, 1.0, N_GENES), (n_cells, 1))
    for t in range(3):
        rates[types == t, t * 40 : (t + 1) * 40] *= 10.0
    depth = rng.integers(500, 2000, n_cells)
    counts = rng.poisson(rates / rates.sum(1, keepdims=True) * depth[:, None]).astype(np.float32)
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical([f"type_{t}" for t in types])},
        index=[f"cell{i:03d}" for i in rng.permutation(n_cells)],
    )
    var = pd.DataFrame({"gene_symbols": syms}, index=ids)
    return ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var)


def write_checkpoint(family: str, folder: Path, seed: int = 0) -> Path:
    """A tiny random checkpoint of ``family`` in its published layout, over the test genes."""
    cls = family_or_skip(family)
    ids, syms = real_genes()
    genes = ids if family == "geneformer" else syms
    model = cls.from_random(genes, seed=seed)
    saver: Callable[[Path], Path] = getattr(model, "save", None) or model.save_pretrained
    saver(folder)
    return folder


def run_cli(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["cellfoundry", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    out = {}
    for fam in FAMILIES:
        try:
            importlib.import_module(f"cellfoundry.models.{fam}")
            out[fam] = write_checkpoint(fam, root / fam)
        except (ImportError, AttributeError, pytest.skip.Exception):
            continue
    return out


def _ckpt(checkpoints: dict[str, Path], family: str) -> Path:
    if family not in checkpoints:
        pytest.skip(f"{family} family not available in this checkout")
    return checkpoints[family]


@pytest.mark.parametrize("family", FAMILIES)
def test_each_published_layout_is_detected(family: str, checkpoints: dict[str, Path]) -> None:
    folder = _ckpt(checkpoints, family)
    assert detect_family(folder) == family
    for other in FAMILIES:
        if other != family and other in checkpoints:
            assert not foundation_class(other).detect(folder)


@pytest.mark.parametrize("family", FAMILIES)
def test_embed_cli_end_to_end(
    family: str,
    checkpoints: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = _ckpt(checkpoints, family)
    a = counts_data(n_cells=48)
    data = tmp_path / "data.h5ad"
    a.write_h5ad(data)
    out = tmp_path / "out.h5ad"
    args = ["embed", str(data), "--model", str(folder), "--out", str(out), "--batch-size", "8"]
    code, _, err = run_cli([*args, "--seed", "3"], monkeypatch, capsys)
    assert code == 0, err
    res = ad.read_h5ad(out)
    key = f"X_{family}"
    model = load_foundation(folder)
    assert list(res.obsm) == [key]
    assert res.obsm[key].shape == (a.n_obs, model.embedding_dim)
    assert res.obsm[key].dtype == np.float32
    assert list(res.obs_names) == list(a.obs_names)
    np.testing.assert_allclose(
        res.obsm[key], model.embed(a, batch_size=8, seed=3), rtol=1e-4, atol=1e-5
    )
    rec = res.uns["cellfoundry_embeddings"][key]
    assert rec["family"] == family and rec["variant"] == model.variant and rec["seed"] == 3
    if family != "scimilarity":  # the --family path is the same for every family: run it once
        return
    # --family naming the right family gives the same result
    out2 = tmp_path / "out2.h5ad"
    code, _, err = run_cli(
        [*args[:4], "--out", str(out2), "--batch-size", "8", "--seed", "3", "--family", family],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    np.testing.assert_allclose(ad.read_h5ad(out2).obsm[key], res.obsm[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ["geneformer", "scgpt"])
def test_embed_cli_max_tokens_sets_the_token_budget(
    family: str,
    checkpoints: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--max-tokens reaches the family's token batching: every forward pass holds at most that
    many padded tokens; the embeddings equal the default budget's; the run records the budget."""
    folder = _ckpt(checkpoints, family)
    data = tmp_path / "data.h5ad"
    counts_data(n_cells=40, seed=4).write_h5ad(data)
    family_module = importlib.import_module(f"cellfoundry.models.{family}.model")
    real = family_module.token_budget_batches
    passes: list[tuple[int, int, int]] = []  # (budget asked, cells, longest cell) of each pass

    def recording(lengths: np.ndarray, batch_size: int, max_tokens: int, **kw: object) -> list:
        groups = list(real(lengths, batch_size, max_tokens, **kw))
        passes.extend((max_tokens, len(g), int(lengths[g].max())) for g in groups)
        return groups

    monkeypatch.setattr(family_module, "token_budget_batches", recording)
    key = f"X_{family}"
    embedded = {}
    for budget in (None, 600):
        passes.clear()
        out = tmp_path / f"out_{budget}.h5ad"
        args = ["embed", str(data), "--model", str(folder), "--out", str(out), "--device", "cpu"]
        args += ["--batch-size", "32"] + (["--max-tokens", str(budget)] if budget else [])
        code, _, err = run_cli(args, monkeypatch, capsys)
        assert code == 0, err
        res = ad.read_h5ad(out)
        embedded[budget] = res.obsm[key]
        record = res.uns["cellfoundry_embeddings"][key]
        asked = budget or family_module.DEFAULT_MAX_TOKENS
        assert record["max_tokens"] == asked
        assert passes and {b for b, _, _ in passes} == {asked}
        assert sum(n for _, n, _ in passes) == 40  # every cell embedded once
        # within the budget (a single cell longer than the budget is a pass of its own)
        assert all(n * width <= asked or n == 1 for _, n, width in passes)
        if budget:  # the budget, not --batch-size, bounded the passes
            assert max(n for _, n, _ in passes) < 32 and len(passes) > 2
        elif family == "scgpt":  # greedy batches fill up to --batch-size
            assert max(n for _, n, _ in passes) == 32
        else:  # Geneformer cuts its sorted cells where padding costs more than another pass
            assert max(n for _, n, _ in passes) <= 32
    np.testing.assert_allclose(embedded[600], embedded[None], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("value", ["0", "-5", "abc", "1.5"])
def test_embed_cli_refuses_a_bad_max_tokens(
    value: str,
    checkpoints: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = _ckpt(checkpoints, "geneformer")
    data = tmp_path / "data.h5ad"
    counts_data(n_cells=10).write_h5ad(data)
    out = tmp_path / "o.h5ad"
    code, _, err = run_cli(
        ["embed", str(data), "--model", str(folder), "--out", str(out), "--max-tokens", value],
        monkeypatch,
        capsys,
    )
    assert code == 2
    assert "--max-tokens" in err and value in err
    assert not out.exists()


def test_max_tokens_is_refused_for_a_family_without_a_token_budget(
    checkpoints: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cellfoundry.models.embedding_annotators import embed_dataset

    folder = _ckpt(checkpoints, "scimilarity")
    data = tmp_path / "data.h5ad"
    counts_data(n_cells=10).write_h5ad(data)
    out = tmp_path / "o.h5ad"
    code, _, err = run_cli(
        ["embed", str(data), "--model", str(folder), "--out", str(out), "--max-tokens", "4096"],
        monkeypatch,
        capsys,
    )
    assert code == 2 and "no token budget" in err and "--batch-size" in err
    assert not out.exists()
    with pytest.raises(cellfoundry.CellfoundryError, match="no token budget"):
        embed_dataset(data, folder, max_tokens=4096)
    if "geneformer" in checkpoints:  # the library refuses a non-positive budget too
        with pytest.raises(cellfoundry.CellfoundryError, match="positive whole number"):
            embed_dataset(data, checkpoints["geneformer"], max_tokens=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_backed_streaming_equals_in_memory(
    family: str, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    folder = _ckpt(checkpoints, family)
    a = counts_data(n_cells=40, seed=1)
    path = tmp_path / "d.h5ad"
    a.write_h5ad(path)
    model = load_foundation(folder)
    backed = read_data(path, backed=True)
    assert backed.isbacked
    np.testing.assert_allclose(
        model.embed(backed, batch_size=16, seed=0),
        model.embed(read_data(path), batch_size=16, seed=0),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_embed_cli_streams_counts_from_a_backed_layer(
    family: str,
    checkpoints: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Counts in layers['counts'] beside log-normalised X, a kNN graph in obsp: the backed input's
    layer is read in row chunks (never loaded whole), the embeddings equal the in-memory ones
    and the output keeps the layer and the graph."""
    from anndata.abc import CSRDataset

    folder = _ckpt(checkpoints, family)
    a = counts_data(n_cells=40, seed=6)
    a.layers["counts"] = a.X.copy()
    a.X = sp.csr_matrix(np.log1p(a.X.toarray() / a.X.sum(axis=1).A * 1e4), dtype=np.float32)
    a.obsp["connectivities"] = sp.random(40, 40, density=0.2, format="csr", random_state=0)
    data = tmp_path / "layered.h5ad"
    a.write_h5ad(data)
    backed = read_data(data, backed=True)
    assert isinstance(backed.layers["counts"], CSRDataset)
    close_backed(backed)
    out = tmp_path / "out.h5ad"
    args = ["embed", str(data), "--model", str(folder), "--out", str(out), "--batch-size", "8"]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    res = ad.read_h5ad(out)
    key = f"X_{family}"
    assert res.uns["cellfoundry_embeddings"][key]["matrix"] == "layers/counts"
    np.testing.assert_allclose(
        res.obsm[key], load_foundation(folder).embed(a, batch_size=8), rtol=1e-4, atol=1e-5
    )
    assert (res.layers["counts"] != a.layers["counts"]).nnz == 0
    assert (res.obsp["connectivities"] != a.obsp["connectivities"]).nnz == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_broken_checkpoint_exits_2(
    family: str,
    checkpoints: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    folder = tmp_path / "broken"
    shutil.copytree(_ckpt(checkpoints, family), folder)
    weights = {"geneformer": "model.safetensors", "scgpt": "best_model.pt"}.get(
        family, "encoder.ckpt"
    )
    data = tmp_path / "d.h5ad"
    counts_data(n_cells=20).write_h5ad(data)
    (folder / weights).write_bytes(b"not a weights file")
    out = tmp_path / "o.h5ad"
    code, _, err = run_cli(
        ["embed", str(data), "--model", str(folder), "--out", str(out), "--family", family],
        monkeypatch,
        capsys,
    )
    assert code == 2, err
    assert "error:" in err and "fix:" in err
    assert not out.exists()
    with pytest.raises(cellfoundry.CellfoundryError):
        zoo.import_checkpoint(folder, family=family)
    assert zoo.registered() == []


@pytest.mark.parametrize("family", FAMILIES)
def test_import_registers_each_layout(family: str, checkpoints: dict[str, Path]) -> None:
    folder = _ckpt(checkpoints, family)
    reg = zoo.import_checkpoint(folder, name=f"tiny-{family}")
    assert reg.family == family and reg.embedding_key == f"X_{family}"
    assert reg.files and all(len(d) == 64 for d in reg.files.values())
    for rel, digest in reg.files.items():
        assert sha256_file(folder / rel) == digest
    assert zoo.resolve_checkpoint(f"tiny-{family}")[0] == folder.resolve()
    assert reg.zoo_name is None  # random weights match no published release


@pytest.mark.parametrize("method", ["knn", "head"])
@pytest.mark.parametrize("family", FAMILIES)
def test_annotators_on_real_family_embeddings(
    family: str, method: str, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    folder = _ckpt(checkpoints, family)
    ref = counts_data(n_cells=60, seed=2)
    out = tmp_path / "m"
    params = {"k": 5} if method == "knn" else {}
    # batch_size=1: no padding, so a cell's embedding does not depend on its batch mates (random
    # tiny transformers map all cells to nearly one point, where padding noise would flip votes)
    trained = cellfoundry.train(
        ref,
        "cell_type",
        f"{family}-{method}",
        checkpoint=folder,
        out=out,
        refit=False,
        batch_size=1,
        **params,
    )
    assert trained.holdout is not None
    base = trained.manifest.extra["base_checkpoint"]
    assert base["family"] == family and base["files"]
    held = ref[trained.holdout["index"]].copy()
    res = cellfoundry.annotate(held, out)
    np.testing.assert_allclose(res.probabilities, trained.holdout["proba"], rtol=1e-4, atol=1e-5)
    assert res.embedding_key == f"X_{family}" and res.embeddings is not None
    assert res.to_adata().obsm[f"X_{family}"].shape[0] == held.n_obs


def test_embed_real_pbmc_with_the_real_scimilarity_gene_order(
    shared_dir: Path,
    pbmc3k: ad.AnnData,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Real counts (Ensembl var_names, symbols in var) against the published 28,231-gene order."""
    cls = family_or_skip("scimilarity")
    genes = (shared_dir / "vocab" / "scimilarity" / "gene_order.tsv").read_text().split("\n")
    folder = tmp_path / "scim"
    cls.from_random(genes, seed=1).save(folder)
    sub = pbmc3k[::9].copy()  # ~290 real cells, every 9th, to keep the test fast
    data = tmp_path / "pbmc.h5ad"
    sub.write_h5ad(data)
    out = tmp_path / "o.h5ad"
    code, _, err = run_cli(
        ["embed", str(data), "--model", str(folder), "--out", str(out)], monkeypatch, capsys
    )
    assert code == 0, err
    res = ad.read_h5ad(out)
    assert list(res.obs_names) == list(sub.obs_names)
    emb = res.obsm["X_scimilarity"]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)  # unit norm by rule
    rec = res.uns["cellfoundry_embeddings"]["X_scimilarity"]
    assert rec["gene_key_kind"] == "symbol" and rec["genes_in_model"] == 28231
    assert 0.5 < rec["gene_coverage"] < 0.9  # 10x v1 PBMC symbols cover about 69% of the order
    np.testing.assert_allclose(emb, load_foundation(folder).embed(sub), rtol=1e-5, atol=1e-6)


def test_pull_layout_of_geneformer_v2_loads_with_the_real_family(tmp_path: Path) -> None:
    """The zoo's flat download layout (weights + suffixed dictionaries side by side) loads."""
    import dataclasses
    import hashlib

    from tests.models.local_http import serve

    src = write_checkpoint("geneformer", tmp_path / "upstream")
    blobs = {
        "config.json": (src / "config.json").read_bytes(),
        "model.safetensors": (src / "model.safetensors").read_bytes(),
        "token_dictionary_gc104M.pkl": (src / "token_dictionary.pkl").read_bytes(),
        "gene_median_dictionary_gc104M.pkl": (src / "gene_median_dictionary.pkl").read_bytes(),
    }
    published = zoo.zoo_entry("Geneformer-V2-104M")
    files = tuple(
        dataclasses.replace(
            f,
            size=len(blobs[f.local]) if f.local in blobs else None,
            sha256=hashlib.sha256(blobs[f.local]).hexdigest() if f.local in blobs else None,
        )
        for f in published.files
    )
    entry = dataclasses.replace(published, files=files)
    with serve() as server:
        server.files = blobs
        res = zoo.pull(entry, tmp_path / "dl", endpoint=server.url)
    assert sorted(p.name for p in res.folder.iterdir()) == sorted(blobs)
    assert res.registered is not None and res.registered.family == "geneformer"
    assert res.registered.zoo_name is None  # a tiny random model is not the published one
    paths = [p for p, _ in server.requests]
    assert "/ctheodoris/Geneformer/resolve/main/Geneformer-V2-104M/model.safetensors" in paths
    assert "/ctheodoris/Geneformer/resolve/main/geneformer/token_dictionary_gc104M.pkl" in paths
    a = counts_data(n_cells=12)
    np.testing.assert_allclose(
        load_foundation(res.folder).embed(a), load_foundation(src).embed(a), rtol=1e-5, atol=1e-6
    )
