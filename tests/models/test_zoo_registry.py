"""The model zoo table, the local checkpoint registry and `models pull` (against a local HTTP server)."""

from __future__ import annotations

import hashlib
import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cellfoundry.cli import main
from cellfoundry.errors import ModelError
from cellfoundry.models import zoo
from cellfoundry.models.foundation import FOUNDATION_FAMILIES, CheckpointError
from cellfoundry.models.zoo import PullError, ZooEntry, ZooFile
from tests.models.local_http import FileServer, serve
from tests.models.toy_foundation import ToySCimilarity, install_toy_families


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_toy_families(monkeypatch)
    monkeypatch.setenv("CELLFOUNDRY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CELLFOUNDRY_HF_ENDPOINT", raising=False)


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


GENES = [f"GENE{i}" for i in range(60)]


# --- the zoo table ---------------------------------------------------------------------------


def test_zoo_lists_every_published_variant() -> None:
    names = {e.name for e in zoo.ZOO}
    assert {
        "Geneformer-V1-10M",
        "gf-12L-30M-i2048",
        "gf-12L-95M-i4096",
        "gf-12L-95M-i4096_CLcancer",
        "gf-20L-95M-i4096",
        "Geneformer-V2-104M",
        "Geneformer-V2-104M_CLcancer",
        "Geneformer-V2-316M",
    } <= names
    assert {
        "scGPT_human",
        "scGPT_CP",
        "scGPT_brain",
        "scGPT_blood",
        "scGPT_heart",
        "scGPT_lung",
        "scGPT_kidney",
        "scGPT_pancancer",
    } <= names
    assert "SCimilarity-v1.1" in names
    assert len(names) == len(zoo.ZOO)  # unique
    for e in zoo.ZOO:
        assert e.family in FOUNDATION_FAMILIES
        assert (
            e.parameters > 1_000_000
            and e.embedding_dim > 0
            and e.gene_kind in ("ensembl", "symbol")
        )
        assert e.licence and e.location.startswith("https://") and e.embedding_rule
        assert any(f.required for f in e.files)
        for f in e.files:
            assert f.sha256 is None or all(c in "0123456789abcdef" for c in f.sha256)


def test_zoo_facts_match_the_spec() -> None:
    v2 = zoo.zoo_entry("Geneformer-V2-104M")
    assert (v2.embedding_dim, v2.parameters, v2.gene_kind) == (768, 104_386_867, "ensembl")
    assert v2.direct_download and "huggingface.co/ctheodoris/Geneformer" in v2.location
    weights = next(f for f in v2.files if f.local == "model.safetensors")
    assert weights.size == 417_571_156
    assert zoo.zoo_entry("gf-6L-30M-i2048").name == "Geneformer-V1-10M"  # alias
    assert zoo.zoo_entry("geneformer v2 316m").embedding_dim == 1152  # punctuation / case ignored
    human = zoo.zoo_entry("scGPT_human")
    assert (
        human.source == "google-drive" and not human.direct_download and human.embedding_dim == 512
    )
    scim = zoo.zoo_entry("model_v1.1")
    assert (
        scim.family == "scimilarity" and scim.embedding_dim == 128 and "10685499" in scim.location
    )
    with pytest.raises(ModelError, match="not a published model variant"):
        zoo.zoo_entry("GPT-5")


def test_v1_dictionary_hashes_equal_the_real_files(shared_dir: Path) -> None:
    entry = zoo.zoo_entry("Geneformer-V1-10M")
    real = {
        "token_dictionary_gc30M.pkl": "token_dictionary.pkl",
        "gene_median_dictionary_gc30M.pkl": "gene_median_dictionary.pkl",
        "gene_name_id_dict_gc30M.pkl": "gene_name_id_dict.pkl",
    }
    for f in entry.files:
        if f.local in real:
            path = shared_dir / "vocab" / "geneformer_v1" / real[f.local]
            assert f.size == path.stat().st_size
            assert f.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_models_listing_shows_the_zoo_and_local_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["models"], monkeypatch, capsys)
    assert code == 0
    for name in (
        "Geneformer-V2-316M",
        "scGPT_human",
        "SCimilarity-v1.1",
        "scimilarity-knn",
        "geneformer-head",
    ):
        assert name in out
    assert "Registered checkpoints: none" in out
    ckpt = ToySCimilarity.write(tmp_path / "ckpt", GENES, variant="model_v1.1")
    assert run_cli(["models", "import", str(ckpt)], monkeypatch, capsys)[0] == 0
    code, out, _ = run_cli(["models", "--json"], monkeypatch, capsys)
    listing = json.loads(out)
    by_name = {v["name"]: v for v in listing["variants"]}
    assert by_name["SCimilarity-v1.1"]["registered"] == ["SCimilarity-v1.1"]
    assert by_name["scGPT_human"]["registered"] == []
    assert {
        "parameters",
        "embedding_dim",
        "gene_kind",
        "input_length",
        "licence",
        "location",
    } <= set(by_name["scGPT_human"])
    assert [r["name"] for r in listing["registered"]] == ["SCimilarity-v1.1"]
    assert "scimilarity-knn" in {f["name"] for f in listing["families"]}


