"""``cellfoundry models``: what can be used and what each needs."""

from __future__ import annotations

import json

import click

from cellfoundry.models.registry import families


@click.group("models", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def models_group(ctx: click.Context, as_json: bool) -> None:
    """List the model families (and, with subcommands, manage local checkpoints)."""
    if ctx.invoked_subcommand is not None:
        return
    fams = families()
    if as_json:
        click.echo(json.dumps([f.to_dict() for f in fams], indent=2))
        return
    for f in fams:
        click.echo(f"{f.name:<14} [{f.kind}] {f.description}")
        click.echo(f"{'':<14} needs: {f.needs}")
