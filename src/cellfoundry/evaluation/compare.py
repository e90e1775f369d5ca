"""``cellfoundry.evaluation.evaluate``: compare baselines and fine-tuning methods on the same splits.

Every run's predictions are written first (``predictions/*.csv``); every number of the report
(summary, confusion, per-class, calibration) is then computed by reading those files back.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy.special import softmax
from sklearn.metrics import precision_recall_fscore_support
from sklearn.model_selection import train_test_split

from cellfoundry.artifacts import cell_keys, trained_on
from cellfoundry.data.io import as_anndata
from cellfoundry.data.species import to_human_space
from cellfoundry.errors import DataError
from cellfoundry.evaluation.ontology_scores import CREDIT_RULE
from cellfoundry.models.fitting import read_labels
from cellfoundry.ontology import read_label_map
from cellfoundry.stats.calibration import expected_calibration_error
from cellfoundry.stats.labels import called_mask, labelled_mask
from cellfoundry.stats.metrics import (
    BASE_EMBEDDING,
    INPUT_RECONSTRUCTION,
    MACRO_F1_OVER,
    classification_metrics,
    confusion_frame,
    most_confused,
    reference_rows,
)
from cellfoundry.stats.splits import cells_sha256

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = [
    "model",
    "method",
    "seed",
    "n_cells",
    "accuracy",
    "macro_f1",
    "weighted_f1",
    "coverage",
    "called_accuracy",
    "called_macro_f1",
    "triplet_loss",
    INPUT_RECONSTRUCTION,
    BASE_EMBEDDING,
    "ece",
    "ontology_accuracy",
    "ontology_score",
    "expressible_share",
    "trainable_parameters",
    "train_seconds",
]
ONTOLOGY_COLUMNS = ("ontology_accuracy", "ontology_score", "expressible_share")
LOSS_COLUMNS = ("triplet_loss", INPUT_RECONSTRUCTION, BASE_EMBEDDING)
# reference rows of every report: computed from each seed's test truth
REFERENCE_MODEL = "reference"
DEFAULT_HELDOUT_FRACTION = 0.3
BASELINES = ("logreg", "knn")
FINETUNE_METHODS = ("head", "lora", "full")
UMAP_MAX_CELLS = 3000


def uncalibrated(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities before temperature scaling: softmax(T * log p) undoes softmax(z / T)."""
    logp = np.log(np.clip(proba.astype(np.float64), 1e-30, None))
    return softmax(temperature * logp, axis=1).astype(np.float32)


def _split(
    adata: ad.AnnData, label_key: str, seed: int, test_fraction: float
) -> tuple[ad.AnnData, ad.AnnData]:
    labels = read_labels(adata, label_key)
    idx = np.nonzero(labels.keep)[0]
    tr, te = train_test_split(idx, test_size=test_fraction, stratify=labels.y, random_state=seed)
    return adata[np.sort(tr)].copy(), adata[np.sort(te)].copy()


def _prediction_frame(
    cells: Sequence[str],
    truth: Sequence[str],
    classes: list[str],
    proba: np.ndarray,
    temperature: float,
    threshold: float,
) -> pd.DataFrame:
    raw = uncalibrated(proba, temperature)
    pred = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    df = pd.DataFrame(
        {
            "cell": list(cells),
            "true": list(truth),
            "predicted": pred,
            "confidence": proba.max(axis=1),
            "called": called_mask(proba, threshold),
        }
    )
    for j, c in enumerate(classes):
        df[f"p::{c}"] = proba[:, j]
    for j, c in enumerate(classes):
        df[f"raw::{c}"] = raw[:, j]
    return df