# --- the registry ----------------------------------------------------------------------------


def test_import_registry_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = ToySCimilarity.write(tmp_path / "ckpt", GENES, dim=5, variant="toy-v1")
    code, out, err = run_cli(["models", "import", str(ckpt), "--name", "toy"], monkeypatch, capsys)
    assert code == 0, err
    assert "referenced in place" in out
    index = json.loads((tmp_path / "home" / "checkpoints" / "registry.json").read_text())
    rec = index["checkpoints"]["toy"]
    assert (
        rec["family"] == "scimilarity" and rec["variant"] == "toy-v1" and rec["mode"] == "reference"
    )
    assert rec["path"] == str(ckpt.resolve()) and rec["embedding_dim"] == 5 and rec["n_genes"] == 60
    for name in ("toy_scimilarity.json", "projection.safetensors"):
        assert rec["files"][name] == hashlib.sha256((ckpt / name).read_bytes()).hexdigest()
    assert rec["load_report"]["ok"] is True
    folder, reg = zoo.resolve_checkpoint("toy")
    assert folder == ckpt.resolve() and reg is not None and reg.name == "toy"
    # a second folder under the same name is refused unless --overwrite
    other = ToySCimilarity.write(tmp_path / "other", GENES, dim=5, seed=1)
    code, _, err = run_cli(["models", "import", str(other), "--name", "toy"], monkeypatch, capsys)
    assert code == 2 and "already registered" in err and "--overwrite" in err
    assert (
        run_cli(
            ["models", "import", str(other), "--name", "toy", "--overwrite"], monkeypatch, capsys
        )[0]
        == 0
    )
    assert zoo.get_registered("toy").source_path == str(other.resolve())  # type: ignore[union-attr]
    code, out, _ = run_cli(["models", "remove", "toy"], monkeypatch, capsys)
    assert code == 0 and zoo.registered() == []
    assert other.is_dir()  # a referenced folder is never deleted


def test_import_with_copy_survives_the_source_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = ToySCimilarity.write(tmp_path / "ckpt", GENES)
    code, out, err = run_cli(
        ["models", "import", str(ckpt), "--name", "kept", "--copy"], monkeypatch, capsys
    )
    assert code == 0, err and "copied to" in out
    copy = tmp_path / "home" / "checkpoints" / "kept"
    assert (copy / "projection.safetensors").read_bytes() == (
        ckpt / "projection.safetensors"
    ).read_bytes()
    for f in ckpt.iterdir():
        f.unlink()
    ckpt.rmdir()
    folder, _ = zoo.resolve_checkpoint("kept")
    assert folder == copy
    assert run_cli(["models", "remove", "kept"], monkeypatch, capsys)[0] == 0
    assert not copy.exists()


def test_import_refuses_a_broken_folder_with_the_load_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = ToySCimilarity.write(tmp_path / "ckpt", GENES)
    meta = json.loads((ckpt / "toy_scimilarity.json").read_text())
    meta["genes"] = GENES[:10]
    (ckpt / "toy_scimilarity.json").write_text(json.dumps(meta))
    code, _, err = run_cli(["models", "import", str(ckpt)], monkeypatch, capsys)
    assert code == 2
    assert (
        "not a valid scimilarity checkpoint" in err and "shape mismatches" in err and "fix:" in err
    )
    assert zoo.registered() == []
    with pytest.raises(CheckpointError):
        zoo.import_checkpoint(ckpt)
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(["models", "import", str(empty)], monkeypatch, capsys)
    assert code == 2 and "cannot tell which model family" in err


def test_registered_folder_that_disappeared_is_reported(tmp_path: Path) -> None:
    ckpt = ToySCimilarity.write(tmp_path / "ckpt", GENES)
    zoo.import_checkpoint(ckpt, name="gone")
    for f in ckpt.iterdir():
        f.unlink()
    ckpt.rmdir()
    with pytest.raises(ModelError, match="no longer exists"):
        zoo.resolve_checkpoint("gone")
    with pytest.raises(ModelError, match="neither a checkpoint folder nor a registered checkpoint"):
        zoo.resolve_checkpoint("never-registered")


# --- pull against a local server --------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[FileServer]:
    with serve() as state:
        yield state


