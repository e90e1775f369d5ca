"""``cellfoundry embed``: cell embeddings from any foundation-model checkpoint folder."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import anndata as ad
import click

from cellfoundry.cli.options import genes_by_cells_option, species_option

UNS_KEY = "cellfoundry_embeddings"


def _clean(v: Any) -> Any:
    """Values anndata can write in uns (no None)."""
    if v is None:
        return ""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    return v


def embedding_record(
    model: Any, checkpoint: Path, plan: Any, batch_size: int, seed: int
) -> dict[str, Any]:
    """What ``uns[cellfoundry_embeddings][KEY]`` records about one embedding run."""
    from cellfoundry import __version__

    rep = model.load_report
    return _clean(
        {
            "family": model.family,
            "variant": model.variant,
            "known_release": rep.known_release,
            "checkpoint": str(checkpoint),
            "embedding_key": model.embedding_key,
            "embedding_dim": int(model.embedding_dim),
            "batch_size": int(batch_size),
            "seed": int(seed),
            "matrix": plan.source,
            "gene_key_kind": plan.coverage.key_kind,
            "genes_present": int(plan.coverage.n_present),
            "genes_in_model": int(plan.coverage.n_target),
            "gene_coverage": float(plan.coverage.fraction_present),
            "load_report": json.dumps(rep.to_dict()),
            "cellfoundry_version": __version__,
        }
    )


def write_record(path: Path, key: str, record: dict[str, Any]) -> None:
    """Add ``uns[cellfoundry_embeddings][key]`` to an .h5ad file in place (other runs kept)."""
    import h5py
    from anndata.io import read_elem

    from cellfoundry.data.h5ad_copy import write_results

    runs: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        if "uns" in f and UNS_KEY in f["uns"]:
            runs = dict(read_elem(f["uns"][UNS_KEY]))
    runs[key] = record
    write_results(path, uns={UNS_KEY: runs})


@click.command("embed")
@click.argument("data", type=click.Path(exists=True))
@click.option(
    "--model",
    "checkpoint",
    required=True,
    help="Checkpoint folder in a family's published layout (or a registered name, see `cellfoundry models`).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Output .h5ad (input data + obsm key).",
)
@click.option(
    "--family",
    default=None,
    help="geneformer | scgpt | scimilarity (default: detected from the files).",
)
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--max-tokens",
    default=None,
    type=click.IntRange(min=1),
    help="Geneformer/scGPT: most padded tokens (cells x the batch's longest cell) per forward "
    "pass, so each pass holds about the same memory; lower it when a GPU runs out of memory, "
    "raise it for fewer, larger passes (default: the family's, 32,768).",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="Seed of any random step (scGPT binning ties).",
)
@click.option(
    "--min-coverage",
    type=click.FloatRange(0, 1),
    default=None,
    help="Refuse when fewer of the model's genes are present (default: the family's threshold).",
)
@genes_by_cells_option
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Geneformer/scGPT: auto uses a CUDA GPU when torch sees one, else the CPU.",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
    default="auto",
    show_default=True,
    help="auto: fp32 on the CPU (exact), bf16 (or fp16) autocast on a GPU.",
)
@species_option
def embed_cmd(
    data: str,
    checkpoint: str,
    out: str,
    family: str | None,
    batch_size: int,
    seed: int,
    min_coverage: float | None,
    genes_by_cells: bool,
    species: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    max_tokens: int | None = None,
) -> None:
    """Embed the cells of DATA with a foundation model; write OUT.h5ad with obsm["X_<family>"]."""
    from cellfoundry.data.atomic import written_atomically
    from cellfoundry.data.h5ad_copy import ObsmWriter, copy_h5ad
    from cellfoundry.data.io import close_backed, read_data
    from cellfoundry.data.species import to_human_space
    from cellfoundry.models.accel import resolve_accel
    from cellfoundry.models.embedding_annotators import embed_cells
    from cellfoundry.models.foundation import load_foundation
    from cellfoundry.models.zoo import resolve_checkpoint
    from cellfoundry.outputs import check_outputs

    is_h5ad = data.lower().endswith(".h5ad")
    check_outputs([out], [data], in_place=(out, data) if is_h5ad else None)
    folder, _reg = resolve_checkpoint(checkpoint)
    model = load_foundation(folder, family, verify=True)
    click.echo(
        f"{model.family} {model.variant} ({model.embedding_dim}-d embeddings) from {folder}",
        err=True,
    )
    for msg in model.load_report.messages:
        click.echo(f"  note: {msg}", err=True)
    # where it runs, resolved before any work (a missing GPU is refused here, exit 2)
    runs_on = "cpu fp32"
    embed_params = inspect.signature(model.embed).parameters
    if "device" in embed_params:
        runs_on = resolve_accel(device, precision).describe()
    click.echo(f"  running on {runs_on}", err=True)
    if max_tokens is not None and "max_tokens" not in embed_params:
        raise click.BadParameter(
            f"{model.family} has no token budget: it reads cells in row chunks; leave out "
            "--max-tokens (use --batch-size)",
            param_hint="--max-tokens",
        )
    adata = read_data(data, backed=is_h5ad, genes_by_cells=True if genes_by_cells else None)
    human, report = to_human_space(adata, species)  # mouse/macaque/pig: human orthologs
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    key, dim, n_cells = model.embedding_key, int(model.embedding_dim), int(adata.n_obs)
    # written beside OUT and renamed when complete: an interruption leaves OUT (or the input
    # embedded in place) as it was. An .h5ad input is copied as bytes and the embeddings are
    # written into the copy block by block: memory holds one chunk of cells, never X or the
    # whole embedding matrix
    with written_atomically(out_path) as tmp:
        if is_h5ad:
            copy_h5ad(data, tmp)
            sink: Any = ObsmWriter(tmp, key, n_cells, dim)
        else:
            sink = None
        try:
            emb, plan = embed_cells(
                model,
                human,
                batch_size=batch_size,
                seed=seed,
                progress=True,
                report=report,
                min_coverage=min_coverage,
                out=sink,
                device=device,
                precision=precision,
                max_tokens=max_tokens,
            )
        finally:
            if sink is not None:
                sink.close()
        for w in plan.warnings:
            click.echo(f"warning: {w}", err=True)
        record = embedding_record(model, folder, plan, batch_size, seed)
        record["device"] = runs_on
        if "max_tokens" in embed_params:  # the budget the passes used (given, else the family's)
            default = embed_params["max_tokens"].default
            record["max_tokens"] = int(max_tokens if max_tokens is not None else default)
        if is_h5ad:
            write_record(tmp, key, record)
            close_backed(adata)  # embedding in place: the input is replaced next
        else:
            adata.obsm[key] = emb
            runs = dict(adata.uns.get("cellfoundry_embeddings", {}))
            runs[key] = record
            adata.uns["cellfoundry_embeddings"] = runs
            ad.AnnData.write_h5ad(adata, tmp, compression="gzip")
    click.echo(
        json.dumps(
            {
                "out": str(out_path),
                "obsm_key": model.embedding_key,
                "n_cells": n_cells,
                "embedding_dim": dim,
                "family": model.family,
                "variant": model.variant,
                "gene_coverage": round(float(plan.coverage.fraction_present), 4),
            },
            indent=2,
        )
    )