def read_predictions(path: Path) -> tuple[pd.DataFrame, list[str], np.ndarray, np.ndarray]:
    """(frame, classes, calibrated probabilities, uncalibrated probabilities) from a stored predictions CSV."""
    df = pd.read_csv(path, dtype={"cell": str, "true": str, "predicted": str})
    classes = [c[3:] for c in df.columns if c.startswith("p::")]
    proba = df[[f"p::{c}" for c in classes]].to_numpy(np.float64)
    raw = df[[f"raw::{c}" for c in classes]].to_numpy(np.float64)
    return df, classes, proba, raw


def metrics_from_file(
    path: Path, label_map: dict[str, str] | str | Path | None = None
) -> dict[str, Any]:
    """Accuracy, macro/weighted-F1, coverage, called-cell and ontology-aware metrics and ECE
    (before/after temperature) recomputed from a predictions file.

    ``label_map``: label -> CL term for the model's classes and the true labels (a model's own
    stored terms and a user's table); the rest are mapped automatically.
    """
    from cellfoundry.evaluation.ontology_scores import ontology_metrics

    df, classes, proba, raw = read_predictions(path)
    called = df["called"].to_numpy(bool) if "called" in df.columns else None
    m = classification_metrics(df["true"].tolist(), df["predicted"].tolist(), called=called)
    m["ontology"] = ontology_metrics(
        df["true"].to_numpy(),
        df["predicted"].to_numpy(),
        classes,
        label_map=label_map,
        called=called,
    )
    m |= {k: m["ontology"][k] for k in ONTOLOGY_COLUMNS}
    idx = {c: i for i, c in enumerate(classes)}
    known = df["true"].isin(idx).to_numpy()
    y = np.array([idx[t] for t in df["true"][known]])
    m["ece"] = expected_calibration_error(proba[known], y) if known.any() else float("nan")
    m["ece_before_temperature"] = (
        expected_calibration_error(raw[known], y) if known.any() else float("nan")
    )
    return m


def _trained_on(train_ad: ad.AnnData, label_key: str, holdout: dict[str, Any] | None) -> str:
    """Hash of the cells a model fit on (its own record of training indices into labelled cells)."""
    if holdout is None or "train_index" not in holdout:
        return ""
    kept = train_ad.obs_names[read_labels(train_ad, label_key).keep]
    return cells_sha256(kept[np.asarray(holdout["train_index"])])


def _run_baseline(
    name: str,
    train_ad: ad.AnnData,
    test_ad: ad.AnnData,
    label_key: str,
    seed: int,
    heldout_fraction: float,
) -> dict[str, Any]:
    from cellfoundry.models.registry import annotator_class

    t0 = time.perf_counter()
    # no refit on all cells: the baseline fits on exactly the cells the fine-tunes train on
    model = annotator_class(name).train(  # type: ignore[attr-defined]
        train_ad, label_key, seed=seed, holdout_fraction=heldout_fraction, refit=False
    )
    secs = time.perf_counter() - t0
    pred = model.predict(test_ad)
    n_params = (
        int(sum(v.size for k, v in model.state.items() if k in ("W", "b")))
        if name == "logreg"
        else 0
    )
    return {
        "model": model,
        "proba": pred.probabilities,
        "embeddings": None,
        "train_seconds": secs,
        "trainable_parameters": n_params,
        **dict.fromkeys(LOSS_COLUMNS, float("nan")),
        "temperature": float(model.manifest.temperature),
        "threshold": float(model.threshold),
        "train_cells_sha256": _trained_on(train_ad, label_key, model.holdout),
        "guards": None,
        "random_init": False,
    }


