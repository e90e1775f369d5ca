"""A cell with no counts on any gene a foundation model reads has no evidence: Unknown, uniform.

Real PBMC 3k cells, tiny random-weight checkpoints of each family in its published layout over
the reference's 200 most expressed genes. "No evidence" is decided from the input the model
reads (Geneformer gene tokens, scGPT expressed vocabulary genes, SCimilarity aligned genes), not
from the embedding: an empty cell's embedding is whatever the network makes of an empty input
(Geneformer's and scGPT's ``<cls>`` state of a cell without genes, SCimilarity's encoding of a
zero vector), a non-zero constant that the classifier calls like any other cell. Before this
rule (measured on these fixtures) the heads called every all-zero cell 'CD14+ Monocytes' at 1.00
(Geneformer, cls mode), 'B cells' at 1.00 (scGPT), 'CD8 T cells' at 0.86 (SCimilarity), the LoRA
fine-tuned Geneformer 'CD8 T cells' at 0.60, and a consensus of logreg and the Geneformer head
called them 'lymphocyte' (support 0.63).
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import cellfoundry as cf
from cellfoundry.models.foundation import foundation_class
from cellfoundry.models.registry import load_model
from cellfoundry.stats.labels import UNKNOWN, called_mask, uniform_rows

CLASSES = ["B cells", "CD4 T cells", "CD8 T cells", "CD14+ Monocytes"]
N_MODEL_GENES = 200
EMPTY = [3, 17, 40]  # all-zero cells
OFF = 25  # counts only on genes outside the models' vocabulary
NO_EVIDENCE = sorted([*EMPTY, OFF])
N_QUERY = 60
MODELS = [
    "geneformer-head",
    "geneformer-knn",
    "scgpt-head",
    "scgpt-knn",
    "scimilarity-head",
    "scimilarity-knn",
]


@pytest.fixture(autouse=True)
def _home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CELLFOUNDRY_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def cells(pbmc3k: ad.AnnData) -> dict[str, ad.AnnData]:
    """A labelled reference (70 cells of each of 4 types) and a 60-cell query of other cells, in
    which the cells EMPTY have no counts and the cell OFF has counts only off the model genes."""
    rng = np.random.default_rng(0)
    labels = pbmc3k.obs["cell_type"].astype(str).to_numpy()
    ref_idx, query_idx = [], []
    for c in CLASSES:
        idx = rng.permutation(np.flatnonzero(labels == c))
        ref_idx.extend(idx[:70])
        query_idx.extend(idx[70 : 70 + N_QUERY // len(CLASSES)])
    ref = pbmc3k[np.sort(ref_idx)].copy()
    query = pbmc3k[rng.permutation(query_idx)].copy()
    ref.obs["cell_type"] = ref.obs["cell_type"].astype(str).astype("category")
    totals = np.asarray(ref.X.sum(axis=0)).ravel()
    genes = np.sort(np.argsort(-totals, kind="stable")[:N_MODEL_GENES])
    x = query.X.toarray()
    x[EMPTY] = 0
    assert x[OFF, genes].sum() > 0 and np.delete(x[OFF], genes).sum() > 0
    x[OFF, genes] = 0
    query.X = sp.csr_matrix(x)
    query.obs_names = [f"q{i}" for i in range(query.n_obs)]
    return {"ref": ref, "query": query, "genes": ref[:, genes].var}


@pytest.fixture(scope="module")
def checkpoints(
    cells: dict[str, ad.AnnData], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """A random-weight checkpoint of each family (published layout) over the 200 model genes;
    Geneformer the tiny V2-style one (``<cls>`` … ``<eos>``, cls-mode embeddings)."""
    root = tmp_path_factory.mktemp("no-evidence-ckpts")
    var = cells["genes"]
    out = {}
    for fam in ("geneformer", "scgpt", "scimilarity"):
        genes = list(var.index if fam == "geneformer" else var["gene_symbols"].astype(str))
        model = foundation_class(fam).from_random(genes, seed=1)
        save = getattr(model, "save_pretrained", None) or model.save
        out[fam] = save(root / fam)
    return out


@pytest.fixture(scope="module")
def model_dirs(
    cells: dict[str, ad.AnnData],
    checkpoints: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("no-evidence-models")
    out = {}
    for name in MODELS:
        ckpt = checkpoints[name.split("-")[0]]
        cf.train(cells["ref"], "cell_type", name, checkpoint=ckpt, out=root / name, seed=0)
        out[name] = root / name
    return out


def _assert_no_evidence(res: cf.AnnotationResult, rows: list[int], n_cells: int) -> None:
    k = len(res.classes)
    assert list(res.display_labels[rows]) == [UNKNOWN] * len(rows)
    assert res.unknown[rows].all()
    np.testing.assert_allclose(res.probabilities[rows], 1.0 / k, rtol=1e-6)
    want = f"{len(rows)} of {n_cells} cells have no counts on any of the model's"
    assert sum(want in w for w in res.warnings) == 1, res.warnings


@pytest.mark.parametrize("name", MODELS)
def test_cells_without_model_counts_are_unknown_and_the_others_keep_their_answers(
    name: str, cells: dict[str, ad.AnnData], model_dirs: dict[str, Path]
) -> None:
    query = cells["query"]
    model = load_model(model_dirs[name])
    res = cf.annotate(query, model)
    _assert_no_evidence(res, NO_EVIDENCE, N_QUERY)
    assert not res.unknown[[i for i in range(N_QUERY) if i not in NO_EVIDENCE]].all()

    # the embedding the family gives a cell without evidence is no sign of it: not zero, and the
    # classifier reads it as a call (what these cells got before the rule on the input)
    emb = np.asarray(res.embeddings)
    assert (np.abs(emb[NO_EVIDENCE]).max(axis=1) > 0).all()
    raw = model.proba_from_embeddings(emb)  # type: ignore[attr-defined]
    assert not uniform_rows(raw[NO_EVIDENCE]).any() and called_mask(raw[NO_EVIDENCE], 0.0).all()

    # whatever the threshold: a forced call leaves them (and only them) Unknown
    forced = cf.annotate(query, model, threshold=0.0)
    assert np.flatnonzero(forced.unknown).tolist() == NO_EVIDENCE

    # the rule touches no other cell: theirs is the classifier's answer to their embedding
    rest = [i for i in range(N_QUERY) if i not in NO_EVIDENCE]
    np.testing.assert_array_equal(res.probabilities[rest], raw[rest])
    emb_rest = emb[rest]
    # ... and they are embedded as without these cells in the file, or each on its own (to
    # float rounding: batches of other sizes and padding round differently, which can move a
    # near-tied kNN vote of these random-weight models, so the embeddings are compared)
    alone = cf.annotate(query[rest].copy(), model)
    np.testing.assert_allclose(alone.embeddings, emb_rest, rtol=1e-4, atol=1e-4)
    assert not any("no counts" in w for w in alone.warnings)
    for i in (OFF, rest[0]):
        one = cf.annotate(query[[i]].copy(), model)
        np.testing.assert_allclose(one.embeddings[0], res.embeddings[i], rtol=1e-4, atol=1e-4)
        if i == OFF:
            _assert_no_evidence(one, [0], 1)

    # the annotated AnnData says the same (predicted_cell_type is the most probable class,
    # prediction_unknown says it is no call)
    out = res.to_adata(query.copy())
    assert out.obs["prediction_unknown"].iloc[NO_EVIDENCE].all()
    np.testing.assert_allclose(out.obsm["cellfoundry_probabilities"][NO_EVIDENCE], 0.25)
    assert list(out.uns["cellfoundry"]["warnings"]) == list(res.warnings)


def test_a_lora_finetuned_geneformer_says_unknown_for_cells_without_counts(
    cells: dict[str, ad.AnnData], checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    from cellfoundry.tuning.finetune import finetune

    out = tmp_path / "lora"
    finetune(
        cells["ref"],
        "cell_type",
        checkpoints["geneformer"],
        "lora",
        epochs=1,
        seed=0,
        out=out,
        batch_size=32,
        progress=False,
    )
    model = load_model(out)
    query = cells["query"]
    res = cf.annotate(query, model)
    _assert_no_evidence(res, NO_EVIDENCE, N_QUERY)
    forced = cf.annotate(query, model, threshold=0.0)
    assert np.flatnonzero(forced.unknown).tolist() == NO_EVIDENCE
    # the adapted encoder's embedding of an empty cell is a non-zero constant the head calls
    emb = np.asarray(res.embeddings)[EMPTY]
    assert (np.abs(emb).max(axis=1) > 0).all()
    np.testing.assert_allclose(emb, emb[:1].repeat(len(EMPTY), axis=0), atol=1e-5)
    rest = [i for i in range(N_QUERY) if i not in NO_EVIDENCE]
    alone = cf.annotate(query[rest].copy(), model)
    np.testing.assert_allclose(res.probabilities[rest], alone.probabilities, atol=1e-5)


def test_a_consensus_calls_no_broad_term_for_cells_no_model_has_evidence_for(
    cells: dict[str, ad.AnnData], model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """Even spreads pooled put 3 of the 4 classes' mass (0.75) on 'lymphocyte': before, the
    consensus called the empty cells 'lymphocyte'. A model without evidence abstains: the cell
    OFF, which only the baseline reads counts for, gets the baseline's probabilities (before:
    pooled with the head's constant answer, 'CD4 T cells' at 0.58)."""
    logreg = tmp_path / "logreg"
    cf.train(cells["ref"], "cell_type", "logreg", out=logreg)
    query = cells["query"]
    res = cf.annotate(query, [logreg, model_dirs["geneformer-head"]])
    base = cf.annotate(query, logreg)
    assert not base.unknown[[i for i in range(N_QUERY) if i not in EMPTY]].all()
    assert list(res.display_labels[EMPTY]) == [UNKNOWN] * len(EMPTY)
    assert res.unknown[EMPTY].all()
    np.testing.assert_allclose(res.probabilities[EMPTY], 0.25, rtol=1e-6)
    assert (res.obs_columns["consensus_agreement"][EMPTY] == 0).all()
    order = [base.classes.index(c) for c in res.classes]
    np.testing.assert_allclose(res.probabilities[OFF], base.probabilities[OFF][order], atol=1e-6)
    assert res.labels[OFF] == base.labels[OFF]
    assert res.obs_columns["consensus_agreement"][OFF] == 0.5  # one of two models called it
    assert any(f"{len(EMPTY)} of {N_QUERY} cells have no counts" in w for w in res.warnings)
    assert any(f"{len(NO_EVIDENCE)} of {N_QUERY} cells have no counts" in w for w in res.warnings)


