"""``cellfoundry inspect``: the validation report of a dataset."""

from __future__ import annotations

import click

from cellfoundry.cli.options import genes_by_cells_option, species_option
from cellfoundry.data.io import read_data
from cellfoundry.data.report import validate


@click.command("inspect")
@click.argument("data", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@genes_by_cells_option
@species_option
def inspect_cmd(data: str, as_json: bool, genes_by_cells: bool, species: str) -> None:
    """Validate DATA (.h5ad, 10x .h5 or MEX folder, CSV/TSV) and report what it holds."""
    adata = read_data(
        data, backed=data.endswith(".h5ad"), genes_by_cells=True if genes_by_cells else None
    )
    report = validate(adata, species)
    click.echo(report.to_json(indent=2) if as_json else report.render())
    if not report.ok:
        raise SystemExit(1)
