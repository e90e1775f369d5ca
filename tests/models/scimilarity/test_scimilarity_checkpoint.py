"""Strict loading of SCimilarity folders: what is accepted, what is refused and how it is said."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from scim_helpers import real_gene_order, synthetic_genes, write_official_checkpoint

from cellfoundry.models.foundation import CheckpointError
from cellfoundry.models.scimilarity import SCimilarityModel
from cellfoundry.models.scimilarity.checkpoint import (
    read_checkpoint,
    read_label_ints,
    write_gene_order,
    write_label_ints,
)


def _rewrite(folder: Path, fn) -> None:  # type: ignore[no-untyped-def]
    ck = torch.load(folder / "encoder.ckpt", weights_only=True)
    fn(ck["state_dict"])
    torch.save(ck, folder / "encoder.ckpt")


def test_loads_published_layout_with_report(tiny_folder: Path) -> None:
    assert (tiny_folder / "gene_order.tsv").read_bytes()[-1:] != b"\n"  # as published
    assert (tiny_folder / "label_ints.csv").read_text().splitlines()[:2] == ['"",0', '0,"T cell"']
    m = SCimilarityModel.load(tiny_folder)
    assert SCimilarityModel.detect(tiny_folder)
    assert m.network.hidden == [16, 12, 10] and m.embedding_dim == 8
    assert m.genes == synthetic_genes(64)
    assert m.int2label == {0: "T cell", 1: "B cell", 2: "natural killer cell"}
    r = m.load_report
    assert (
        r.ok and r.family == "scimilarity" and r.variant == m.variant == "custom-64g-h16x12x10-z8"
    )
    assert set(r.files) >= {"encoder.ckpt", "decoder.ckpt", "gene_order.tsv", "layer_sizes.json"}
    assert all(len(h) == 64 for h in r.files.values())
    assert r.known_release is None
    assert any("matches no known release" in msg for msg in r.messages)
    assert m.decoder is not None and m.hyperparameters["margin"] == 0.05


def test_missing_and_unexpected_keys_are_named(tiny_folder: Path) -> None:
    def edit(sd: dict) -> None:
        del sd["network.1.2.running_mean"]
        sd["network.9.weight"] = torch.zeros(3, 3)

    _rewrite(tiny_folder, edit)
    with pytest.raises(CheckpointError) as e:
        SCimilarityModel.load(tiny_folder)
    assert "encoder.ckpt:network.1.2.running_mean" in e.value.message
    assert "network.9.weight" in e.value.message and "unexpected" in e.value.message
    assert e.value.hint


def test_shape_mismatch_is_named(tiny_folder: Path) -> None:
    _rewrite(tiny_folder, lambda sd: sd.__setitem__("network.1.2.bias", torch.zeros(5)))
    with pytest.raises(CheckpointError, match=r"network\.1\.2\.bias is \[5\], expected \[12\]"):
        SCimilarityModel.load(tiny_folder)


def test_gene_count_must_match_encoder_inputs(tiny_folder: Path) -> None:
    write_gene_order(tiny_folder / "gene_order.tsv", synthetic_genes(63))
    with pytest.raises(
        CheckpointError, match=r"takes 64 inputs but gene_order\.tsv lists 63 genes"
    ):
        SCimilarityModel.load(tiny_folder)


def test_layer_sizes_disagreeing_with_weights_is_refused(tiny_folder: Path) -> None:
    ls = json.loads((tiny_folder / "layer_sizes.json").read_text())
    ls["network.1.1.weight"] = [99, 16]
    (tiny_folder / "layer_sizes.json").write_text(json.dumps(ls))
    with pytest.raises(CheckpointError, match=r"layer_sizes.json says \[99, 16\]"):
        SCimilarityModel.load(tiny_folder)


def test_decoder_problems_are_refused(tiny_folder: Path) -> None:
    ck = torch.load(tiny_folder / "decoder.ckpt", weights_only=True)
    del ck["state_dict"]["network.3.bias"]
    torch.save(ck, tiny_folder / "decoder.ckpt")
    with pytest.raises(CheckpointError, match=r"decoder.ckpt:network.3.bias"):
        SCimilarityModel.load(tiny_folder)


def test_optional_files_and_keys(tiny_folder: Path) -> None:
    for f in ("layer_sizes.json", "decoder.ckpt", "label_ints.csv", "hyperparameters.json"):
        (tiny_folder / f).unlink()
    _rewrite(
        tiny_folder, lambda sd: [sd.pop(k) for k in list(sd) if k.endswith("num_batches_tracked")]
    )
    m = SCimilarityModel.load(tiny_folder)
    r = m.load_report
    assert r.ok and m.decoder is None and m.int2label is None
    assert r.optional_keys_absent == [
        f"encoder.ckpt:network.{i}.2.num_batches_tracked" for i in range(3)
    ]
    assert any("layer_sizes.json absent" in msg for msg in r.messages)
    assert m.network.hidden == [16, 12, 10]


def test_numeric_layer_order_with_many_layers(tmp_path: Path) -> None:
    """11 hidden layers: the official lexicographic sort would misorder network.10 / network.2."""
    hidden = [20 - i for i in range(11)]
    folder = write_official_checkpoint(
        tmp_path / "deep", synthetic_genes(30), hidden, 6, decoder=False
    )
    m = SCimilarityModel.load(folder)
    assert m.network.hidden == hidden and m.embedding_dim == 6


def test_required_files_and_bad_folders(tmp_path: Path, tiny_folder: Path) -> None:
    with pytest.raises(CheckpointError, match="not a folder"):
        SCimilarityModel.load(tmp_path / "nope")
    (tiny_folder / "gene_order.tsv").unlink()
    assert not SCimilarityModel.detect(tiny_folder)
    with pytest.raises(CheckpointError, match=r"gene_order.tsv missing"):
        SCimilarityModel.load(tiny_folder)


def test_gene_order_problems(tiny_folder: Path) -> None:
    genes = synthetic_genes(64)
    write_gene_order(tiny_folder / "gene_order.tsv", [*genes[:10], genes[3], *genes[11:]])
    with pytest.raises(CheckpointError, match=r"GENE00003 \(lines 4 and 11\)"):
        SCimilarityModel.load(tiny_folder)
    write_gene_order(tiny_folder / "gene_order.tsv", [*genes[:10], "", *genes[11:]])
    with pytest.raises(CheckpointError, match="empty line"):
        SCimilarityModel.load(tiny_folder)


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("pwned",))


def test_never_unpickles_arbitrary_objects(
    tiny_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open(tiny_folder / "encoder.ckpt", "wb") as fh:
        pickle.dump({"state_dict": {"x": _Evil()}}, fh, protocol=2)
    with pytest.raises(
        CheckpointError, match=r"encoder.ckpt: holds a non-tensor object \((builtins\.)?print\)"
    ):
        SCimilarityModel.load(tiny_folder)
    assert "pwned" not in capsys.readouterr().out
    (tiny_folder / "encoder.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read as a torch checkpoint"):
        SCimilarityModel.load(tiny_folder)


def test_label_ints_round_trip_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "label_ints.csv"
    labels = {0: "T cell", 1: 'weird, "quoted" label', 2: "12"}
    write_label_ints(p, labels)
    assert read_label_ints(p) == labels
    p.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(CheckpointError, match="expected one column named 0"):
        read_label_ints(p)


def test_full_v11_shapes_checkpoint(tmp_path: Path, shared_dir: Path) -> None:
    """The published sizes (28,231 -> 1024x3 -> 128) with the real gene order: key/shape check."""
    genes = real_gene_order(shared_dir)
    assert len(genes) == 28231
    folder = tmp_path / "model_v1.1"
    folder.mkdir()
    from cellfoundry.models.scimilarity.network import encoder_shapes

    shapes = encoder_shapes(28231, [1024] * 3, 128)
    sd = {
        k: (torch.zeros(s, dtype=torch.long) if k.endswith("tracked") else torch.empty(s))
        for k, s in shapes.items()
    }
    torch.save({"state_dict": sd}, folder / "encoder.ckpt")
    (folder / "layer_sizes.json").write_text(json.dumps({k: list(s) for k, s in shapes.items()}))
    (folder / "gene_order.tsv").write_bytes(
        (shared_dir / "vocab/scimilarity/gene_order.tsv").read_bytes()
    )
    c = read_checkpoint(folder)
    assert c.hidden == [1024, 1024, 1024] and c.latent == 128 and c.n_genes == 28231
    assert c.report.ok and c.report.variant == "model_v1.1"
    assert any("matches the published model_v1.1 gene order" in m for m in c.report.messages)
    # the same folder with one hidden layer too narrow is refused, naming the key
    sd["network.2.1.weight"] = torch.empty(1024, 1000)
    torch.save({"state_dict": sd}, folder / "encoder.ckpt")
    with pytest.raises(CheckpointError, match=r"network.2.1.weight is \[1024, 1000\]"):
        read_checkpoint(folder, verify=False)
