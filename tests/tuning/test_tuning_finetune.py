"""finetune: reproducible, artifacts that annotate reproduces exactly, PEFT-loadable adapters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

import cellfoundry
from cellfoundry.errors import DataError, ModelError
from cellfoundry.tuning.finetune import finetune
from tests.conftest import make_counts_adata

SMALL = {"scratch_hidden": [16, 16], "scratch_latent": 8, "batch_size": 32, "progress": False}


@pytest.fixture(autouse=True)
def _empty_zoo(tmp_path_factory, monkeypatch) -> None:
    """No registered checkpoints: family names start from random weights."""
    monkeypatch.setenv("CELLFOUNDRY_HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="module")
def adata():
    return make_counts_adata(200, 120, 3, seed=3)


@pytest.fixture(scope="module")
def lora_model(adata, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "lora"
    ann = finetune(adata, "cell_type", "scimilarity", "lora", epochs=4, seed=0, out=out, **SMALL)
    return ann, out


def test_annotate_reproduces_validation_predictions_exactly(adata, lora_model) -> None:
    ann, out = lora_model
    val = pd.read_csv(out / "test_predictions.csv", dtype={"cell": str})
    assert len(val) == ann.manifest.extra["split"]["test"]
    res = cellfoundry.annotate(adata[val["cell"].to_numpy()].copy(), out)
    assert res.model_family == "finetuned"
    assert list(res.labels) == val["predicted"].tolist()
    stored = val[[f"p_{c}" for c in ann.classes]].to_numpy(np.float32)
    assert np.array_equal(res.probabilities, stored)
    # the stored numbers are the manifest's numbers
    acc = float((val["predicted"] == val["true"]).mean())
    assert acc == pytest.approx(ann.manifest.metrics["accuracy"])
    assert res.threshold == pytest.approx(ann.manifest.unknown_threshold)


def test_stopping_calibration_and_metrics_use_disjoint_held_out_cells(adata, lora_model) -> None:
    from sklearn.metrics import f1_score

    from cellfoundry.stats.calibration import fit_temperature

    ann, out = lora_model
    h = ann.holdout
    parts = [h["train_index"], h["stop_index"], h["calibration_index"], h["index"]]
    assert all(len(p) for p in parts)
    assert len(np.unique(np.concatenate(parts))) == sum(map(len, parts)) == adata.n_obs
    y = np.unique(adata.obs["cell_type"].astype(str), return_inverse=True)[1]
    # the temperature is the one the calibration cells give, not the test cells
    _, cal_logits = ann.logits(adata[h["calibration_index"]].copy())
    assert fit_temperature(cal_logits, y[h["calibration_index"]]) == pytest.approx(
        ann.manifest.temperature, rel=1e-4
    )
    _, test_logits = ann.logits(adata[h["index"]].copy())
    assert fit_temperature(test_logits, y[h["index"]]) != pytest.approx(
        ann.manifest.temperature, rel=1e-4
    )
    # the stored metrics are the test cells' (scikit-learn on the stored test predictions)
    val = pd.read_csv(out / "test_predictions.csv", dtype={"cell": str})
    assert set(val["cell"]) == set(adata.obs_names[h["index"]])
    assert ann.manifest.metrics["macro_f1"] == pytest.approx(
        f1_score(val["true"], val["predicted"], average="macro")
    )
    # and training never saw them (the hash of the training cells is recorded)
    assert not set(val["cell"]) & set(adata.obs_names[h["train_index"]])


def test_artifact_contents_and_manifest(lora_model) -> None:
    _ann, out = lora_model
    for f in (
        "manifest.json",
        "adapter_config.json",
        "adapter_model.safetensors",
        "head.safetensors",
        "base_network.safetensors",
        "genes.txt",
        "test_predictions.csv",
    ):
        assert (out / f).is_file(), f
    m = json.loads((out / "manifest.json").read_text())
    assert m["family"] == "finetuned" and m["params"]["method"] == "lora"
    assert m["params"]["lora_r"] == 8 and m["params"]["lora_alpha"] == 16
    assert m["extra"]["base"]["random_init"] is True
    assert "RANDOM" in m["extra"]["base"]["warning"]
    assert len(m["extra"]["base"]["network_sha256"]) == 64
    assert len(m["training"]["data_sha256"]) == 64
    assert m["classes"] == ["type_0", "type_1", "type_2"]
    assert m["temperature"] > 0 and 0 <= m["unknown_threshold"] <= 1
    assert {"torch", "peft"} <= set(m["library_versions"])
    assert m["extra"]["history"] and {
        "train_ce",
        "train_triplet",
        "train_input_reconstruction_mse",
        "train_base_embedding_mse",
        "val_macro_f1",
    } <= set(m["extra"]["history"][0])
    tp = m["extra"]["trainable_parameters"]
    assert 0 < tp["trainable"] < tp["total"]
    assert set(m["extra"]["guards"]) >= {"success", "failures", "verdicts"}


def test_adapter_loads_with_peft_itself(adata, lora_model) -> None:
    from peft import PeftModel

    from cellfoundry.tuning.annotator import build_base
    from cellfoundry.tuning.loop import embed_cells

    ann, out = lora_model
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 8
    base = build_base(ann.manifest.extra["base"]["rebuild"], ann.backbone.genes, out)
    cells = base.tokenize(adata[:30].copy())
    before = embed_cells(base, cells)
    PeftModel.from_pretrained(base.network, str(out))
    after = embed_cells(base, cells)
    assert np.array_equal(after, ann.embed(adata[:30].copy()))
    assert not np.allclose(before, after)


def test_seeded_runs_are_reproducible(adata) -> None:
    a = finetune(adata, "cell_type", "scimilarity", "full", epochs=1, seed=5, **SMALL)
    b = finetune(adata, "cell_type", "scimilarity", "full", epochs=1, seed=5, **SMALL)
    c = finetune(adata, "cell_type", "scimilarity", "full", epochs=1, seed=6, **SMALL)
    assert a.manifest.extra["history"] == b.manifest.extra["history"]
    for (k, v), (_, w) in zip(
        a.head.state_dict().items(), b.head.state_dict().items(), strict=True
    ):
        assert torch.equal(v, w), k
    assert np.array_equal(
        a.validation.filter(like="p_").to_numpy(), b.validation.filter(like="p_").to_numpy()
    )
    assert a.manifest.extra["history"] != c.manifest.extra["history"]


def test_head_method_trains_head_only_and_full_from_scratch_learns(adata, tmp_path) -> None:
    head = finetune(adata, "cell_type", "scimilarity", "head", epochs=3, seed=0, **SMALL)
    tp = head.manifest.extra["trainable_parameters"]
    assert tp["trainable"] == sum(p.numel() for p in head.head.parameters())
    assert head.manifest.extra["guards"]["verdicts"][0]["applicable"] is False
    full = finetune(
        adata, "cell_type", "scimilarity", "full", epochs=8, seed=0, out=tmp_path / "full", **SMALL
    )
    assert full.manifest.extra["trainable_parameters"]["share"] == 1.0
    assert full.manifest.metrics["macro_f1"] > 0.8  # three well-separated synthetic types
    assert full.manifest.extra["guards"]["success"]
    assert (tmp_path / "full" / "network.safetensors").is_file()
    h = full.manifest.extra["history"]
    assert (
        h[-1]["train_triplet"] < h[0]["train_triplet"]
        or h[-1]["train_reconstruction"] < h[0]["train_reconstruction"]
    )


def test_bad_inputs_get_clear_errors(adata) -> None:
    with pytest.raises(DataError, match="unknown fine-tuning method"):
        finetune(adata, "cell_type", "scimilarity", "prompt", **SMALL)
    with pytest.raises(ModelError, match="neither a model family"):
        finetune(adata, "cell_type", "no-such-model", "lora", **SMALL)
    with pytest.raises(DataError, match="no column"):
        finetune(adata, "celltype", "scimilarity", "lora", **SMALL)
    with pytest.raises(ModelError, match="match no module"):
        finetune(
            adata, "cell_type", "scimilarity", "lora", lora_targets=["nope"], epochs=1, **SMALL
        )


def test_cli_finetune_then_annotate(adata, tmp_path: Path) -> None:
    from cellfoundry.cli import cli

    path = tmp_path / "ref.h5ad"
    adata.write_h5ad(path)
    r = CliRunner().invoke(
        cli,
        [
            "finetune",
            str(path),
            "--label-key",
            "cell_type",
            "--model",
            "scimilarity",
            "--method",
            "lora",
            "--lora-targets",
            "encoder.network.0.1,encoder.network.3",
            "--epochs",
            "3",
            "--batch-size",
            "32",
            "--variant",
            "tiny",
            "--out",
            str(tmp_path / "m"),
        ],
    )
    assert r.exit_code in (0, 3), r.output
    assert "RANDOM" in r.output  # loud in the log / stderr
    m = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert m["params"]["lora_targets"] == ["encoder.network.0.1", "encoder.network.3"]
    assert (r.exit_code == 3) == (not m["extra"]["guards"]["success"])
    res = cellfoundry.annotate(path, tmp_path / "m")
    assert res.n_cells == adata.n_obs


def test_checkpoint_folder_and_artifact_as_model(adata, lora_model, tmp_path: Path) -> None:
    from cellfoundry.models.scimilarity import SCimilarityModel

    fm = SCimilarityModel.from_random(list(adata.var_names), variant="tiny", seed=1)
    fm.save(tmp_path / "ckpt")
    ann = finetune(
        adata, "cell_type", tmp_path / "ckpt", "lora", epochs=2, out=tmp_path / "m", **SMALL
    )
    base = ann.manifest.extra["base"]
    assert base["source"] == "checkpoint" and base["random_init"] is False
    assert not (tmp_path / "m" / "base_network.safetensors").exists()  # re-read from the checkpoint
    res = cellfoundry.annotate(adata[:20].copy(), tmp_path / "m")
    assert res.n_cells == 20
    # a fine-tuned artifact is a valid starting point too (its adapter merged into the base)
    _, out = lora_model
    again = finetune(adata, "cell_type", out, "head", epochs=1, **SMALL)
    assert again.manifest.extra["base"]["source"] == "artifact"
