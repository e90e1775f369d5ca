"""``cellfoundry embed``: cell embeddings from any foundation-model checkpoint folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import anndata as ad
import click
import numpy as np

from cellfoundry.cli.options import species_option

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


def write_into_h5ad(path: Path, key: str, emb: np.ndarray, record: dict[str, Any]) -> None:
    """Add ``obsm[key]`` and ``uns[cellfoundry_embeddings][key]`` to an .h5ad file in place."""
    import h5py
    from anndata.io import read_elem, write_elem

    with h5py.File(path, "r+") as f:
        if "obsm" not in f:
            write_elem(f, "obsm", {})
        if key in f["obsm"]:
            del f["obsm"][key]
        write_elem(f["obsm"], key, emb)
        if "uns" not in f:
            write_elem(f, "uns", {})
        uns = f["uns"]
        runs: dict[str, Any] = {}
        if UNS_KEY in uns:
            runs = dict(read_elem(uns[UNS_KEY]))
            del uns[UNS_KEY]
        runs[key] = record
        write_elem(uns, UNS_KEY, runs)


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
@click.option("--genes-by-cells", is_flag=True, help="CSV/TSV input has genes as rows.")
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
) -> None:
    """Embed the cells of DATA with a foundation model; write OUT.h5ad with obsm["X_<family>"]."""
    from cellfoundry.data.io import read_data
    from cellfoundry.data.species import to_human_space
    from cellfoundry.models.embedding_annotators import embed_cells
    from cellfoundry.models.foundation import load_foundation
    from cellfoundry.models.zoo import resolve_checkpoint

    folder, _reg = resolve_checkpoint(checkpoint)
    model = load_foundation(folder, family, verify=True)
    click.echo(
        f"{model.family} {model.variant} ({model.embedding_dim}-d embeddings) from {folder}",
        err=True,
    )
    for msg in model.load_report.messages:
        click.echo(f"  note: {msg}", err=True)
    is_h5ad = data.lower().endswith(".h5ad")
    adata = read_data(data, backed=is_h5ad, genes_by_cells=genes_by_cells)
    human, report = to_human_space(adata, species)  # mouse/macaque/pig: human orthologs
    emb, plan = embed_cells(
        model,
        human,
        batch_size=batch_size,
        seed=seed,
        progress=True,
        report=report,
        min_coverage=min_coverage,
    )
    for w in plan.warnings:
        click.echo(f"warning: {w}", err=True)
    record = embedding_record(model, folder, plan, batch_size, seed)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if is_h5ad:
        # stream: copy the input file and add the embeddings to the copy, never loading X
        if adata.isbacked:
            adata.file.close()
        if Path(data).resolve() != out_path.resolve():
            shutil.copyfile(data, out_path)
        write_into_h5ad(out_path, model.embedding_key, emb, record)
    else:
        adata.obsm[model.embedding_key] = emb
        runs = dict(adata.uns.get("cellfoundry_embeddings", {}))
        runs[model.embedding_key] = record
        adata.uns["cellfoundry_embeddings"] = runs
        ad.AnnData.write_h5ad(adata, out_path, compression="gzip")
    click.echo(
        json.dumps(
            {
                "out": str(out_path),
                "obsm_key": model.embedding_key,
                "n_cells": int(emb.shape[0]),
                "embedding_dim": int(emb.shape[1]),
                "family": model.family,
                "variant": model.variant,
                "gene_coverage": round(float(plan.coverage.fraction_present), 4),
            },
            indent=2,
        )
    )
