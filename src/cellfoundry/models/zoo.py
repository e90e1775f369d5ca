"""The model zoo (every published foundation-model variant) and the local checkpoint registry.

The zoo is a static table of facts from ``shared/specs/model-formats.md`` (parameters, embedding
size, input genes, licence, where the weights are published, known file sizes and sha256s).
The registry is a JSON index under ``cellfoundry.paths.checkpoints_dir()`` of local checkpoint
folders that passed strict loading (``cellfoundry models import``). ``pull`` downloads the
HuggingFace-hosted Geneformer files on explicit request only (resumable, size/sha256-verified);
nothing here ever downloads implicitly.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cellfoundry.artifacts import sha256_file
from cellfoundry.errors import ModelError
from cellfoundry.paths import checkpoints_dir

HF_REPO = "ctheodoris/Geneformer"
HF_ENDPOINT = "https://huggingface.co"
REGISTRY_FILE = "registry.json"
REGISTRY_VERSION = 1


class PullError(ModelError):
    """A requested download could not be completed (no network, HTTP error, bad checksum)."""

    code = "pull_failed"


@dataclass(frozen=True)
class ZooFile:
    """One file of a published checkpoint: where it lives upstream and what it must be."""

    remote: str  # path inside the upstream repository / archive
    local: str  # file name inside the local checkpoint folder
    size: int | None = None  # bytes, when published
    sha256: str | None = None  # full digest or a published prefix (checked with startswith)
    required: bool = True


@dataclass(frozen=True)
class ZooEntry:
    """One published variant of a foundation model."""

    name: str
    family: str  # geneformer | scgpt | scimilarity
    description: str
    parameters: int
    parameters_note: str  # "exact" (from file sizes / architecture) or how it was obtained
    embedding_dim: int
    gene_kind: str  # "ensembl" | "symbol"
    input_length: str
    layers: int | None
    licence: str
    source: str  # "huggingface" | "google-drive" | "zenodo"
    location: str  # URL of the official location
    embedding_rule: str
    aliases: tuple[str, ...] = ()
    revision: str | None = None  # HF revision holding the files ("main" = directly downloadable)
    files: tuple[ZooFile, ...] = ()
    notes: str = ""

    @property
    def direct_download(self) -> bool:
        """True when every file has a direct URL on the current HF main branch."""
        return self.source == "huggingface" and self.revision == "main" and bool(self.files)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["direct_download"] = self.direct_download
        return d


def _gf_dicts(kind: str) -> tuple[ZooFile, ...]:
    if kind == "gc30M":
        base = "geneformer/gene_dictionaries_30m/"
        return (
            ZooFile(
                base + "token_dictionary_gc30M.pkl",
                "token_dictionary_gc30M.pkl",
                788_424,
                "ab9dc40973fa5224d77b793e2fd114cacf3d08423ed9c4c49caf0ba9c7f218f1",
            ),
            ZooFile(
                base + "gene_median_dictionary_gc30M.pkl",
                "gene_median_dictionary_gc30M.pkl",
                940_965,
                "b3b589bb5ec75040d05fc44dd6bf0184cf87f3c362cf158d196a6ed3b7fe5f39",
            ),
            ZooFile(
                base + "gene_name_id_dict_gc30M.pkl",
                "gene_name_id_dict_gc30M.pkl",
                1_117_117,
                "55e67962e79c0039a6c32d43c5c99f38e51964bbcfa32f736150ee1e285c438c",
                required=False,
            ),
            ZooFile(
                base + "ensembl_mapping_dict_gc30M.pkl",
                "ensembl_mapping_dict_gc30M.pkl",
                584_125,
                None,
                required=False,
            ),
        )
    suffix = "gc104M" if kind == "gc104M" else "gc95M"
    return (
        ZooFile(
            f"geneformer/token_dictionary_{suffix}.pkl",
            f"token_dictionary_{suffix}.pkl",
            425_590,
            "67c445f4",
        ),
        ZooFile(
            f"geneformer/gene_median_dictionary_{suffix}.pkl",
            f"gene_median_dictionary_{suffix}.pkl",
            1_512_661,
        ),
        ZooFile(
            f"geneformer/gene_name_id_dict_{suffix}.pkl",
            f"gene_name_id_dict_{suffix}.pkl",
            None,
            required=False,
        ),
        ZooFile(
            f"geneformer/ensembl_mapping_dict_{suffix}.pkl",
            f"ensembl_mapping_dict_{suffix}.pkl",
            3_957_652,
            required=False,
        ),
    )


def _gf_model(folder: str, weights: str, size: int | None) -> tuple[ZooFile, ...]:
    prefix = f"{folder}/" if folder else ""
    return (
        ZooFile(prefix + "config.json", "config.json"),
        ZooFile(prefix + weights, weights, size),
    )


_GF_LICENCE = "Apache-2.0"
_GF_LOC = f"{HF_ENDPOINT}/{HF_REPO}"
_GF_V1_RULE = (
    "mean over all gene tokens of the second-to-last layer (V1 'cell' mode); rank-value encoding "
    "of Ensembl IDs with the gc30M dictionaries, 2048 tokens, no special tokens"
)
_GF_V2_RULE = (
    "<cls> token of the second-to-last layer (V2 default 'cls' mode); rank-value encoding with "
    "<cls> … <eos>, 4096 tokens"
)
_OLD = "historical layout (HF commit 933ca80, 2024-08-15); not on the current main branch"

_SCGPT_RULE = (
    "output at <cls> (position 0) of the last layer, L2-normalised; non-zero genes with per-cell "
    "51-bin quantile values, <cls> value -2, at most 1200 tokens (random subset beyond)"
)
_SCGPT_FILES = (
    ZooFile("args.json", "args.json"),
    ZooFile("best_model.pt", "best_model.pt"),
    ZooFile("vocab.json", "vocab.json"),
)
_DRIVE = "https://drive.google.com/drive/folders/{}"
_SCGPT_LICENCE = "MIT (scGPT repository; no separate weights licence stated [unverified])"


def _scgpt(
    name: str, what: str, folder_id: str, aliases: tuple[str, ...], exact: bool = False
) -> ZooEntry:
    return ZooEntry(
        name=name,
        family="scgpt",
        description=what,
        parameters=51_330_049,
        parameters_note="exact (whole-human file size)"
        if exact
        else "same architecture as scGPT_human [assumed]",
        embedding_dim=512,
        gene_kind="symbol",
        input_length="1200 genes (non-zero, random subset beyond)",
        layers=12,
        licence=_SCGPT_LICENCE,
        source="google-drive",
        location=_DRIVE.format(folder_id),
        embedding_rule=_SCGPT_RULE,
        aliases=aliases,
        files=_SCGPT_FILES,
        notes="best_model.pt ≈196 MB, vocab.json ≈1.3 MB, args.json ≈1.3 KB",
    )


ZOO: tuple[ZooEntry, ...] = (
    ZooEntry(
        name="Geneformer-V1-10M",
        family="geneformer",
        description="Geneformer V1, 6 layers, pretrained on Genecorpus-30M",
        parameters=10_288_722,
        parameters_note="exact",
        embedding_dim=256,
        gene_kind="ensembl",
        input_length="2048 tokens",
        layers=6,
        licence=_GF_LICENCE,
        source="huggingface",
        location=f"{_GF_LOC}/tree/main/Geneformer-V1-10M",
        embedding_rule=_GF_V1_RULE,
        aliases=("gf-6L-30M-i2048", "gf-6L-10M-i2048", "geneformer-6L-30M", "geneformer-v1"),
        revision="main",
        files=_gf_model("Geneformer-V1-10M", "model.safetensors", 41_183_536) + _gf_dicts("gc30M"),
    ),
    ZooEntry(
        name="gf-12L-30M-i2048",
        family="geneformer",
        description="Geneformer V1, 12 layers, pretrained on Genecorpus-30M",
        parameters=39_591_250,
        parameters_note="exact",
        embedding_dim=512,
        gene_kind="ensembl",
        input_length="2048 tokens",
        layers=12,
        licence=_GF_LICENCE,
        source="huggingface",
        location=f"{_GF_LOC}/tree/933ca80/gf-12L-30M-i2048",
        embedding_rule=_GF_V1_RULE,
        aliases=("geneformer-12L-30M", "gf-12L-40M-i2048", "Geneformer-V1-12L-30M"),
        revision="933ca80",
        files=_gf_model("gf-12L-30M-i2048", "pytorch_model.bin", 158_467_410) + _gf_dicts("gc30M"),
        notes=_OLD,
    ),
    ZooEntry(
        name="gf-12L-95M-i4096",
        family="geneformer",
        description="Geneformer, 12 layers, pretrained on Genecorpus-95M",
        parameters=38_000_000,
        parameters_note="approximate (≈38.0 M, from the file size)",
        embedding_dim=512,
        gene_kind="ensembl",
        input_length="4096 tokens",
        layers=12,
        licence=_GF_LICENCE,
        source="huggingface",
        location=f"{_GF_LOC}/tree/933ca80/gf-12L-95M-i4096",
        embedding_rule=_GF_V2_RULE,
        aliases=("gf-12L-38M-i4096",),
        revision="933ca80",
        files=_gf_model("gf-12L-95M-i4096", "model.safetensors", 152_012_980) + _gf_dicts("gc95M"),
        notes=_OLD,
    ),
    ZooEntry(
        name="gf-12L-95M-i4096_CLcancer",
        family="geneformer",
        description="gf-12L-95M-i4096 continually pretrained on cancer cells",
        parameters=38_000_000,
        parameters_note="approximate (same architecture as gf-12L-95M-i4096)",
        embedding_dim=512,
        gene_kind="ensembl",
        input_length="4096 tokens",
        layers=12,
        licence=_GF_LICENCE,
        source="huggingface",
        location=f"{_GF_LOC}/tree/933ca80/gf-12L-95M-i4096_CLcancer",
        embedding_rule=_GF_V2_RULE,
        revision="933ca80",
        files=_gf_model("gf-12L-95M-i4096_CLcancer", "model.safetensors", None)
        + _gf_dicts("gc95M"),
        notes=_OLD,
    ),
    ZooEntry(
        name="gf-20L-95M-i4096",
        family="geneformer",
        description="Geneformer, 20 layers, pretrained on Genecorpus-95M",
        parameters=151_000_000,
        parameters_note="approximate (≈151 M, from the file size)",
        embedding_dim=896,
        gene_kind="ensembl",
        input_length="4096 tokens",
        layers=20,
        licence=_GF_LICENCE,
        source="huggingface",
        location=f"{_GF_LOC}/tree/933ca80/gf-20L-95M-i4096",
        embedding_rule=_GF_V2_RULE,
        aliases=("gf-20L-151M-i4096",),
        revision="933ca80",
        files=_gf_model("gf-20L-95M-i4096", "model.safetensors", 605_292_732) + _gf_dicts("gc95M"),
        notes=_OLD,
    ),
    ZooEntry(
        name="Geneformer-V2-104M",
        family="geneformer",
        description="Geneformer V2, 12 layers, pretrained on Genecorpus-104M",
        parameters=104_386_867,
        parameters_note="exact",
        embedding_dim=768,
        gene_kind="ensembl",
        input_length="4096 tokens",
        layers=12,
        licence=_GF_LICENCE,
        source="huggingface",
        location=f"{_GF_LOC}/tree/main/Geneformer-V2-104M",
        embedding_rule=_GF_V2_RULE,
        aliases=("gf-12L-104M-i4096",),
        revision="main",
        files=_gf_model("Geneformer-V2-104M", "model.safetensors", 417_571_156)
        + _gf_dicts("gc104M"),
    ),
    ZooEntry(
        name="Geneformer-V2-104M_CLcancer",
        family="geneformer",
        description="Geneformer V2-104M continually pretrained on cancer cells",
        parameters=104_386_867,
        parameters_note="exact (same architecture as V2-104M)",
        embedding_dim=768,
        gene_kind="ensembl",
        input_length="4096 tokens",
        layers=12,
        licence=_GF_LICENCE,
        source="huggingface",
        location=f"{_GF_LOC}/tree/main/Geneformer-V2-104M_CLcancer",
        embedding_rule=_GF_V2_RULE,
        aliases=("gf-12L-104M-i4096_CLcancer",),
        revision="main",
        files=_gf_model("Geneformer-V2-104M_CLcancer", "model.safetensors", None)
        + _gf_dicts("gc104M"),
    ),
    ZooEntry(
        name="Geneformer-V2-316M",
        family="geneformer",
        description="Geneformer V2, 18 layers, pretrained on Genecorpus-104M (also the repository root)",
        parameters=316_354_867,
        parameters_note="exact",
        embedding_dim=1152,
        gene_kind="ensembl",
        input_length="4096 tokens",
        layers=18,
        licence=_GF_LICENCE,
        source="huggingface",
        location=f"{_GF_LOC}/tree/main/Geneformer-V2-316M",
        embedding_rule=_GF_V2_RULE,
        aliases=("gf-18L-316M-i4096",),
        revision="main",
        files=_gf_model("Geneformer-V2-316M", "model.safetensors", 1_265_455_076)
        + _gf_dicts("gc104M"),
    ),
    _scgpt(
        "scGPT_human",
        "scGPT whole-human, pretrained on 33 million normal human cells (recommended)",
        "1oWh_-ZRdhtoGQ2Fw24HP41FgLoomVo-y",
        ("whole-human", "scgpt-whole-human"),
        exact=True,
    ),
    _scgpt(
        "scGPT_CP",
        "scGPT continual pretrained, for zero-shot cell embedding",
        "1_GROJTzXiAV8HB4imruOTk6PEGuNOcgB",
        ("continual-pretrained", "scgpt-cp"),
    ),
    _scgpt(
        "scGPT_brain",
        "scGPT pretrained on 13.2 million brain cells",
        "1vf1ijfQSk7rGdDGpBntR5bi5g6gNt-Gx",
        ("brain",),
    ),
    _scgpt(
        "scGPT_blood",
        "scGPT pretrained on 10.3 million blood and bone marrow cells",
        "1kkug5C7NjvXIwQGGaGoqXTk_Lb_pDrBU",
        ("blood",),
    ),
    _scgpt(
        "scGPT_heart",
        "scGPT pretrained on 1.8 million heart cells",
        "1GcgXrd7apn6y4Ze_iSCncskX3UsWPY2r",
        ("heart",),
    ),
    _scgpt(
        "scGPT_lung",
        "scGPT pretrained on 2.1 million lung cells",
        "16A1DJ30PT6bodt4bWLa4hpS7gbWZQFBG",
        ("lung",),
    ),
    _scgpt(
        "scGPT_kidney",
        "scGPT pretrained on 814 thousand kidney cells",
        "1S-1AR65DF120kNFpEbWCvRHPhpkGK3kK",
        ("kidney",),
    ),
    _scgpt(
        "scGPT_pancancer",
        "scGPT pretrained on 5.7 million cells of various cancer types",
        "13QzLHilYUd0v3HTwa_9n4G4yEF-hdkqa",
        ("pan-cancer", "scgpt-pan-cancer"),
    ),
    ZooEntry(
        name="SCimilarity-v1.1",
        family="scimilarity",
        description="SCimilarity model_v1.1 (metric-learning MLP encoder; annotation kNN index included)",
        parameters=31_146_115,
        parameters_note="exact encoder parameters (28231→1024×3→128), BN buffers excluded",
        embedding_dim=128,
        gene_kind="symbol",
        input_length="28231 genes (dense, fixed order)",
        layers=4,
        licence="Apache-2.0 (code); weights under the Zenodo record's terms [unverified]",
        source="zenodo",
        location="https://zenodo.org/records/10685499",
        embedding_rule="L2-normalised 128-d encoder output of log1p(CP10k over the 28231 aligned genes)",
        aliases=("model_v1.1", "scimilarity", "scimilarity-v1.1"),
        files=(
            ZooFile("model_v1.1/encoder.ckpt", "encoder.ckpt"),
            ZooFile(
                "model_v1.1/gene_order.tsv",
                "gene_order.tsv",
                222_628,
                "0a9aeacf7fc19399426273d8cfab8683253ec56b51be556d42edd115f125b8ca",
            ),
            ZooFile("model_v1.1/layer_sizes.json", "layer_sizes.json"),
            ZooFile("model_v1.1/label_ints.csv", "label_ints.csv"),
        ),
        notes="gene_order.tsv hash is that of the scimilarity test copy (identity with the model's file "
        "unverified); the tarball model_v1.1.tar.gz also holds annotation/ and cellsearch/",
    ),
)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def zoo_entries(family: str | None = None) -> list[ZooEntry]:
    """Every published variant (optionally of one family)."""
    return [e for e in ZOO if family is None or e.family == family]


def find_entry(name: str | None, family: str | None = None) -> ZooEntry | None:
    """The zoo entry called ``name`` (or one of its aliases), case and punctuation ignored."""
    if not name:
        return None
    key = _norm(name)
    for e in zoo_entries(family):
        if key in {_norm(e.name), *(_norm(a) for a in e.aliases)}:
            return e
    return None


def zoo_entry(name: str) -> ZooEntry:
    """Like ``find_entry`` but raise a clear error for unknown names."""
    e = find_entry(name)
    if e is None:
        raise ModelError(
            f"'{name}' is not a published model variant",
            f"choose one of: {', '.join(x.name for x in ZOO)} (see `cellfoundry models`)",
        )
    return e


# ---------------------------------------------------------------------------------------------
# local registry
# ---------------------------------------------------------------------------------------------


@dataclass
class RegisteredCheckpoint:
    """A local checkpoint folder that passed strict loading."""

    name: str
    family: str
    variant: str | None
    path: str  # absolute folder the checkpoint is loaded from
    mode: str  # "reference" (the user's folder is used in place) | "copy" (copied under CELLFOUNDRY_HOME)
    source_path: str
    files: dict[str, str]  # file (relative) -> sha256
    sizes: dict[str, int]
    imported_at: str
    zoo_name: str | None = None
    known_release: str | None = None
    embedding_dim: int | None = None
    embedding_key: str | None = None
    n_genes: int | None = None
    load_report: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_RESERVED = {"downloads", "registryjson", "registrylock"}


@contextlib.contextmanager
def _registry_lock() -> Iterator[None]:
    """Serialise read-modify-write of the registry between processes (CLI, service, workers)."""
    with open(checkpoints_dir() / "registry.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def registry_path() -> Path:
    return checkpoints_dir() / REGISTRY_FILE


def _read_registry() -> dict[str, dict[str, Any]]:
    p = registry_path()
    if not p.is_file():
        return {}
    try:
        raw = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(
            f"the checkpoint registry {p} is not valid JSON ({exc})",
            "fix or delete it and import the checkpoints again",
        ) from exc
    return dict(raw.get("checkpoints", {}))


def _write_registry(entries: dict[str, dict[str, Any]]) -> None:
    p = registry_path()
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"version": REGISTRY_VERSION, "checkpoints": entries}, indent=2))
    os.replace(tmp, p)


def registered() -> list[RegisteredCheckpoint]:
    """Every registered checkpoint."""
    fields = set(RegisteredCheckpoint.__dataclass_fields__)
    return [
        RegisteredCheckpoint(**{k: v for k, v in d.items() if k in fields})
        for d in _read_registry().values()
    ]


def get_registered(name: str) -> RegisteredCheckpoint | None:
    key = _norm(name)
    for r in registered():
        if _norm(r.name) == key:
            return r
    return None


def registered_for(entry: ZooEntry) -> list[RegisteredCheckpoint]:
    """Registered checkpoints that are a local copy of the zoo variant ``entry``."""
    return [r for r in registered() if r.zoo_name == entry.name]


def resolve_checkpoint(spec: str | Path) -> tuple[Path, RegisteredCheckpoint | None]:
    """A checkpoint folder from a path or a registered name."""
    p = Path(spec).expanduser()
    if p.is_dir():
        return p.resolve(), None
    reg = get_registered(str(spec))
    if reg is not None:
        folder = Path(reg.path)
        if not folder.is_dir():
            raise ModelError(
                f"registered checkpoint '{reg.name}' points to {folder}, which no longer exists",
                f"restore the folder or import it again: cellfoundry models import DIR --name {reg.name}",
            )
        return folder, reg
    names = ", ".join(r.name for r in registered()) or "none registered"
    raise ModelError(
        f"'{spec}' is neither a checkpoint folder nor a registered checkpoint ({names})",
        "pass the checkpoint folder, or register it first: cellfoundry models import DIR",
    )


def _hash_files(
    folder: Path, report_files: dict[str, str]
) -> tuple[dict[str, str], dict[str, int]]:
    if report_files:
        rels = list(report_files)
    else:
        rels = sorted(p.name for p in folder.iterdir() if p.is_file())
    files, sizes = {}, {}
    for rel in rels:
        f = folder / rel
        if f.is_file():
            files[rel] = report_files.get(rel) or sha256_file(f)
            sizes[rel] = f.stat().st_size
    return files, sizes


def _match_zoo(family: str, variant: str | None, known_release: str | None) -> ZooEntry | None:
    for n in (known_release, variant):
        e = find_entry(n, family)
        if e is not None:
            return e
    return None


def import_checkpoint(
    folder: str | Path,
    *,
    family: str | None = None,
    name: str | None = None,
    copy: bool = False,
    overwrite: bool = False,
) -> RegisteredCheckpoint:
    """Strictly load ``folder`` and register it (referenced in place, or copied when ``copy``)."""
    from cellfoundry.models.foundation import load_foundation

    src = Path(folder).expanduser().resolve()
    if not src.is_dir():
        raise ModelError(
            f"{src} is not a folder", "pass the checkpoint folder (e.g. the unpacked download)"
        )
    model = load_foundation(src, family, verify=True)  # raises CheckpointError naming what is wrong
    rep = model.load_report
    variant = getattr(model, "variant", None) or rep.variant
    # architecture-based variant names cannot tell apart variants that share an architecture
    # (scGPT_CP / organ models vs whole-human, *_CLcancer): a --name naming one of them wins
    declared = find_entry(name, model.family) if name else None
    zoo: ZooEntry | None
    if declared is not None and declared.embedding_dim == int(model.embedding_dim):
        zoo = declared
    else:
        zoo = _match_zoo(model.family, variant, rep.known_release)
    reg_name = name or (zoo.name if zoo else None) or variant or src.name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", reg_name):
        raise ModelError(
            f"'{reg_name}' is not a usable checkpoint name",
            "use letters, digits, '.', '_' and '-' (pass --name)",
        )
    if _norm(reg_name) in _RESERVED:
        raise ModelError(f"'{reg_name}' is a reserved name", "pass another --name")
    with _registry_lock():
        entries = _read_registry()
        existing = next((k for k in entries if _norm(k) == _norm(reg_name)), None)
        same_source = existing is not None and Path(entries[existing]["source_path"]) == src
        if existing is not None and not overwrite and not same_source:
            raise ModelError(
                f"a checkpoint named '{existing}' is already registered "
                f"({entries[existing]['path']})",
                "choose another --name, or pass --overwrite to replace it",
            )
        if existing is not None:
            entries.pop(existing)
        path = src
        if copy and src != (checkpoints_dir() / reg_name).resolve():
            path = checkpoints_dir() / reg_name
            if path.exists():
                shutil.rmtree(path)
            shutil.copytree(src, path)
            model = load_foundation(path, model.family, verify=True)
            rep = model.load_report
        entry = _entry(reg_name, model, variant, path, copy, src, zoo)
        entries[reg_name] = entry.to_dict()
        _write_registry(entries)
    return entry


def _entry(
    reg_name: str,
    model: Any,
    variant: str | None,
    path: Path,
    copy: bool,
    src: Path,
    zoo: ZooEntry | None,
) -> RegisteredCheckpoint:
    rep = model.load_report
    files, sizes = _hash_files(path, dict(rep.files))
    entry = RegisteredCheckpoint(
        name=reg_name,
        family=model.family,
        variant=variant,
        path=str(path),
        mode="copy" if copy else "reference",
        source_path=str(src),
        files=files,
        sizes=sizes,
        imported_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        zoo_name=zoo.name if zoo else None,
        known_release=rep.known_release,
        embedding_dim=int(model.embedding_dim),
        embedding_key=model.embedding_key,
        n_genes=len(model.genes),
        load_report=rep.to_dict(),
    )
    return entry


def remove_checkpoint(name: str) -> RegisteredCheckpoint:
    """Unregister ``name`` (and delete its copy when it was imported with ``copy``)."""
    reg = get_registered(name)
    if reg is None:
        raise ModelError(
            f"no registered checkpoint called '{name}'", "see `cellfoundry models` for the names"
        )
    with _registry_lock():
        entries = _read_registry()
        entries.pop(reg.name, None)
        _write_registry(entries)
    if reg.mode == "copy" and Path(reg.path).is_relative_to(checkpoints_dir()):
        shutil.rmtree(reg.path, ignore_errors=True)
    return reg


def listing() -> dict[str, Any]:
    """The zoo (each variant with its registered local copies), the registry and the families."""
    from cellfoundry.models.registry import families

    regs = registered()
    variants = []
    for e in ZOO:
        d = e.to_dict()
        d["registered"] = [r.name for r in regs if r.zoo_name == e.name]
        variants.append(d)
    return {
        "variants": variants,
        "registered": [r.to_dict() for r in regs],
        "families": [f.to_dict() for f in families()],
    }


# ---------------------------------------------------------------------------------------------
# pull: resumable, verified downloads (explicit request only)
# ---------------------------------------------------------------------------------------------

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
ProgressFn = Callable[[int, int | None], None]


def _server_sha256(headers: Any) -> str | None:
    for key in ("x-linked-etag", "etag"):
        v = headers.get(key)
        if v:
            v = v.strip()
            v = v.removeprefix("W/").strip('"').lower()
            if _HEX64.match(v):
                return str(v)
    return None


def download_file(
    url: str,
    dest: Path,
    *,
    size: int | None = None,
    sha256: str | None = None,
    client: Any = None,
    progress: ProgressFn | None = None,
) -> str:
    """Download ``url`` to ``dest``, resuming ``dest.part`` with an HTTP Range request.

    The finished file must match ``size`` and ``sha256`` (a full digest or a published prefix), or
    the sha256 the server announces (HuggingFace's ``X-Linked-Etag``); otherwise it is deleted and
    a PullError is raised. Returns the file's sha256.
    """
    import httpx

    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and (size is None or dest.stat().st_size == size):
        digest = sha256_file(dest)
        if sha256 is None or digest.startswith(sha256.lower()):
            return digest
    part = dest.with_name(dest.name + ".part")
    own_client = client is None
    cl = client or httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0), follow_redirects=True)
    try:
        server_sha: str | None = None
        for _attempt in range(2):
            offset = part.stat().st_size if part.is_file() else 0
            if size is not None and offset > size:
                part.unlink()
                offset = 0
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            try:
                with cl.stream("GET", url, headers=headers) as r:
                    if r.status_code == 416 and offset:
                        # the part file may already be complete (or is stale): verify, else restart
                        if size is not None and offset == size:
                            break
                        part.unlink()
                        continue
                    if r.status_code not in (200, 206):
                        raise PullError(
                            f"download of {url} failed: HTTP {r.status_code}",
                            "check the model name and that the file still exists upstream",
                        )
                    # HF announces the LFS sha256 on the redirect, the CDN serves the bytes
                    for resp in (*r.history, r):
                        server_sha = _server_sha256(resp.headers) or server_sha
                    if r.status_code == 206:
                        m = re.match(r"bytes (\d+)-", r.headers.get("content-range", ""))
                        if not m or int(m.group(1)) != offset:
                            part.unlink()
                            continue
                        mode = "ab"
                    else:
                        offset, mode = 0, "wb"
                    total = size
                    if total is None and r.headers.get("content-length"):
                        total = offset + int(r.headers["content-length"])
                    done = offset
                    with open(part, mode) as fh:
                        for (
                            block
                        ) in r.iter_bytes():  # as it arrives: a broken-off stream keeps its bytes
                            fh.write(block)
                            done += len(block)
                            if progress:
                                progress(done, total)
                break
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise PullError(
                    f"cannot reach {httpx.URL(url).host} ({type(exc).__name__}: {exc}); no network?",
                    "download on a machine with internet access, copy the folder here and run "
                    "`cellfoundry models import DIR`",
                ) from exc
            except (
                httpx.ReadError,
                httpx.ReadTimeout,
                httpx.RemoteProtocolError,
                httpx.WriteError,
            ) as exc:
                got = part.stat().st_size if part.is_file() else 0
                raise PullError(
                    f"download of {url} broke off after {got:,} bytes ({type(exc).__name__})",
                    "run the same command again: the download resumes where it stopped",
                ) from exc
        got = part.stat().st_size if part.is_file() else 0
        if size is not None and got != size:
            part.unlink(missing_ok=True)
            raise PullError(
                f"{dest.name}: downloaded {got:,} bytes, the published size is {size:,}",
                "the partial file was deleted; run the command again",
            )
        digest = sha256_file(part)
        expected = (sha256 or server_sha or "").lower()
        if expected and not digest.startswith(expected):
            part.unlink(missing_ok=True)
            raise PullError(
                f"{dest.name}: sha256 {digest} does not match the published {expected}",
                "the corrupt download was deleted; run the command again (or report a changed release)",
            )
        os.replace(part, dest)
        return digest
    finally:
        if own_client:
            cl.close()


def hf_url(entry: ZooEntry, f: ZooFile, endpoint: str | None = None) -> str:
    base = (endpoint or os.environ.get("CELLFOUNDRY_HF_ENDPOINT") or HF_ENDPOINT).rstrip("/")
    return f"{base}/{HF_REPO}/resolve/{entry.revision or 'main'}/{f.remote}"


def manual_steps(entry: ZooEntry, dest: Path) -> str:
    """The exact manual steps for variants without a direct download URL."""
    target = dest / entry.name
    names = ", ".join(f.local for f in entry.files if f.required)
    if entry.source == "google-drive":
        return "\n".join(
            [
                f"{entry.name} is published in a Google-Drive folder, which has no direct download URL.",
                f"  1. open {entry.location} in a browser (a Google login may be needed)",
                f"  2. download the files {names} (the folder's 'Download' button gives a zip: unzip it)",
                f"  3. put them in one folder, e.g. mkdir -p {target} && mv args.json best_model.pt vocab.json {target}/",
                f"  4. cellfoundry models import {target}",
            ]
        )
    if entry.source == "zenodo":
        return "\n".join(
            [
                f"{entry.name} is published as a tarball in Zenodo record {entry.location}.",
                f"  1. download model_v1.1.tar.gz from {entry.location} (several GB)",
                f"  2. mkdir -p {dest} && tar -xzf model_v1.1.tar.gz -C {dest}",
                f"  3. cellfoundry models import {dest}/model_v1.1 --name {entry.name}",
                f"     (needs {names}; annotation/ and cellsearch/ are optional)",
            ]
        )
    # HF variant only in an older revision of the repository
    return "\n".join(
        [
            f"{entry.name} is only in an older revision of {HF_REPO} ({entry.notes}).",
            "  1. git lfs install",
            f"  2. git clone https://huggingface.co/{HF_REPO} && cd Geneformer && git checkout {entry.revision}",
            f"  3. mkdir -p {target} && cp {' '.join(f.remote for f in entry.files)} {target}/",
            f"  4. cellfoundry models import {target}",
        ]
    )


@dataclass
class PullResult:
    entry: ZooEntry
    folder: Path
    files: dict[str, str]  # local name -> sha256
    registered: RegisteredCheckpoint | None = None


def pull(
    name: str | ZooEntry,
    dest: str | Path | None = None,
    *,
    endpoint: str | None = None,
    register: bool = True,
    progress: Callable[[str], ProgressFn | None] | None = None,
    client: Any = None,
) -> PullResult:
    """Download a HuggingFace-hosted variant into ``dest/<name>`` and register it.

    Variants without a direct URL raise PullError whose hint holds the manual steps.
    """
    entry = name if isinstance(name, ZooEntry) else zoo_entry(name)
    root = Path(dest).expanduser() if dest is not None else checkpoints_dir() / "downloads"
    if not entry.direct_download:
        raise PullError(
            f"{entry.name} cannot be downloaded automatically ({entry.source})",
            "follow these steps:\n" + manual_steps(entry, root),
        )
    folder = root / entry.name
    folder.mkdir(parents=True, exist_ok=True)
    hashes: dict[str, str] = {}
    for f in entry.files:
        cb = progress(f.local) if progress else None
        try:
            hashes[f.local] = download_file(
                hf_url(entry, f, endpoint),
                folder / f.local,
                size=f.size,
                sha256=f.sha256,
                client=client,
                progress=cb,
            )
        except PullError as exc:
            if f.required or "HTTP 404" not in exc.message:
                raise
    reg = (
        import_checkpoint(folder, family=entry.family, name=entry.name, overwrite=True)
        if register
        else None
    )
    return PullResult(entry=entry, folder=folder, files=hashes, registered=reg)