def _run_finetune(
    model: str | Path,
    method: str,
    train_ad: ad.AnnData,
    test_ad: ad.AnnData,
    label_key: str,
    seed: int,
    epochs: int,
    options: dict[str, Any],
    heldout_fraction: float,
) -> dict[str, Any]:
    from cellfoundry.tuning.finetune import finetune

    t0 = time.perf_counter()
    ann = finetune(
        train_ad,
        label_key,
        model,
        method,
        epochs=epochs,
        seed=seed,
        progress=False,
        val_fraction=heldout_fraction,
        **options,
    )
    secs = time.perf_counter() - t0
    pred = ann.predict(test_ad)
    cls_idx = {c: i for i, c in enumerate(ann.classes)}
    truth = test_ad.obs[label_key].astype(str).to_numpy()
    y = np.array([cls_idx.get(t, -1) for t in truth])
    losses = ann.losses(test_ad, y)
    return {
        "model": ann,
        "proba": pred.probabilities,
        "embeddings": pred.embeddings,
        "train_seconds": secs,
        "trainable_parameters": int(ann.manifest.extra["trainable_parameters"]["trainable"]),
        **{k: losses[k] for k in LOSS_COLUMNS},
        "temperature": float(ann.manifest.temperature),
        "threshold": float(ann.threshold),
        "train_cells_sha256": _trained_on(train_ad, label_key, ann.holdout),
        "guards": ann.manifest.extra["guards"],
        "random_init": bool(ann.manifest.extra["base"]["random_init"]),
        "base": ann.manifest.extra["base"]["name"],
    }