def _toy_entry(tmp_path: Path, *, bad_sha: bool = False) -> tuple[ZooEntry, dict[str, bytes]]:
    src = ToySCimilarity.write(tmp_path / "upstream", GENES, variant="toy-published")
    # pad the weights so the file spans several download chunks
    files = {p.name: p.read_bytes() for p in src.iterdir()}
    sha = {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}
    if bad_sha:
        sha["projection.safetensors"] = "0" * 64
    entry = ZooEntry(
        name="toy-published",
        family="scimilarity",
        description="test",
        parameters=2_000_000,
        parameters_note="exact",
        embedding_dim=8,
        gene_kind="symbol",
        input_length="60 genes",
        layers=1,
        licence="MIT",
        source="huggingface",
        location="https://example.invalid",
        embedding_rule="projection",
        revision="main",
        files=(
            *(ZooFile(f"toy-published/{n}", n, len(b), sha[n]) for n, b in files.items()),
            ZooFile("extras/optional.json", "optional.json", required=False),
        ),
    )
    return entry, files


def test_pull_downloads_verifies_and_registers(tmp_path: Path, server: FileServer) -> None:
    entry, files = _toy_entry(tmp_path)
    server.files = files
    res = zoo.pull(entry, tmp_path / "dl", endpoint=server.url)
    for name, body in files.items():
        assert (res.folder / name).read_bytes() == body
        assert res.files[name] == hashlib.sha256(body).hexdigest()
    assert not list(res.folder.glob("*.part"))
    assert (
        "/ctheodoris/Geneformer/resolve/main/toy-published/projection.safetensors",
        None,
    ) in server.requests
    assert res.registered is not None and res.registered.name == "toy-published"
    assert zoo.get_registered("toy-published").path == str(res.folder.resolve())  # type: ignore[union-attr]
    # a second pull finds verified files and downloads nothing
    n = len(server.requests)
    zoo.pull(entry, tmp_path / "dl", endpoint=server.url)
    assert len(server.requests) == n + 1  # only the (absent) optional file is asked for again


def test_pull_resumes_a_partial_file_with_a_range_request(
    tmp_path: Path, server: FileServer
) -> None:
    entry, files = _toy_entry(tmp_path)
    server.files = files
    body = files["projection.safetensors"]
    folder = tmp_path / "dl" / "toy-published"
    folder.mkdir(parents=True)
    (folder / "projection.safetensors.part").write_bytes(body[:700])
    zoo.pull(entry, tmp_path / "dl", endpoint=server.url, register=False)
    assert (folder / "projection.safetensors").read_bytes() == body
    ranges = [r for p, r in server.requests if p.endswith("projection.safetensors")]
    assert ranges == ["bytes=700-"]


def test_pull_interrupted_then_resumed(tmp_path: Path, server: FileServer) -> None:
    entry, files = _toy_entry(tmp_path)
    server.files = files
    server.cut_after = 500
    with pytest.raises(PullError, match="broke off") as exc:
        zoo.pull(entry, tmp_path / "dl", endpoint=server.url)
    assert "resumes" in (exc.value.hint or "")
    part = next((tmp_path / "dl" / "toy-published").glob("*.part"))
    assert part.stat().st_size == 500
    server.cut_after = None
    res = zoo.pull(entry, tmp_path / "dl", endpoint=server.url)
    for name, body in files.items():
        assert (res.folder / name).read_bytes() == body
    assert any(r == "bytes=500-" for _, r in server.requests)


def test_pull_restarts_when_the_server_ignores_range(tmp_path: Path, server: FileServer) -> None:
    entry, files = _toy_entry(tmp_path)
    server.files = files
    server.honour_range = False
    folder = tmp_path / "dl" / "toy-published"
    folder.mkdir(parents=True)
    (folder / "projection.safetensors.part").write_bytes(b"garbage-prefix")
    res = zoo.pull(entry, tmp_path / "dl", endpoint=server.url, register=False)
    assert (res.folder / "projection.safetensors").read_bytes() == files["projection.safetensors"]


def test_pull_refuses_a_checksum_mismatch(tmp_path: Path, server: FileServer) -> None:
    entry, files = _toy_entry(tmp_path, bad_sha=True)
    server.files = files
    with pytest.raises(PullError, match="does not match the published") as exc:
        zoo.pull(entry, tmp_path / "dl", endpoint=server.url)
    assert "deleted" in (exc.value.hint or "")
    folder = tmp_path / "dl" / "toy-published"
    assert not (folder / "projection.safetensors").exists()
    assert not (folder / "projection.safetensors.part").exists()
    assert zoo.registered() == []


