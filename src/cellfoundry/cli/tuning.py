"""``cellfoundry finetune`` and ``cellfoundry evaluate``."""

from __future__ import annotations

import logging

import click

from cellfoundry.cli.annotate import label_map_option
from cellfoundry.cli.options import species_option


def _split_list(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")


@click.command("finetune")
@click.argument("reference", type=click.Path(exists=True))
@click.option(
    "--label-key", default="cell_type", show_default=True, help="obs column with the cell types."
)
@click.option(
    "--model",
    required=True,
    help="Family name (geneformer|scgpt|scimilarity), registered checkpoint, checkpoint folder or artifact.",
)
@click.option(
    "--method", type=click.Choice(["head", "lora", "full"]), default="lora", show_default=True
)
@click.option("--lora-r", default=8, show_default=True, help="LoRA rank.")
@click.option("--lora-alpha", default=16, show_default=True, help="LoRA scaling alpha.")
@click.option(
    "--lora-targets",
    multiple=True,
    help="Module names to adapt (repeat or comma-separate); family defaults otherwise.",
)
@click.option(
    "--triplet-weight", type=float, default=None, help="Weight of the semi-hard triplet loss."
)
@click.option("--recon-weight", type=float, default=None, help="Weight of the reconstruction loss.")
@click.option("--epochs", default=10, show_default=True)
@click.option("--batch-size", default=64, show_default=True)
@click.option("--lr", type=float, default=None, help="Peak learning rate (per-method default).")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--variant", default=None, help="Architecture size for random initialisation (family-specific)."
)
@click.option(
    "--n-features",
    default=3000,
    show_default=True,
    help="Reference genes for random-init models (0 = all).",
)
@click.option(
    "--out", required=True, type=click.Path(), help="Folder to write the fine-tuned artifact to."
)
@species_option
def finetune_cmd(
    reference: str,
    label_key: str,
    model: str,
    method: str,
    lora_r: int,
    lora_alpha: int,
    lora_targets: tuple[str, ...],
    triplet_weight: float | None,
    recon_weight: float | None,
    epochs: int,
    batch_size: int,
    lr: float | None,
    seed: int,
    variant: str | None,
    n_features: int,
    out: str,
    species: str = "auto",
) -> None:
    """Fine-tune a foundation model (head, LoRA or full) on a labelled REFERENCE."""
    from cellfoundry.data.io import read_data
    from cellfoundry.outputs import check_outputs
    from cellfoundry.tuning.finetune import finetune

    check_outputs([out], [reference], folders=True)
    _log_to_stderr()
    adata = read_data(reference)
    click.echo(f"fine-tuning {model} ({method}) on {adata.n_obs:,} cells ({label_key})", err=True)
    ann = finetune(
        adata,
        label_key,
        model,
        method,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_targets=_split_list(lora_targets) or None,
        triplet_weight=triplet_weight,
        recon_weight=recon_weight,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        variant=variant,
        n_features=n_features or None,
        out=out,
        species=species,
    )
    m, extra = ann.manifest.metrics, ann.manifest.extra
    if extra["base"]["random_init"]:
        click.echo(f"WARNING: {extra['base']['warning']}", err=True)
    tp = extra["trainable_parameters"]
    click.echo(
        f"held-out test accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}, ECE {m['ece']:.3f}; "
        f"trainable parameters {tp['trainable']:,} of {tp['total']:,} ({tp['share']:.2%}); saved to {out}"
    )
    if not extra["guards"]["success"]:
        click.echo(
            "NOT A SUCCESS — guards failed: " + "; ".join(extra["guards"]["failures"]), err=True
        )
        raise SystemExit(3)


@click.command("evaluate")
@click.argument("reference", type=click.Path(exists=True))
@click.option("--label-key", default="cell_type", show_default=True)
@click.option(
    "--model", required=True, help="Family name, registered checkpoint or checkpoint folder."
)
@click.option(
    "--query",
    type=click.Path(exists=True),
    default=None,
    help="Labelled query to test on (else a reference split).",
)
@click.option(
    "--query-label-key",
    default=None,
    help="obs column of the query's labels (default: --label-key).",
)
@click.option("--seeds", default=3, show_default=True)
@click.option(
    "--methods",
    default="logreg,head,lora",
    show_default=True,
    help="Comma-separated: logreg,knn,head,lora,full.",
)
@click.option("--epochs", default=5, show_default=True)
@click.option("--no-umap", is_flag=True, help="Skip the UMAP figures.")
@label_map_option
@click.option("--out", required=True, type=click.Path(), help="Report folder.")
@species_option
@click.option(
    "--query-species",
    default="auto",
    show_default=True,
    help="Species of the query's genes (as --species; auto detects it).",
)
def evaluate_cmd(
    reference: str,
    label_key: str,
    model: str,
    query: str | None,
    query_label_key: str | None,
    seeds: int,
    methods: str,
    epochs: int,
    no_umap: bool,
    label_map: str | None,
    out: str,
    species: str = "auto",
    query_species: str = "auto",
) -> None:
    """Compare logistic regression, frozen encoder + head, LoRA (and full) over seeds; write a report.

    Macro-F1 averages over the true labels only. Beside the forced-choice accuracy and macro-F1:
    coverage (share not Unknown) and the called cells' macro-F1, the ontology-aware score (Cell
    Ontology terms: finer calls are right, coarser ones get partial credit; --label-map names
    terms for the model's classes and for the data's labels), and a majority-class and a chance row.
    """
    from cellfoundry.evaluation.compare import evaluate
    from cellfoundry.outputs import check_outputs

    check_outputs([out], [reference, *(p for p in (query, label_map) if p)], folders=True)
    _log_to_stderr()
    rep = evaluate(
        reference,
        label_key,
        model,
        query=query,
        query_label_key=query_label_key,
        seeds=seeds,
        out=out,
        methods=_split_list((methods,)),
        epochs=epochs,
        umap=not no_umap,
        species=species,
        query_species=query_species,
        label_map=label_map,
    )

    def fmt(r: dict, k: str) -> str:
        mean, std = r.get(f"{k}_mean"), r.get(f"{k}_std")
        return "—" if mean is None else f"{mean:.3f} ± {std or 0:.3f}"

    click.echo("macro-F1 over the true labels; called = cells not Unknown")
    for r in rep["mean_std"]:
        click.echo(
            f"{r['model']:<14} {r['method']:<9} macro-F1 {fmt(r, 'macro_f1')}  "
            f"accuracy {fmt(r, 'accuracy')}  coverage {fmt(r, 'coverage')}  "
            f"called macro-F1 {fmt(r, 'called_macro_f1')}  ontology {fmt(r, 'ontology_score')}  "
            f"expressible {fmt(r, 'expressible_share')}"
        )
    for w in rep["warnings"]:
        click.echo(f"WARNING: {w}", err=True)
    click.echo(f"report: {out}/report.html")
