"""``cellfoundry demo``: train a baseline on data scanpy ships offline, annotate, print the report."""

from __future__ import annotations

import tempfile

import click


@click.command("demo")
@click.option("--seed", default=0, show_default=True)
def demo_cmd(seed: int) -> None:
    """Train logistic regression on 70% of scanpy's pbmc68k_reduced and annotate the other 30%."""
    from cellfoundry.demo import DEMO_LABEL_KEY, run_demo

    with tempfile.TemporaryDirectory() as tmp:
        out = run_demo(tmp, seed=seed)
    click.echo("== validation report (scanpy's bundled pbmc68k_reduced) ==")
    click.echo(out["report"].render())
    m = out["model"].manifest.metrics
    click.echo("\n== model ==")
    click.echo(
        f"{out['model'].name}: {len(out['model'].classes)} classes of obs['{DEMO_LABEL_KEY}'], "
        f"held-out accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}, "
        f"Unknown threshold {out['model'].threshold:.3f}"
    )
    q = out["metrics"]
    s = out["result"].summary()
    click.echo("\n== annotation of the 30% query cells ==")
    click.echo(
        f"cells {s['n_cells']}, accuracy {q['accuracy']:.3f}, macro-F1 {q['macro_f1']:.3f}, "
        f"ECE {q['ece']:.3f}, mean confidence {s['mean_confidence']:.3f}, Unknown {s['unknown_share']:.1%}"
    )
    for label, n in s["label_counts"].items():
        click.echo(f"  {label:<32} {n}")
    click.echo("\nmost confused (true -> predicted):")
    for row in out["most_confused"].itertuples():
        click.echo(
            f"  {row.true} -> {row.predicted}: {row.count} ({row.share_of_true:.0%} of {row.true})"
        )
