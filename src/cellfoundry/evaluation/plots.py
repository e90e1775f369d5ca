"""Figures of an evaluation report (matplotlib, Agg backend): confusion, reliability, UMAP."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cellfoundry.stats.calibration import expected_calibration_error, reliability_bins


def confusion_png(cm: pd.DataFrame, path: Path, title: str, normalize: bool) -> Path:
    """Heat map of a confusion matrix (rows = true); row-normalised when ``normalize``."""
    values = cm.to_numpy(dtype=np.float64)
    if normalize:
        rs = values.sum(axis=1, keepdims=True)
        values = np.divide(values, rs, out=np.zeros_like(values), where=rs > 0)
    n = len(cm)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * n + 2.5), max(3.5, 0.5 * n + 2.0)))
    im = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else max(values.max(), 1))
    ax.set_xticks(
        range(len(cm.columns)), [str(c) for c in cm.columns], rotation=60, ha="right", fontsize=8
    )
    ax.set_yticks(range(n), [str(c) for c in cm.index], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    if n <= 20:
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                v = values[i, j]
                if v:
                    ax.text(
                        j,
                        i,
                        f"{v:.2f}" if normalize else f"{int(v)}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if v > (0.5 if normalize else values.max() / 2) else "black",
                    )
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reliability_png(
    raw: np.ndarray, calibrated: np.ndarray, y: np.ndarray, path: Path, title: str
) -> tuple[Path, float, float]:
    """Reliability diagram before and after temperature scaling; returns (path, ECE before, ECE after)."""
    e_raw = expected_calibration_error(raw, y)
    e_cal = expected_calibration_error(calibrated, y)
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    for proba, label, color in (
        (raw, f"before temperature (ECE {e_raw:.3f})", "tab:orange"),
        (calibrated, f"after temperature (ECE {e_cal:.3f})", "tab:blue"),
    ):
        bins = [b for b in reliability_bins(proba, y) if b["count"]]
        ax.plot(
            [b["confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            marker="o",
            ms=3,
            label=label,
            color=color,
        )
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, e_raw, e_cal


def umap_coords(emb: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D UMAP of embeddings (cosine metric)."""
    import umap

    n = len(emb)
    reducer = umap.UMAP(
        n_neighbors=min(15, max(2, n - 1)), metric="cosine", random_state=seed, n_epochs=200
    )
    return np.asarray(reducer.fit_transform(emb))


def scatter_png(coords: np.ndarray, labels: Sequence[str], path: Path, title: str) -> Path:
    """Scatter of 2-D coordinates coloured by categorical labels."""
    labs = np.asarray(labels, dtype=str)
    cats = sorted(set(labs))
    cmap = plt.get_cmap("tab20")
    fig, ax = plt.subplots(figsize=(6.0, 4.5))
    for i, c in enumerate(cats):
        m = labs == c
        ax.scatter(coords[m, 0], coords[m, 1], s=4, color=cmap(i % 20), label=c, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    ax.legend(
        fontsize=6, markerscale=2.5, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