def evaluate(
    reference: ad.AnnData | str | Path,
    label_key: str = "cell_type",
    model: str | Path = "scimilarity",
    *,
    query: ad.AnnData | str | Path | None = None,
    query_label_key: str | None = None,
    seeds: int = 3,
    out: str | Path = "evaluation_report",
    methods: Sequence[str] = ("logreg", "head", "lora"),
    epochs: int = 5,
    test_fraction: float = 0.2,
    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION,
    umap: bool = True,
    title: str | None = None,
    finetune_options: dict[str, Any] | None = None,
    species: str | None = None,
    query_species: str | None = None,
    label_map: str | Path | dict[str, str] | None = None,
) -> dict[str, Any]:
    """Compare ``methods`` over ``seeds`` seeds on the same splits; write the report folder ``out``.

    Without ``query`` each seed draws a stratified ``test_fraction`` of the reference as test cells;
    with ``query`` every method trains on the whole reference and is tested on the query's labelled
    cells (query cells that are also reference cells are left out). Within the training cells
    every method holds out the same ``heldout_fraction`` (same seed, same split: early stopping,
    calibration, test), so baselines and fine-tunes fit on the very same cells; baselines are not
    refit on the held-out cells. Cells without a true label are dropped, never a "nan" class.
    Every run is also scored through Cell Ontology terms (see
    :mod:`cellfoundry.evaluation.ontology_scores`; ``label_map``: a ``label,ontology_term_id`` CSV
    or dict for either vocabulary, which wins). Returns the content of ``report.json``. Mouse,
    macaque or pig data is mapped to human orthologs first; ``species`` / ``query_species``
    override detection for each dataset.
    """
    unknown = [m for m in methods if m not in BASELINES + FINETUNE_METHODS]
    if unknown:
        raise DataError(
            f"unknown evaluation method(s) {unknown}",
            f"choose from {', '.join(BASELINES + FINETUNE_METHODS)}",
        )
    if seeds < 1:
        raise DataError(f"seeds must be >= 1 (got {seeds})", "use e.g. --seeds 3")
    outdir = Path(out)
    (outdir / "predictions").mkdir(parents=True, exist_ok=True)
    ref, _ = to_human_space(as_anndata(reference), species)
    ref = ref.to_memory() if ref.isbacked else ref
    qkey = query_label_key or label_key
    q = None
    if query is not None:
        q, _ = to_human_space(as_anndata(query), query_species)
        q = q.to_memory() if q.isbacked else q
        if qkey not in q.obs.columns:
            raise DataError(
                f"the query has no obs column '{qkey}' to evaluate against",
                "pass a labelled query (or --query-label-key) or evaluate on a reference split",
            )
    user_terms = read_label_map(label_map) if isinstance(label_map, str | Path) else label_map
    fam = str(model) if not Path(str(model)).is_dir() else Path(str(model)).name
    runs: list[dict[str, Any]] = []
    embeddings: dict[str, tuple[np.ndarray, pd.DataFrame]] = {}
    n_overlap = n_model_seen = 0
    for seed in range(seeds):
        if q is None:
            train_ad, test_ad = _split(ref, label_key, seed, test_fraction)
        else:
            keep = read_labels(ref, label_key).keep
            train_ad = ref[keep].copy()
            labelled = labelled_mask(q.obs[qkey].to_numpy())
            seen = np.isin(cell_keys(q), cell_keys(train_ad))
            n_overlap = int((labelled & seen).sum())
            test_ad = q[labelled & ~seen].copy()
            if test_ad.n_obs == 0:
                raise DataError(
                    "no labelled query cell is left to test on "
                    f"({n_overlap} labelled query cells are reference cells)",
                    "pass a query with labelled cells that are not in the reference",
                )
            if qkey != label_key:
                test_ad.obs[label_key] = test_ad.obs[qkey]
        # a fine-tuned artifact that trained on some of these cells is never tested on them
        model_seen = trained_on(
            test_ad, Path(str(model)) if not isinstance(model, ad.AnnData) else None
        )
        n_model_seen = int(model_seen.sum())
        if n_model_seen:
            test_ad = test_ad[~model_seen].copy()
            if test_ad.n_obs == 0:
                raise DataError(
                    f"every test cell is a cell the model {model} was trained on",
                    "evaluate it on cells it has not seen (another dataset or --query)",
                )
        truth = test_ad.obs[label_key].astype(str).tolist()
        for method in methods:
            mname = method if method in BASELINES else fam
            log.info("evaluate: %s / %s, seed %d", mname, method, seed)
            if method in BASELINES:
                r = _run_baseline(method, train_ad, test_ad, label_key, seed, heldout_fraction)
            else:
                r = _run_finetune(
                    model,
                    method,
                    train_ad,
                    test_ad,
                    label_key,
                    seed,
                    epochs,
                    dict(finetune_options or {}),
                    heldout_fraction,
                )
            classes = r["model"].classes
            df = _prediction_frame(
                test_ad.obs_names.astype(str),
                truth,
                classes,
                r["proba"],
                r["temperature"],
                r["threshold"],
            )
            pfile = outdir / "predictions" / f"{mname}_{method}_seed{seed}.csv"
            df.to_csv(pfile, index=False)
            if r["embeddings"] is not None and seed == 0:
                embeddings[f"{mname}-{method}"] = (r["embeddings"], df[["true", "predicted"]])
            runs.append(
                {
                    "model": mname,
                    "method": method,
                    "seed": seed,
                    "file": str(pfile.relative_to(outdir)),
                    "train_seconds": r["train_seconds"],
                    "trainable_parameters": r["trainable_parameters"],
                    **{k: r[k] for k in LOSS_COLUMNS},
                    "temperature": r["temperature"],
                    "threshold": r["threshold"],
                    "train_cells_sha256": r["train_cells_sha256"],
                    # the model's own class terms; a user's label map wins
                    "label_terms": r["model"].ontology.terms | dict(user_terms or {}),
                    "guards": r["guards"],
                    "random_init": r["random_init"],
                    "base": r.get("base"),
                }
            )
    return write_report(
        outdir,
        runs,
        embeddings,
        umap=umap,
        title=title or f"{fam} on {label_key}",
        context={
            "reference": str(reference) if not isinstance(reference, ad.AnnData) else "AnnData",
            "query": None
            if query is None
            else (str(query) if not isinstance(query, ad.AnnData) else "AnnData"),
            "label_key": label_key,
            "seeds": seeds,
            "epochs": epochs,
            "methods": list(methods),
            "split": "stratified test split of the reference per seed"
            if q is None
            else "train on the whole reference, test on the labelled query",
            "test_fraction": test_fraction if q is None else None,
            "heldout_fraction": heldout_fraction,
            "query_cells_left_out_as_reference_cells": n_overlap if q is not None else None,
            "test_cells_left_out_as_model_training_cells": n_model_seen,
            "macro_f1_over": MACRO_F1_OVER,
            "ontology_credit_rule": CREDIT_RULE,
            "metrics": "accuracy / macro_f1 / weighted_f1: forced choice (most probable class); "
            "coverage: share not Unknown; called_*: on the called cells only; "
            "reference rows: majority class and chance",
        },
    )