def test_pull_checks_the_sha256_announced_by_the_server(tmp_path: Path, server: FileServer) -> None:
    body = np.arange(5000, dtype=np.uint8).tobytes()
    server.files = {"blob.bin": body}
    server.announce_sha = {"blob.bin": "f" * 64}
    dest = tmp_path / "blob.bin"
    with pytest.raises(PullError, match="does not match"):
        zoo.download_file(f"{server.url}/x/blob.bin", dest)
    assert not dest.exists()
    server.announce_sha = {"blob.bin": hashlib.sha256(body).hexdigest()}
    assert zoo.download_file(f"{server.url}/x/blob.bin", dest) == hashlib.sha256(body).hexdigest()
    assert dest.read_bytes() == body


def test_pull_refuses_a_size_mismatch(tmp_path: Path, server: FileServer) -> None:
    server.files = {"blob.bin": b"x" * 100}
    with pytest.raises(PullError, match="published size is 120"):
        zoo.download_file(f"{server.url}/blob.bin", tmp_path / "blob.bin", size=120)
    assert not (tmp_path / "blob.bin").exists()


def test_pull_fails_fast_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CELLFOUNDRY_HF_ENDPOINT", f"http://127.0.0.1:{port}")
    t0 = time.monotonic()
    code, _, err = run_cli(
        ["models", "pull", "Geneformer-V1-10M", "--dest", str(tmp_path / "dl")], monkeypatch, capsys
    )
    assert time.monotonic() - t0 < 30
    assert code == 2
    assert "cannot reach 127.0.0.1" in err and "cellfoundry models import DIR" in err


@pytest.mark.parametrize(
    "name,expected",
    [
        (
            "scGPT_human",
            [
                "drive.google.com/drive/folders/1oWh_-ZRdhtoGQ2Fw24HP41FgLoomVo-y",
                "best_model.pt",
                "cellfoundry models import",
            ],
        ),
        (
            "SCimilarity-v1.1",
            [
                "zenodo.org/records/10685499",
                "model_v1.1.tar.gz",
                "tar -xzf",
                "cellfoundry models import",
            ],
        ),
        (
            "gf-20L-95M-i4096",
            [
                "git checkout 933ca80",
                "gf-20L-95M-i4096/model.safetensors",
                "cellfoundry models import",
            ],
        ),
    ],
)
def test_pull_without_a_direct_url_prints_the_manual_steps(
    name: str,
    expected: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_cli(
        ["models", "pull", name, "--dest", str(tmp_path / "dl")], monkeypatch, capsys
    )
    assert code == 0
    for text in expected:
        assert text in out
    assert not (tmp_path / "dl").exists()  # nothing was downloaded
    with pytest.raises(PullError) as exc:
        zoo.pull(name, tmp_path / "dl")
    assert "cellfoundry models import" in (exc.value.hint or "")


def test_a_declared_name_tells_apart_variants_that_share_an_architecture(tmp_path: Path) -> None:
    from tests.models.toy_foundation import ToyScGPT

    # the scGPT family names every whole-human-shaped checkpoint "whole-human"
    ckpt = ToyScGPT.write(tmp_path / "c", GENES, dim=512, variant="whole-human")
    assert zoo.import_checkpoint(ckpt).zoo_name == "scGPT_human"
    brain = zoo.import_checkpoint(ckpt, name="scGPT_brain")
    assert brain.name == "scGPT_brain" and brain.zoo_name == "scGPT_brain"
    # a declared name of another size is not believed
    small = ToyScGPT.write(tmp_path / "s", GENES, dim=8, variant="custom")
    assert zoo.import_checkpoint(small, name="scGPT_lung").zoo_name is None


def test_reserved_names_and_importing_a_copy_onto_itself(tmp_path: Path) -> None:
    ckpt = ToySCimilarity.write(tmp_path / "c", GENES)
    with pytest.raises(ModelError, match="reserved"):
        zoo.import_checkpoint(ckpt, name="downloads", copy=True)
    first = zoo.import_checkpoint(ckpt, name="mine", copy=True)
    again = zoo.import_checkpoint(first.path, name="mine", copy=True, overwrite=True)
    assert again.path == first.path and (Path(first.path) / "projection.safetensors").is_file()


def test_pull_follows_the_cdn_redirect_and_checks_the_sha_announced_on_it(
    tmp_path: Path, server: FileServer
) -> None:
    body = np.arange(7000, dtype=np.uint16).tobytes()
    server.files = {"w.bin": body}
    server.redirect = True
    server.announce_sha = {"w.bin": "e" * 64}
    with pytest.raises(PullError, match="does not match"):
        zoo.download_file(f"{server.url}/resolve/main/w.bin", tmp_path / "w.bin")
    server.announce_sha = {"w.bin": hashlib.sha256(body).hexdigest()}
    (tmp_path / "w.bin.part").write_bytes(body[:3000])
    zoo.download_file(f"{server.url}/resolve/main/w.bin", tmp_path / "w.bin")
    assert (tmp_path / "w.bin").read_bytes() == body
    assert ("/cdn/w.bin", "bytes=3000-") in server.requests  # Range kept across the redirect
