"""The ``cellfoundry`` command line. Each area keeps its commands in its own module."""

from __future__ import annotations

import importlib
import sys
import warnings

import click

from cellfoundry.errors import CellfoundryError, CellfoundryWarning

# (module, attribute) of every command or group; each module owns its commands.
COMMANDS = [
    ("cellfoundry.cli.data", "inspect_cmd"),
    ("cellfoundry.cli.annotate", "train_cmd"),
    ("cellfoundry.cli.annotate", "annotate_cmd"),
    ("cellfoundry.cli.models", "models_group"),
    ("cellfoundry.cli.embed", "embed_cmd"),
    ("cellfoundry.cli.demo", "demo_cmd"),
    ("cellfoundry.cli.service", "serve_cmd"),
    ("cellfoundry.cli.service", "worker_cmd"),
    ("cellfoundry.cli.service", "keys_group"),
    ("cellfoundry.cli.tuning", "finetune_cmd"),
    ("cellfoundry.cli.tuning", "evaluate_cmd"),
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cellfoundry")
def cli() -> None:
    """Annotate single-cell RNA-seq data with foundation models and baselines."""


for _mod, _attr in COMMANDS:
    cli.add_command(getattr(importlib.import_module(_mod), _attr))


_show_warning = warnings.showwarning


def _show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
    """Our own warnings as 'warning: ...' lines (as annotate prints its result's warnings)."""
    if issubclass(category, CellfoundryWarning):
        click.echo(f"warning: {message}", err=True)
    else:
        _show_warning(message, category, filename, lineno, file, line)


def main() -> None:
    """Entry point: user errors print a message and a fix, with exit code 2."""
    warnings.showwarning = _show
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CellfoundryError as exc:
        click.echo(f"error: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"  fix: {exc.hint}", err=True)
        sys.exit(2)
