"""``cellfoundry train`` and ``cellfoundry annotate``."""

from __future__ import annotations

import json
from typing import Any

import click

from cellfoundry.api import annotate, train
from cellfoundry.cli.options import genes_by_cells_option, species_option
from cellfoundry.data.io import read_data
from cellfoundry.data.prepare import DEFAULT_MIN_COVERAGE
from cellfoundry.models.baselines.refit import DEFAULT_REFIT_BELOW
from cellfoundry.ontology import LabelMapping
from cellfoundry.outputs import (
    check_outputs,
    table_format,
    write_annotated_h5ad,
    write_predictions,
)

label_map_option = click.option(
    "--label-map",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="CSV label,ontology_term_id: Cell Ontology term per class (wins over the automatic mapping).",
)


@click.command("train")
@click.argument("reference", type=click.Path(exists=True))
@click.option(
    "--label-key", default="cell_type", show_default=True, help="obs column with the cell types."
)
@click.option(
    "--model",
    "family",
    default="logreg",
    show_default=True,
    help="Model family (see `cellfoundry models`).",
)
@click.option(
    "--out", required=True, type=click.Path(), help="Folder to write the model artifact to."
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--n-features", default=2000, show_default=True, help="Most variable genes used (0 = all)."
)
@click.option(
    "--checkpoint",
    default=None,
    help="Foundation checkpoint folder or registered name (for *-knn / *-head models).",
)
@click.option(
    "--cv-folds",
    default=0,
    show_default=True,
    help="Baselines: also keep out-of-fold predictions of every reference cell from this many "
    "folds (≥ 2; that many more fits), which weigh the model in a consensus.",
)
@species_option
@label_map_option
def train_cmd(
    reference: str,
    label_key: str,
    family: str,
    out: str,
    seed: int,
    n_features: int,
    checkpoint: str | None = None,
    cv_folds: int = 0,
    species: str = "auto",
    label_map: str | None = None,
) -> None:
    """Train a baseline annotator on a labelled REFERENCE."""
    check_outputs([out], [reference, *(p for p in (label_map,) if p)], folders=True)
    adata = read_data(reference)
    click.echo(
        f"training {family} on {adata.n_obs:,} cells x {adata.n_vars:,} genes ({label_key})",
        err=True,
    )
    extra: dict[str, Any] = {"checkpoint": checkpoint} if checkpoint else {}
    if cv_folds:
        extra["cv_folds"] = cv_folds
    model = train(
        adata,
        label_key,
        family,
        out=out,
        seed=seed,
        n_features=n_features or None,
        species=species,
        progress=True,
        label_map=label_map,
        **extra,
    )
    m = model.manifest.metrics
    click.echo(
        f"held-out accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}, ECE {m.get('ece', float('nan')):.3f}; "
        f"Unknown threshold {model.threshold:.3f}; {len(model.classes)} classes; saved to {out}"
    )
    echo_terms(model.ontology)


