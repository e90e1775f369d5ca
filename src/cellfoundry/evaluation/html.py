"""One self-contained HTML page for an evaluation report (images inlined as base64)."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

_CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:8px 0 18px;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f2f2f2}td.l,th.l{text-align:left}.warn{background:#fff3cd;border:1px solid #e0b400;padding:8px 12px;margin:8px 0}
.fail{background:#f8d7da;border-color:#c00}figure{display:inline-block;margin:6px;vertical-align:top}
figcaption{font-size:12px;color:#555}img{max-width:520px}"""


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.4g}"
    return html.escape(str(v))


def _table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "<p>(none)</p>"
    cols = columns or list(rows[0])
    head = "".join(
        f"<th class='l'>{html.escape(c)}</th>" if i < 2 else f"<th>{html.escape(c)}</th>"
        for i, c in enumerate(cols)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='l'>{_fmt(r.get(c))}</td>" if i < 2 else f"<td>{_fmt(r.get(c))}</td>"
            for i, c in enumerate(cols)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def render_html(report: dict[str, Any], outdir: Path) -> str:
    """The report page; every figure is embedded, so the file stands alone."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(report['title'])}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(report['title'])}</h1>"
    ]
    ctx = report.get("context", {})
    parts.append(
        "<p>"
        + "; ".join(f"<b>{html.escape(str(k))}</b>: {_fmt(v)}" for k, v in ctx.items())
        + "</p>"
    )
    for w in report.get("warnings", []):
        cls = "warn fail" if "FAILED" in w else "warn"
        parts.append(f"<div class='{cls}'>{html.escape(w)}</div>")
    parts.append("<h2>Mean ± std over seeds</h2>")
    ms = []
    for r in report["mean_std"]:
        row = {"model": r["model"], "method": r["method"], "seeds": r.get("n_seeds")}
        for k in (
            "accuracy",
            "macro_f1",
            "weighted_f1",
            "coverage",
            "called_accuracy",
            "called_macro_f1",
            "ontology_accuracy",
            "ontology_score",
            "expressible_share",
            "ece",
            "triplet_loss",
            "input_reconstruction_mse",
            "base_embedding_mse",
            "train_seconds",
        ):
            mean, std = r.get(f"{k}_mean"), r.get(f"{k}_std")
            row[k] = "—" if mean is None else f"{mean:.3f} ± {0.0 if std is None else std:.3f}"
        ms.append(row)
    parts.append(_table(ms))
    parts.append("<h2>Every run (summary.csv)</h2>" + _table(report["summary"]))
    parts.append(
        "<p>Every number is computed from the stored predictions in <code>predictions/</code>.</p>"
    )
    parts.append("<h2>Calibration (ECE before / after temperature scaling, seeds pooled)</h2>")
    parts.append(
        _table(
            [
                {
                    "model": k,
                    "ece_before": v["ece_before_temperature"],
                    "ece_after": v["ece_after_temperature"],
                }
                for k, v in report.get("calibration", {}).items()
            ]
        )
    )
    parts.append(
        "<h2>Most frequent confusions (top 5 per model)</h2>" + _table(report["misclassified_top5"])
    )
    parts.append("<h2>Guards of the fine-tuning runs</h2>")
    parts.append(
        _table(
            [
                {
                    "model": r["model"],
                    "method": r["method"],
                    "seed": r["seed"],
                    "success": r["guards"]["success"],
                    "failures": "; ".join(r["guards"]["failures"]),
                }
                for r in report["runs"]
                if r.get("guards")
            ]
        )
    )
    for key, imgs in report.get("images", {}).items():
        parts.append(f"<h2>{html.escape(key)}</h2>")
        parts.extend(_img(outdir / name, cap) for cap, name in imgs if (outdir / name).is_file())
    parts.append("<h2>Per-class report (seeds pooled)</h2>" + _table(report["per_class"]))
    parts.append("</body></html>")
    return "\n".join(parts)