def write_report(
    outdir: Path,
    runs: list[dict[str, Any]],
    embeddings: dict[str, tuple[np.ndarray, pd.DataFrame]],
    *,
    umap: bool,
    title: str,
    context: dict[str, Any],
) -> dict[str, Any]:
    """Summary, confusion, per-class, calibration, UMAP, report.json and report.html from stored predictions."""
    from cellfoundry.evaluation import plots
    from cellfoundry.evaluation.html import render_html

    rows = []
    for r in runs:
        m = metrics_from_file(outdir / r["file"], r.get("label_terms"))
        r["ontology"] = m["ontology"]
        rows.append(
            {
                "model": r["model"],
                "method": r["method"],
                "seed": r["seed"],
                **{k: m[k] for k in SUMMARY_COLUMNS if k in m},
                **{k: r[k] for k in LOSS_COLUMNS},
                "trainable_parameters": r["trainable_parameters"],
                "train_seconds": r["train_seconds"],
            }
        )
        r["ece_before_temperature"] = m["ece_before_temperature"]
    rows += _reference_rows(outdir, runs)
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    summary.to_csv(outdir / "summary.csv", index=False)
    num = [
        "accuracy",
        "macro_f1",
        "weighted_f1",
        "coverage",
        "called_accuracy",
        "called_macro_f1",
        *LOSS_COLUMNS,
        "ece",
        *ONTOLOGY_COLUMNS,
        "train_seconds",
    ]
    agg = summary.groupby(["model", "method"], sort=False)[num].agg(["mean", "std"])
    agg.columns = [f"{a}_{b}" for a, b in agg.columns]
    agg = agg.reset_index()
    agg["n_seeds"] = summary.groupby(["model", "method"], sort=False).size().to_numpy()
    agg.to_csv(outdir / "summary_mean_std.csv", index=False)

    images: dict[str, list[tuple[str, str]]] = {}
    confusions, per_class, calib = [], [], {}
    for (mname, method), _grp in summary.groupby(["model", "method"], sort=False):
        if mname == REFERENCE_MODEL:
            continue
        key = f"{mname}-{method}"
        files = [outdir / r["file"] for r in runs if r["model"] == mname and r["method"] == method]
        frames = [read_predictions(f) for f in files]
        truth = pd.concat([f[0]["true"] for f in frames]).tolist()
        pred = pd.concat([f[0]["predicted"] for f in frames]).tolist()
        cm = confusion_frame(truth, pred)
        cm.to_csv(outdir / f"confusion_{key}.csv")
        imgs = [
            (
                f"confusion (counts, {len(files)} seed(s) pooled)",
                plots.confusion_png(
                    cm, outdir / f"confusion_{key}_counts.png", f"{key}: counts", False
                ).name,
            ),
            (
                "confusion (row-normalised)",
                plots.confusion_png(
                    cm, outdir / f"confusion_{key}_normalized.png", f"{key}: row-normalised", True
                ).name,
            ),
        ]
        top = most_confused(truth, pred, 5)
        top.insert(0, "method", method)
        top.insert(0, "model", mname)
        confusions.append(top)
        labels = sorted(set(truth))
        p, r_, f, s = precision_recall_fscore_support(truth, pred, labels=labels, zero_division=0)
        per_class.append(
            pd.DataFrame(
                {
                    "model": mname,
                    "method": method,
                    "class": labels,
                    "precision": p,
                    "recall": r_,
                    "f1": f,
                    "support": s,
                }
            )
        )
        classes = frames[0][1]
        idx = {c: i for i, c in enumerate(classes)}
        known = np.array([t in idx for t in truth])
        y = np.array([idx[t] for t, k in zip(truth, known, strict=True) if k])
        proba = np.concatenate([fr[2] for fr in frames])[known]
        raw = np.concatenate([fr[3] for fr in frames])[known]
        if len(y):
            png, e_raw, e_cal = plots.reliability_png(
                raw, proba, y, outdir / f"reliability_{key}.png", key
            )
            imgs.append(("reliability (before / after temperature scaling)", png.name))
            calib[key] = {"ece_before_temperature": e_raw, "ece_after_temperature": e_cal}
        if umap and key in embeddings:
            emb, lab = embeddings[key]
            sel = np.arange(len(emb))
            if len(sel) > UMAP_MAX_CELLS:
                sel = np.sort(
                    np.random.default_rng(0).choice(len(emb), UMAP_MAX_CELLS, replace=False)
                )
            if len(sel) >= 5:
                xy = plots.umap_coords(emb[sel])
                imgs.append(
                    (
                        "UMAP of embeddings, coloured by truth (seed 0)",
                        plots.scatter_png(
                            xy,
                            lab["true"].to_numpy()[sel],
                            outdir / f"umap_{key}_truth.png",
                            f"{key}: truth",
                        ).name,
                    )
                )
                imgs.append(
                    (
                        "UMAP coloured by prediction",
                        plots.scatter_png(
                            xy,
                            lab["predicted"].to_numpy()[sel],
                            outdir / f"umap_{key}_prediction.png",
                            f"{key}: prediction",
                        ).name,
                    )
                )
        images[key] = imgs
    top5 = pd.concat(confusions, ignore_index=True) if confusions else pd.DataFrame()
    top5.to_csv(outdir / "misclassified_top5.csv", index=False)
    pcr = pd.concat(per_class, ignore_index=True) if per_class else pd.DataFrame()
    pcr.to_csv(outdir / "per_class_report.csv", index=False)
    warnings = sorted(
        {
            f"{r['model']}: the base model was RANDOMLY INITIALISED ({r.get('base')}); no pretrained weights"
            for r in runs
            if r.get("random_init")
        }
    )
    warnings += [
        f"{r['model']}-{r['method']} seed {r['seed']}: guards FAILED — "
        + "; ".join(r["guards"]["failures"])
        for r in runs
        if r.get("guards") and not r["guards"]["success"]
    ]
    report = {
        "title": title,
        "context": context,
        "summary": _records(summary),
        "mean_std": _records(agg),
        "calibration": calib,
        "misclassified_top5": _records(top5),
        "per_class": _records(pcr),
        "runs": runs,
        "warnings": warnings,
        "images": images,
    }
    (outdir / "report.json").write_text(json.dumps(report, indent=2, default=_json_default))
    (outdir / "report.html").write_text(render_html(report, outdir))
    return report


def _reference_rows(outdir: Path, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Majority-class and chance rows per seed, from that seed's stored test truth."""
    out = []
    for seed in sorted({r["seed"] for r in runs}):
        first = next(r for r in runs if r["seed"] == seed)
        truth = read_predictions(outdir / first["file"])[0]["true"].to_numpy()
        for name, row in reference_rows(truth).items():
            out.append(
                {
                    "model": REFERENCE_MODEL,
                    "method": name,
                    "seed": seed,
                    "n_cells": int(labelled_mask(truth).sum()),
                    "accuracy": row["accuracy"],
                    "macro_f1": row["macro_f1"],
                    "coverage": 1.0,
                    "called_accuracy": row["accuracy"],
                    "called_macro_f1": row["macro_f1"],
                }
            )
    return out


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(df.to_json(orient="records"))  # type: ignore[no-any-return]


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)