def test_service_runs_in_shards_report_every_shards_cells_without_evidence(
    cells: dict[str, ad.AnnData], model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """A run in 3 shards (25 cells each): Unknown and even top-3 for the cells without evidence,
    and one warning counting them over every shard (before: shard 0's '2 of 25 cells')."""
    from cellfoundry.config import Settings
    from tests.service.test_service_layout import _run, uploaded

    path = tmp_path / "query.h5ad"
    cells["query"].write_h5ad(path)
    model_dir = model_dirs["geneformer-head"]
    expected = cf.annotate(ad.read_h5ad(path), model_dir)
    settings = Settings(home=tmp_path / "srv", demo_model=False, local_workers=0, shard_size=25)
    with uploaded(settings, model_dir, path) as (c, _, model, ds):
        rid = _run(c, settings, ds, model, "annotation", {"layout": "none"})
        res = c.get(f"/results/{rid}", params={"page_size": 5000}).json()
    assert res["summary"]["warnings"] == expected.warnings
    items = res["cells"]["items"]
    assert [i["label"] for i in items] == list(expected.display_labels)
    for i in NO_EVIDENCE:
        assert items[i]["unknown"] and items[i]["label"] == UNKNOWN
        assert [t["probability"] for t in items[i]["top3"]] == pytest.approx([0.25] * 3)
