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
