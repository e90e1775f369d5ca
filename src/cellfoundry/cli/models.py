"""``cellfoundry models``: the model zoo, the annotator families, local checkpoints (import / pull)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def _params(n: int, note: str) -> str:
    s = f"{n / 1e6:.1f}M"
    return ("≈" + s) if note.startswith("approx") else s


def _listing() -> dict[str, Any]:
    from cellfoundry.models.zoo import listing

    return listing()


@click.group("models", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def models_group(ctx: click.Context, as_json: bool) -> None:
    """List the published foundation models, local checkpoints and annotator families."""
    if ctx.invoked_subcommand is not None:
        return
    listing = _listing()
    if as_json:
        click.echo(json.dumps(listing, indent=2))
        return
    click.echo(
        "Published foundation-model variants (local copy: `cellfoundry models import DIR` / `pull NAME`):"
    )
    head = f"{'name':<28} {'family':<11} {'params':>8} {'emb':>5} {'genes':<8} {'input':<26} {'licence':<11} {'source':<12} local"
    click.echo(head)
    click.echo("-" * len(head))
    for v in listing["variants"]:
        lic = v["licence"].split(" ")[0]
        src = v["source"] + ("*" if v["direct_download"] else "")
        local = ", ".join(v["registered"]) or "-"
        click.echo(
            f"{v['name']:<28} {v['family']:<11} {_params(v['parameters'], v['parameters_note']):>8} "
            f"{v['embedding_dim']:>5} {v['gene_kind']:<8} {v['input_length'][:26]:<26} {lic:<11} {src:<12} {local}"
        )
    click.echo(
        "(* = direct download with `cellfoundry models pull NAME`; others print the manual steps)"
    )
    click.echo("")
    click.echo("Where the weights are published (licence):")
    for v in listing["variants"]:
        click.echo(f"  {v['name']:<28} {v['location']}  ({v['licence']})")
    regs = listing["registered"]
    click.echo("")
    click.echo(f"Registered checkpoints ({len(regs)}):" if regs else "Registered checkpoints: none")
    for r in regs:
        click.echo(
            f"  {r['name']:<28} {r['family']:<11} variant {r['variant']}, {r['mode']} of {r['path']}"
        )
    click.echo("")
    click.echo("Annotator families (cellfoundry train --model NAME):")
    for f in listing["families"]:
        click.echo(f"  {f['name']:<18} [{f['kind']}] {f['description']}")
        click.echo(f"  {'':<18} needs: {f['needs']}")


@models_group.command("import")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--family",
    default=None,
    help="geneformer | scgpt | scimilarity (default: detected from the files).",
)
@click.option(
    "--name",
    default=None,
    help="Registered name (default: the zoo variant it matches, or the folder name).",
)
@click.option(
    "--copy",
    "copy_",
    is_flag=True,
    help="Copy the folder under $CELLFOUNDRY_HOME/checkpoints (default: reference it in place).",
)
@click.option("--overwrite", is_flag=True, help="Replace a registered checkpoint of the same name.")
def import_cmd(
    folder: str, family: str | None, name: str | None, copy_: bool, overwrite: bool
) -> None:
    """Verify a checkpoint FOLDER by strict loading and register it."""
    from cellfoundry.models.zoo import import_checkpoint

    reg = import_checkpoint(folder, family=family, name=name, copy=copy_, overwrite=overwrite)
    how = "copied to" if reg.mode == "copy" else "referenced in place at"
    click.echo(
        f"registered '{reg.name}': {reg.family} {reg.variant} ({reg.embedding_dim}-d), {how} {reg.path}"
    )
    if reg.zoo_name:
        click.echo(
            f"  matches published variant {reg.zoo_name}"
            + (f" (release hashes match {reg.known_release})" if reg.known_release else "")
        )
    else:
        click.echo("  no published variant matched (random or custom weights?)")
    for msg in reg.load_report.get("messages", []):
        click.echo(f"  note: {msg}")


@models_group.command("pull")
@click.argument("name")
@click.option(
    "--dest",
    type=click.Path(file_okay=False),
    default=None,
    help="Download folder (default: $CELLFOUNDRY_HOME/checkpoints/downloads); files go to DEST/NAME.",
)
@click.option("--no-import", "no_import", is_flag=True, help="Only download; do not register.")
def pull_cmd(name: str, dest: str | None, no_import: bool) -> None:
    """Download a published variant (HuggingFace-hosted Geneformer files; others print manual steps)."""
    from tqdm.auto import tqdm

    from cellfoundry.models.zoo import checkpoints_dir, manual_steps, pull, zoo_entry

    entry = zoo_entry(name)
    root = Path(dest) if dest else checkpoints_dir() / "downloads"
    if not entry.direct_download:
        click.echo(manual_steps(entry, root))
        return
    bars: dict[str, Any] = {}

    def progress(fname: str) -> Any:
        def cb(done: int, total: int | None) -> None:
            bar = bars.get(fname)
            if bar is None:
                bar = bars[fname] = tqdm(
                    total=total, initial=0, unit="B", unit_scale=True, desc=fname
                )
            bar.total = total
            bar.n = done
            bar.refresh()

        return cb

    try:
        res = pull(entry, root, register=not no_import, progress=progress)
    finally:
        for b in bars.values():
            b.close()
    click.echo(
        f"downloaded {entry.name} to {res.folder} ({len(res.files)} files, sizes and sha256 verified)"
    )
    if res.registered:
        click.echo(f"registered as '{res.registered.name}'")


@models_group.command("remove")
@click.argument("name")
def remove_cmd(name: str) -> None:
    """Unregister a checkpoint (deletes it only when it was imported with --copy)."""
    from cellfoundry.models.zoo import remove_checkpoint

    reg = remove_checkpoint(name)
    click.echo(
        f"removed '{reg.name}'"
        + (f" and deleted its copy {reg.path}" if reg.mode == "copy" else "")
    )
