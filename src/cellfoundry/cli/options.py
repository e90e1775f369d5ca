"""Command-line options shared by several commands."""

from __future__ import annotations

import click

species_option = click.option(
    "--species",
    default="auto",
    show_default=True,
    help="Species of the data's genes: human, mouse, rhesus, cynomolgus or pig; auto detects it "
    "from the gene IDs. Non-human genes are mapped to human orthologs (human: use them as named).",
)

genes_by_cells_option = click.option(
    "--genes-by-cells",
    is_flag=True,
    help="CSV/TSV input has genes as rows (default: detected, genes are rows when most row names "
    "and almost no column names are gene IDs or symbols).",
)
