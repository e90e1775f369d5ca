"""Strict, safe loading of published Geneformer layouts, with a clear report."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from gf_testlib import ENSEMBL, build_checkpoint, published_state_dict

from cellfoundry.errors import CellfoundryError
from cellfoundry.models.foundation import CheckpointError, detect_family
from cellfoundry.models.geneformer import GeneformerModel
from cellfoundry.models.geneformer.config import VARIANTS
from cellfoundry.models.safe_pickle import UnsafePickleError


def test_v1_layout_loads_with_report(v1_folder: Path) -> None:
    model = GeneformerModel.load(v1_folder)
    rep = model.load_report
    assert rep.ok and rep.family == "geneformer"
    assert rep.ignored_keys == ["bert.embeddings.position_ids"]
    assert "cls.predictions.decoder.weight" in rep.optional_keys_absent
    assert set(rep.files) >= {"config.json", "model.safetensors", "token_dictionary.pkl"}
    assert all(len(h) == 64 for h in rep.files.values())
    assert rep.known_release is None
    assert any("does not match any known" in m for m in rep.messages)
    assert model.variant.startswith("custom-3L-32H")
    assert model.genes == ENSEMBL
    assert model.dictionaries.pad_id == 0 and model.dictionaries.cls_id is None
    assert not model.tokenizer.special_tokens and model.tokenizer.max_genes == 512


def test_v2_layout_in_repository_subfolder(v2_repo: Path) -> None:
    model = GeneformerModel.load(v2_repo / "Geneformer-V2-tiny", verify=False)
    d = model.dictionaries
    assert (d.pad_id, d.cls_id, d.eos_id) == (0, 2, 3)
    assert d.paths["token_dictionary"].parent.name == "geneformer"
    assert model.tokenizer.special_tokens and model.tokenizer.max_genes == 510
    assert model.load_report.files == {}  # no hashing without verify


def test_special_tokens_looked_up_by_name(tmp_path: Path) -> None:
    folder = build_checkpoint(tmp_path / "m", "V2")
    tok_path = folder / "token_dictionary.pkl"
    tok = pickle.loads(tok_path.read_bytes())
    tok["<cls>"], tok["<eos>"] = tok["<eos>"], tok["<cls>"]  # swapped ids
    tok_path.write_bytes(pickle.dumps(tok))
    model = GeneformerModel.load(folder)
    assert (model.dictionaries.cls_id, model.dictionaries.eos_id) == (3, 2)
    seq = model.tokenize(__import__("gf_testlib").counts_adata(n_cells=2))[1]["input_ids"]
    assert seq[0] == 3 and seq[-1] == 2


def test_explicit_dictionaries(tmp_path: Path) -> None:
    folder = build_checkpoint(tmp_path / "m", "V1", dict_folder=tmp_path / "dicts")
    with pytest.raises(CheckpointError, match="no Geneformer dictionaries"):
        GeneformerModel.load(folder)
    model = GeneformerModel.load(folder, dictionaries=tmp_path / "dicts")
    assert len(model.genes) == len(ENSEMBL)


def test_safetensors_preferred_over_bin(tmp_path: Path) -> None:
    folder = build_checkpoint(tmp_path / "m", "V1", seed=1)
    other = build_checkpoint(tmp_path / "o", "V1", seed=2, safetensors=False, bin_file=True)
    (folder / "pytorch_model.bin").write_bytes((other / "pytorch_model.bin").read_bytes())
    model = GeneformerModel.load(folder)
    assert "model.safetensors" in model.load_report.files
    assert "pytorch_model.bin" not in model.load_report.files
    from safetensors.torch import load_file

    want = load_file(str(folder / "model.safetensors"))["bert.embeddings.word_embeddings.weight"]
    assert torch.equal(model.network.bert.embeddings.word_embeddings.weight.detach(), want)


def _with(sd_change):
    return lambda sd: sd_change(dict(sd))


def test_missing_key_is_named(tmp_path: Path) -> None:
    def drop(sd):
        del sd["bert.encoder.layer.1.attention.self.key.weight"]
        return sd

    folder = build_checkpoint(tmp_path / "m", "V1", state_dict=drop)
    with pytest.raises(CheckpointError) as e:
        GeneformerModel.load(folder)
    assert "missing keys: bert.encoder.layer.1.attention.self.key.weight" in e.value.message
    assert e.value.hint


def test_unexpected_key_is_named(tmp_path: Path) -> None:
    def extra(sd):
        sd["bert.encoder.layer.0.attention.self.rotary.weight"] = torch.zeros(3)
        return sd

    folder = build_checkpoint(tmp_path / "m", "V2", state_dict=extra)
    with pytest.raises(
        CheckpointError, match=r"unexpected keys: bert\.encoder\.layer\.0\.attention\.self\.rotary"
    ):
        GeneformerModel.load(folder)


def test_shape_mismatch_is_named(tmp_path: Path) -> None:
    folder = build_checkpoint(tmp_path / "m", "V1")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] = 48
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as e:
        GeneformerModel.load(folder)
    assert (
        "bert.encoder.layer.0.intermediate.dense.weight: file [64, 32] vs config [48, 32]"
        in e.value.message
    )


def test_wrong_vocabulary_is_refused(tmp_path: Path) -> None:
    folder = build_checkpoint(tmp_path / "m", "V1", genes=ENSEMBL)
    build_checkpoint(tmp_path / "x", "V1", genes=ENSEMBL[:100], dict_folder=tmp_path / "d")
    for name in ("token_dictionary.pkl", "gene_median_dictionary.pkl"):
        (folder / name).write_bytes((tmp_path / "d" / name).read_bytes())
    with pytest.raises(CheckpointError, match="vocab_size 302"):
        GeneformerModel.load(folder)


def test_optional_heads_and_legacy_names_tolerated(tmp_path: Path) -> None:
    def legacy(sd):
        sd = {k: v for k, v in sd.items() if not k.startswith("cls.")}
        sd["bert.pooler.dense.weight"] = torch.zeros(32, 32)
        sd["bert.pooler.dense.bias"] = torch.zeros(32)
        ln = sd.pop("bert.embeddings.LayerNorm.weight")
        sd["bert.embeddings.LayerNorm.gamma"] = ln
        return sd

    folder = build_checkpoint(tmp_path / "m", "V1", state_dict=legacy)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["some_future_key"] = {"x": 1}
    del cfg["hidden_dropout_prob"], cfg["use_cache"]
    (folder / "config.json").write_text(json.dumps(cfg))
    model = GeneformerModel.load(folder)
    rep = model.load_report
    assert rep.ok and "cls.predictions.bias" in rep.optional_keys_absent
    assert any("gamma/beta" in m for m in rep.messages)


def test_sequence_classifier_layout(tmp_path: Path) -> None:
    def classifier(sd):
        sd = {k: v for k, v in sd.items() if not k.startswith("cls.")}
        sd.update(
            {
                "bert.pooler.dense.weight": torch.randn(32, 32),
                "bert.pooler.dense.bias": torch.randn(32),
                "classifier.weight": torch.randn(3, 32),
                "classifier.bias": torch.randn(3),
            }
        )
        return sd

    folder = build_checkpoint(
        tmp_path / "m",
        "V1",
        state_dict=classifier,
        architectures=["BertForSequenceClassification"],
        id2label={"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"},
        label2id={"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2},
        problem_type="single_label_classification",
    )
    model = GeneformerModel.load(folder)
    assert type(model.network).__name__ == "BertForSequenceClassification"
    assert model.network.classifier.weight.shape == (3, 32)


def test_evil_dictionary_pickle_is_refused(tmp_path: Path) -> None:
    folder = build_checkpoint(tmp_path / "m", "V1")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / "token_dictionary.pkl").write_bytes(pickle.dumps({"<pad>": 0, "x": Evil()}))
    with pytest.raises(UnsafePickleError, match="refused to unpickle"):
        GeneformerModel.load(folder)
    assert not marker.exists()


def test_evil_pytorch_bin_is_refused(tmp_path: Path) -> None:
    folder = build_checkpoint(tmp_path / "m", "V1", safetensors=False, bin_file=True)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"bert.embeddings.word_embeddings.weight": Evil()}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refused to load"):
        GeneformerModel.load(folder)
    assert not marker.exists()


def test_detect_published_layouts(v1_folder: Path, v2_repo: Path, tmp_path: Path) -> None:
    assert GeneformerModel.detect(v1_folder)
    assert GeneformerModel.detect(v2_repo / "Geneformer-V2-tiny")
    assert not GeneformerModel.detect(v2_repo)  # repository root without weights
    assert not GeneformerModel.detect(v2_repo / "geneformer")
    bin_only = build_checkpoint(tmp_path / "b", "V1", safetensors=False, bin_file=True)
    assert GeneformerModel.detect(bin_only)
    scgpt = tmp_path / "scgpt"
    scgpt.mkdir()
    (scgpt / "args.json").write_text("{}")
    (scgpt / "best_model.pt").write_bytes(b"")
    assert not GeneformerModel.detect(scgpt)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "config.json").write_text("{not json")
    (junk / "model.safetensors").write_bytes(b"")
    assert not GeneformerModel.detect(junk)


def test_repository_root_with_weights_is_a_model(v2_repo: Path) -> None:
    sub = v2_repo / "Geneformer-V2-tiny"
    for f in ("config.json", "model.safetensors"):
        (v2_repo / f).write_bytes((sub / f).read_bytes())
    assert GeneformerModel.detect(v2_repo)
    assert GeneformerModel.load(v2_repo).dictionaries.cls_id == 2


def test_root_without_weights_points_to_subfolders(v2_repo: Path) -> None:
    (v2_repo / "config.json").write_text(
        (v2_repo / "Geneformer-V2-tiny" / "config.json").read_text()
    )
    with pytest.raises(CheckpointError) as e:
        GeneformerModel.load(v2_repo)
    assert "Geneformer-V2-tiny" in (e.value.hint or "")


def test_bad_config_messages(tmp_path: Path) -> None:
    folder = build_checkpoint(tmp_path / "m", "V1")
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(CheckpointError, match="model_type 'gpt2'"):
        GeneformerModel.load(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    with pytest.raises(CheckpointError, match="lacks required keys: vocab_size"):
        GeneformerModel.load(folder)
    with pytest.raises(CellfoundryError):
        GeneformerModel.load(tmp_path / "nowhere")


def test_detect_family_finds_geneformer(v1_folder: Path) -> None:
    try:
        fam = detect_family(v1_folder)
    except ImportError:
        pytest.skip("another foundation family's module is not importable yet")
    assert fam == "geneformer"


def test_full_v1_10m_shapes_match_published_file(tmp_path: Path, shared_dir: Path) -> None:
    """The published V1-10M tensor set, written at full size, is byte-identical in size to the
    official model.safetensors and loads strictly with the real gc30M dictionaries."""
    from safetensors.torch import save_file

    v = VARIANTS["Geneformer-V1-10M"]
    cfg = json.loads((shared_dir / "vocab" / "geneformer_v1" / "config_6L.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"]) == (6, 256, 25426)
    folder = tmp_path / "Geneformer-V1-10M"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    sd = published_state_dict(cfg, seed=0, version="V1")
    n_params = sum(t.numel() for k, t in sd.items() if not k.endswith("position_ids"))
    assert n_params == 10_288_722
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    assert (folder / "model.safetensors").stat().st_size == v.file_sizes["model.safetensors"]
    gf = tmp_path / "geneformer"
    gf.mkdir()
    for name in ("token_dictionary", "gene_median_dictionary", "gene_name_id_dict"):
        src = shared_dir / "vocab" / "geneformer_v1" / f"{name}.pkl"
        (gf / f"{name}.pkl").write_bytes(src.read_bytes())
    model = GeneformerModel.load(folder)
    rep = model.load_report
    assert model.variant == "Geneformer-V1-10M" and rep.variant == "Geneformer-V1-10M"
    assert rep.ok and rep.known_release == "Geneformer-V1-10M"
    assert rep.ignored_keys == ["bert.embeddings.position_ids"]
    assert sum(1 for m in rep.messages if "matches the official gc30M" in m) == 3
    assert len(model.genes) == 25424 and model.genes[0] == "ENSG00000000003"
    assert model.embedding_dim == 256 and model.tokenizer.model_input_size == 2048
    np.testing.assert_array_equal(
        model.network.bert.encoder.layer[5].output.dense.weight.detach().numpy(),
        sd["bert.encoder.layer.5.output.dense.weight"].numpy(),
    )


def test_suffixed_dictionaries_beside_weights_and_in_30m_subfolder(tmp_path: Path) -> None:
    beside = build_checkpoint(tmp_path / "a", "V1", dict_suffix="_gc30M")
    paths = GeneformerModel.load(beside, verify=False).dictionaries.paths
    assert paths["token_dictionary"].name == "token_dictionary_gc30M.pkl"
    repo = tmp_path / "repo"
    build_checkpoint(
        repo / "Geneformer-V1-tiny",
        "V1",
        dict_folder=repo / "geneformer" / "gene_dictionaries_30m",
        dict_suffix="_gc30M",
    )
    model = GeneformerModel.load(repo / "Geneformer-V1-tiny", verify=False)
    assert model.dictionaries.paths["token_dictionary"].parent.name == "gene_dictionaries_30m"