@click.command("annotate")
@click.argument("query", type=click.Path(exists=True))
@click.option(
    "--model",
    "model_dirs",
    required=True,
    multiple=True,
    type=click.Path(exists=True),
    help="A trained model folder. Give it several times for the models' consensus "
    "(obs consensus_cell_type, consensus_agreement, and each model's columns as "
    "<column>__<model name>).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="OUT.h5ad: the input plus the predictions (obs, obsm, uns); an .h5ad input's matrices are "
    "copied as bytes, never loaded. OUT.csv / .tsv / .parquet: the predictions table only.",
)
@click.option(
    "--predictions",
    "table_out",
    type=click.Path(dir_okay=False),
    help="Also (or only) write the per-cell predictions as a table: .csv, .tsv or .parquet.",
)
@click.option("--csv", "csv_out", type=click.Path(), help="Also write a per-cell table as CSV.")
@click.option(
    "--threshold", type=float, default=None, help="Override the model's Unknown threshold."
)
@click.option(
    "--min-coverage",
    type=float,
    default=DEFAULT_MIN_COVERAGE,
    show_default=True,
    help="Refuse when fewer of the model's genes are present. At the default each family keeps "
    "its own minimum (baselines: 5 % of their genes and 100 genes).",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Cells read and predicted at a time (memory holds one chunk).",
)
@species_option
@genes_by_cells_option
@label_map_option
@click.option(
    "--level",
    default=None,
    help='Also report each call at a broader Cell Ontology term: a name or id ("T cell", '
    '"monocyte", CL:0000236) or "broad" (T/B/NK cell, monocyte, dendritic cell, ...).',
)
@click.option(
    "--reference",
    type=click.Path(exists=True),
    default=None,
    help="Labelled reference the baseline was trained on: when the query lacks many model genes, "
    "the model is refit on the genes shared by reference and query (default: the reference file "
    "recorded in the model, if unchanged).",
)
@click.option(
    "--refit-below",
    type=float,
    default=DEFAULT_REFIT_BELOW,
    show_default=True,
    help="Refit a baseline when fewer than this share of its genes are in the query.",
)
@click.option(
    "--explain",
    is_flag=True,
    help="Also write obs['prediction_top_genes']: the genes contributing most to each call.",
)
def annotate_cmd(
    query: str,
    model_dirs: tuple[str, ...],
    out: str | None,
    table_out: str | None,
    csv_out: str | None,
    threshold: float | None,
    min_coverage: float,
    chunk_size: int,
    species: str = "auto",
    genes_by_cells: bool = False,
    label_map: str | None = None,
    level: str | None = None,
    reference: str | None = None,
    refit_below: float = DEFAULT_REFIT_BELOW,
    explain: bool = False,
) -> None:
    """Annotate the cells of QUERY with a trained model."""
    if not out and not csv_out and not table_out:
        raise click.UsageError(
            "give --out OUT.h5ad (annotated copy) or --out / --predictions OUT.csv|OUT.parquet"
        )
    tables: list[tuple[str, str | None]] = [(table_out, None)] if table_out else []
    if csv_out:
        tables.append((csv_out, "csv"))
    if out and table_format(out) is not None:
        tables.insert(0, (out, None))
        out = None
    elif out and not out.lower().endswith(".h5ad"):
        raise click.BadParameter(
            f"{out}: end it with .h5ad (annotated data) or .csv/.tsv/.parquet (predictions only)",
            param_hint="--out",
        )
    if table_out and table_format(table_out) is None:
        raise click.BadParameter(
            f"{table_out}: end it with .csv, .tsv or .parquet", param_hint="--predictions"
        )
    is_h5ad = query.lower().endswith(".h5ad")
    check_outputs(
        [p for p, _ in tables] + ([out] if out else []),
        [query, *model_dirs, *(p for p in (reference, label_map) if p)],
        in_place=(out, query) if out and is_h5ad else None,
    )
    adata = read_data(query, backed=is_h5ad, genes_by_cells=True if genes_by_cells else None)
    result = annotate(
        adata,
        list(model_dirs) if len(model_dirs) > 1 else model_dirs[0],
        threshold=threshold,
        min_coverage=min_coverage,
        chunk_size=chunk_size,
        progress=True,
        species=species,
        label_map=label_map,
        level=level,
        reference=reference,
        refit_below=refit_below,
        explain=explain,
    )
    for path, fmt in tables:
        write_predictions(result, path, fmt=fmt)
    if out:
        write_annotated_h5ad(result, out, source=query if is_h5ad else None)
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    if result.gene_panel is not None:
        click.echo(f"genes: {result.gene_panel.mode}: {result.gene_panel.description}", err=True)
    click.echo(json.dumps(result.summary(), indent=2))


def echo_terms(mapping: LabelMapping) -> None:
    """One line per class on stderr: its Cell Ontology term and how it was found."""
    click.echo(
        f"Cell Ontology ({mapping.ontology_version}): {len(mapping.terms)} of "
        f"{len(mapping.matches)} classes mapped",
        err=True,
    )
    for m in mapping.matches.values():
        term = f"{m.term_id} {m.term_name}" if m.term_id else "(unmapped)"
        click.echo(f"  {m.label!r:32} -> {term} [{m.method}]", err=True)
