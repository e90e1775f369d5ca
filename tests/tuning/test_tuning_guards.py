"""The guards refuse untrained adapters, collapsed predictions and sub-baseline runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cellfoundry.tuning.guards import majority_baseline_macro_f1, run_guards
from cellfoundry.tuning.lora import apply_lora
from tests.conftest import make_counts_adata
from tests.tuning.helpers import TinyNet


def test_untrained_adapter_embeddings_equal_base_fire() -> None:
    torch.manual_seed(0)
    net = TinyNet()
    x = torch.randn(20, 12)
    with torch.no_grad():
        base = net(x).numpy()
    apply_lora(net, ["query", "value"])  # B = 0: the adapter is the identity until trained
    with torch.no_grad():
        adapted = net(x).numpy()
    y = np.arange(20) % 2
    rep = run_guards(adapted, base, y.copy(), y, "lora")
    assert not rep.success
    assert [f.split(":")[0] for f in rep.failures] == ["embeddings_changed"]
    # the same embeddings are fine for a frozen-encoder head
    assert run_guards(adapted, base, y.copy(), y, "head").success


def test_collapsed_predictions_fire() -> None:
    y = np.array([0, 0, 0, 1, 1, 2])
    rep = run_guards(np.ones((6, 2)), np.zeros((6, 2)), np.zeros(6, dtype=int), y, "full")
    names = [f.split(":")[0] for f in rep.failures]
    assert "predictions_not_collapsed" in names


def test_below_majority_baseline_fires() -> None:
    y = np.array([0] * 8 + [1, 2])
    assert majority_baseline_macro_f1(y) == pytest.approx((2 * 8 / 18) / 3)
    bad = np.array([1, 2] * 4 + [0, 0])  # every call wrong
    rep = run_guards(np.ones((10, 2)), np.zeros((10, 2)), bad, y, "full")
    assert "beats_majority_baseline" in [f.split(":")[0] for f in rep.failures]
    assert run_guards(np.ones((10, 2)), np.zeros((10, 2)), y.copy(), y, "full").success


def test_finetune_with_an_adapter_that_never_trains_is_not_a_success(tmp_path, caplog) -> None:
    """lr=0: the LoRA adapter stays at its identity initialisation; the artifact says so."""
    from cellfoundry.tuning.finetune import finetune

    adata = make_counts_adata(160, 80, 2, seed=1)
    with caplog.at_level("WARNING"):
        ann = finetune(
            adata,
            "cell_type",
            "scimilarity",
            "lora",
            epochs=1,
            lr=0.0,
            seed=0,
            out=tmp_path / "m",
            scratch_hidden=[16, 16],
            scratch_latent=8,
            progress=False,
        )
    g = ann.manifest.extra["guards"]
    assert not g["success"]
    assert any(f.startswith("embeddings_changed") for f in g["failures"])
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["extra"]["status"] == "failed_guards"
    assert manifest["metrics"]["success"] is False
    assert "FINE-TUNING NOT A SUCCESS" in caplog.text
    adapted = ann.embed(adata)
    assert np.array_equal(adapted, ann.base_embeddings(adata))
