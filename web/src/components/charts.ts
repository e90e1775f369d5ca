// Plotly figure builders (pure functions, tested without a browser).
import type { Layout } from "../api/types";
import type { ConfusionMatrix, ReliabilityCurve } from "../lib/evaluation";

export const PALETTE = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#0f766e",
  "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#8c6d31", "#843c39", "#7b4173",
  "#3182bd", "#e6550d", "#31a354", "#756bb1",
];

export type ColorMode = { kind: "predicted" } | { kind: "confidence" } | { kind: "obs"; column: string };

function hoverText(u: Layout, i: number): string {
  const parts = [u.cells[i], `<b>${u.labels?.[i] ?? ""}</b>`];
  if (u.confidence?.length) parts.push(`confidence ${(u.confidence[i] * 100).toFixed(1)}%`);
  const top = u.top3?.[i];
  if (top?.length) parts.push("top 3: " + top.map((t) => `${t.label} ${(t.probability * 100).toFixed(0)}%`).join(", "));
  return parts.join("<br>");
}

function isNumeric(values: unknown[]): boolean {
  return values.every((v) => v === null || typeof v === "number");
}

/** Scatter traces of the UMAP coloured by predicted type, confidence, or an obs column. */
export function umapTraces(u: Layout, mode: ColorMode): Record<string, unknown>[] {
  const n = u.x.length;
  const type = n > 5000 ? "scattergl" : "scatter";
  const text = Array.from({ length: n }, (_, i) => hoverText(u, i));
  const base = { type, mode: "markers", hoverinfo: "text", marker: { size: n > 3000 ? 4 : 6, opacity: 0.85 } };
  const categorical = (values: (string | number | null)[], title: string) => {
    const groups = new Map<string, number[]>();
    values.forEach((v, i) => {
      const k = v === null || v === undefined || v === "" ? "(missing)" : String(v);
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k)!.push(i);
    });
    const keys = [...groups.keys()].sort((a, b) => groups.get(b)!.length - groups.get(a)!.length);
    let j = 0;
    return keys.map((k) => {
      const idx = groups.get(k)!;
      const color = k === "Unknown" || k === "(missing)" ? "#9ca3af" : PALETTE[j++ % PALETTE.length];
      return {
        ...base,
        name: `${k} (${idx.length})`,
        legendgroup: title,
        x: idx.map((i) => u.x[i]),
        y: idx.map((i) => u.y[i]),
        text: idx.map((i) => text[i]),
        customdata: idx,
        marker: { ...base.marker, color },
      };
    });
  };
  const continuous = (values: number[], title: string) => [
    {
      ...base,
      name: title,
      x: u.x,
      y: u.y,
      text: text.map((t, i) => `${t}<br>${title}: ${values[i] === null ? "—" : Number(values[i]).toFixed(3)}`),
      customdata: u.x.map((_, i) => i),
      marker: { ...base.marker, color: values, colorscale: "Viridis", showscale: true, colorbar: { title: { text: title } } },
    },
  ];
  const labels = u.labels ?? [];
  if (mode.kind === "confidence" && u.confidence?.length) return continuous(u.confidence, "confidence");
  if (labels.every((l) => !l) && mode.kind === "predicted") {
    return [{ ...base, name: `cells (${n})`, x: u.x, y: u.y, text, customdata: u.x.map((_, i) => i), marker: { ...base.marker, color: PALETTE[0] } }];
  }
  if (mode.kind === "obs") {
    const values = u.obs[mode.column];
    if (!values) return categorical(labels, "predicted");
    return isNumeric(values) ? continuous(values as unknown as number[], mode.column) : categorical(values, mode.column);
  }
  return categorical(labels, "predicted");
}

export function histogramFigure(confidence: number[], threshold: number | null | undefined) {
  const data = [{ type: "histogram", x: confidence, xbins: { start: 0, end: 1.0001, size: 0.05 }, marker: { color: "#3b82f6" }, name: "cells" }];
  const shapes = threshold != null ? [{ type: "line", x0: threshold, x1: threshold, y0: 0, y1: 1, yref: "paper", line: { color: "#dc2626", width: 2, dash: "dash" } }] : [];
  const annotations = threshold != null
    ? [{ x: threshold, y: 1, yref: "paper", text: `Unknown below ${threshold.toFixed(2)}`, showarrow: false, xanchor: "left", yanchor: "bottom", font: { color: "#dc2626" } }]
    : [];
  return { data, layout: { xaxis: { title: { text: "confidence" }, range: [0, 1] }, yaxis: { title: { text: "cells" } }, shapes, annotations, bargap: 0.05 } };
}

export function countsFigure(labelCounts: Record<string, number>) {
  const entries = Object.entries(labelCounts).sort((a, b) => b[1] - a[1]);
  let j = 0;
  const colors = entries.map(([k]) => (k === "Unknown" ? "#9ca3af" : PALETTE[j++ % PALETTE.length]));
  return {
    data: [{
      type: "bar", orientation: "h", y: entries.map((e) => e[0]), x: entries.map((e) => e[1]),
      marker: { color: colors },
      hovertemplate: "%{y}: %{x} cells<extra></extra>",
    }],
    layout: { yaxis: { autorange: "reversed", automargin: true }, xaxis: { title: { text: "cells" } }, margin: { l: 140, r: 20, t: 20, b: 45 } },
  };
}

/** Row-normalised confusion heatmap (share of each true type), counts in hover. */
export function confusionFigure(c: ConfusionMatrix) {
  const z = c.matrix.map((row) => {
    const s = row.reduce((a, b) => a + b, 0);
    return row.map((v) => (s ? v / s : 0));
  });
  return {
    data: [{
      type: "heatmap", x: c.labels, y: c.labels, z, customdata: c.matrix, colorscale: [[0, "#f8fafc"], [0.15, "#bfdbfe"], [1, "#1e3a8a"]], zmin: 0, zmax: 1,
      hovertemplate: "true %{y}<br>predicted %{x}<br>%{customdata} cells (%{z:.0%})<extra></extra>",
    }],
    layout: {
      xaxis: { title: { text: "predicted" }, automargin: true, tickangle: -40 },
      yaxis: { title: { text: "true" }, automargin: true, autorange: "reversed" },
      margin: { l: 110, r: 10, t: 30, b: 110 },
      title: { text: c.model, font: { size: 14 } },
    },
  };
}

export function reliabilityFigure(curves: ReliabilityCurve[]) {
  const data: Record<string, unknown>[] = [
    { type: "scatter", mode: "lines", x: [0, 1], y: [0, 1], name: "perfect calibration", line: { dash: "dot", color: "#9ca3af" }, hoverinfo: "skip" },
  ];
  curves.forEach((c, i) => {
    data.push({
      type: "scatter", mode: "lines+markers", x: c.bin_confidence, y: c.bin_accuracy,
      name: c.ece != null ? `${c.model} (ECE ${c.ece.toFixed(3)})` : c.model,
      customdata: c.bin_count, hovertemplate: "confidence %{x:.2f}<br>accuracy %{y:.2f}<br>%{customdata} cells<extra></extra>",
      line: { color: PALETTE[i % PALETTE.length] },
    });
  });
  return { data, layout: { xaxis: { title: { text: "mean confidence" }, range: [0, 1] }, yaxis: { title: { text: "accuracy" }, range: [0, 1] }, legend: { orientation: "h", y: -0.25 } } };
}
