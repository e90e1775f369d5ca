"""Device and precision of foundation-model embedding: the GPU path is chosen only when CUDA is
present and never required. On a CPU machine these tests check that nothing breaks: auto means
the CPU in float32 (bit-for-bit the plain path), a GPU request is refused clearly, and the
autocast code path itself runs (bf16 on the CPU) close to float32."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch

from cellfoundry.errors import ModelError
from cellfoundry.models.accel import resolve_accel
from cellfoundry.models.geneformer import GeneformerModel
from cellfoundry.models.scgpt import ScGPTModel
from tests.conftest import make_counts_adata
from tests.models.test_embed_cli_toy import run_cli

GPU = torch.cuda.is_available()


def test_auto_picks_cuda_only_when_present_and_fp32_on_the_cpu() -> None:
    auto = resolve_accel("auto", "auto")
    assert auto.device.type == ("cuda" if GPU else "cpu")
    assert auto.precision == (
        "bf16" if GPU and torch.cuda.is_bf16_supported() else "fp16" if GPU else "fp32"
    )
    assert resolve_accel("cpu", "auto").describe() == "cpu fp32"
    assert resolve_accel("cpu", "bf16").dtype is torch.bfloat16
    assert resolve_accel(None, None).device == auto.device


def test_impossible_choices_are_refused_with_a_fix() -> None:
    with pytest.raises(ModelError, match="fp16 is a GPU precision"):
        resolve_accel("cpu", "fp16")
    with pytest.raises(ModelError, match="unknown device"):
        resolve_accel("tpu")
    with pytest.raises(ModelError, match="unknown precision"):
        resolve_accel("cpu", "int8")
    if GPU:
        assert resolve_accel("cuda", "fp32").device.type == "cuda"
    else:
        with pytest.raises(ModelError, match="no CUDA GPU") as err:
            resolve_accel("cuda")
        assert "--device auto" in (err.value.hint or "")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("family", ["geneformer", "scgpt"])
def test_cpu_paths_agree_and_the_network_stays_where_it_was(family: str) -> None:
    adata = make_counts_adata(n_cells=60, n_genes=150, seed=3, symbols=family == "scgpt")
    genes = list(adata.var_names)
    model = (
        GeneformerModel.from_random(genes, seed=1)
        if family == "geneformer"
        else ScGPTModel.from_random(genes, seed=1)
    )
    plain = model.embed(adata, batch_size=16, device="cpu", precision="fp32")
    assert np.array_equal(
        model.embed(adata, batch_size=16, device="auto" if not GPU else "cpu"), plain
    )
    bf16 = model.embed(adata, batch_size=16, device="cpu", precision="bf16")  # the autocast path
    assert bf16.dtype == np.float32 and bf16.shape == plain.shape and np.isfinite(bf16).all()
    assert not np.array_equal(bf16, plain)  # autocast really ran in bf16
    assert _cosines(bf16, plain).min() > 0.98
    params = list(model.network.parameters())
    assert {p.device.type for p in params} == {"cpu"} and {p.dtype for p in params} == {
        torch.float32
    }


def test_cli_refuses_a_missing_gpu_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    adata = make_counts_adata(n_cells=30, n_genes=120, seed=2)
    data = tmp_path / "cells.h5ad"
    adata.write_h5ad(data)
    ckpt = ScGPTModel.from_random(list(adata.var_names), seed=0).save(tmp_path / "scgpt")
    out = tmp_path / "out.h5ad"
    code, _, err = run_cli(
        ["embed", str(data), "--model", str(ckpt), "--out", str(out), "--device", "cuda"],
        monkeypatch,
        capsys,
    )
    if GPU:
        assert code == 0, err
    else:
        assert code == 2 and "no CUDA GPU" in err and "--device auto" in err
        assert not out.exists()
    code, _, err = run_cli(
        ["embed", str(data), "--model", str(ckpt), "--out", str(out), "--device", "cpu"],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    assert ad.read_h5ad(out).uns["cellfoundry_embeddings"]["X_scgpt"]["device"] == "cpu fp32"
