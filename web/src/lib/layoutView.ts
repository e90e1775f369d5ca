// The every-cell layout view (GET /runs/{run_id}/layout) as WebGL traces, and the zoom → viewport
// logic: pure functions, tested without a browser.
import type { LayoutViewQuery } from "../api/client";
import type { LayoutBox, LayoutView } from "../api/types";
import { PALETTE } from "../components/charts";

/** Cells the server may send as points in one answer; beyond that it answers binned counts. */
export const MAX_POINTS = 20_000;
/** Bins per axis of the density grid at low zoom. */
export const BINS = 128;
export const UNKNOWN_COLOR = "#9ca3af";

/** A colour per label, fixed by the label's place in the stored layout's label list (the same in
 * every answer for a run), so a label keeps its colour at every zoom. `override` wins. */
export function labelColors(labels: string[], override: Record<string, string> = {}): Map<string, string> {
  const out = new Map<string, string>();
  let j = 0;
  for (const l of labels) {
    if (override[l]) out.set(l, override[l]);
    else if (l === "Unknown" || l === "") out.set(l, UNKNOWN_COLOR);
    else out.set(l, PALETTE[j++ % PALETTE.length]);
  }
  return out;
}

export interface DensityBin {
  x: number; // centre
  y: number;
  total: number;
  label: number; // the most frequent label in the bin (lowest index on a tie)
  counts: Map<number, number>;
}

/** The non-empty bins of a density answer, each with its total and dominant label. */
export function densityBins(view: LayoutView): DensityBin[] {
  const d = view.density;
  if (!d) return [];
  const byBin = new Map<number, DensityBin>();
  for (let i = 0; i < d.count.length; i++) {
    const key = d.by[i] * d.bins + d.bx[i];
    let b = byBin.get(key);
    if (!b) {
      b = {
        x: view.viewport.x0 + (d.bx[i] + 0.5) * d.bin_width,
        y: view.viewport.y0 + (d.by[i] + 0.5) * d.bin_height,
        total: 0, label: d.label[i], counts: new Map(),
      };
      byBin.set(key, b);
    }
    b.total += d.count[i];
    b.counts.set(d.label[i], (b.counts.get(d.label[i]) ?? 0) + d.count[i]);
    const best = b.counts.get(b.label) ?? 0;
    const mine = b.counts.get(d.label[i])!;
    if (mine > best || (mine === best && d.label[i] < b.label)) b.label = d.label[i];
  }
  return [...byBin.values()];
}

/** Cells per label in the answer (points or bins). */
export function labelTotals(view: LayoutView): number[] {
  const totals = new Array<number>(view.labels.length).fill(0);
  if (view.density) view.density.label.forEach((l, i) => (totals[l] += view.density!.count[i]));
  else if (view.points) view.points.label.forEach((l) => (totals[l] += 1));
  return totals;
}

const MARKER_MIN = 3;
const MARKER_MAX = 9;

/** Items grouped by their label. */
function byLabel<T>(items: T[], label: (t: T) => number): Map<number, T[]> {
  const groups = new Map<number, T[]>();
  for (const t of items) {
    const l = label(t);
    if (!groups.has(l)) groups.set(l, []);
    groups.get(l)!.push(t);
  }
  return groups;
}

const labelName = (view: LayoutView, l: number) => view.labels[l] ?? String(l);

/** One label's WebGL trace, named with its cell count and coloured by `colors`. */
function labelTrace(
  view: LayoutView, colors: Map<string, string>, l: number, cells: number,
  t: { x: number[]; y: number[]; customdata: number[]; text: string[]; marker: Record<string, unknown> },
): Record<string, unknown> {
  const name = labelName(view, l);
  return {
    type: "scattergl", mode: "markers", name: `${name} (${cells})`, hoverinfo: "text",
    ...t, marker: { color: colors.get(name) ?? PALETTE[0], ...t.marker },
  };
}

/** Density view: one scattergl trace per dominant label, a marker per bin sized and shaded by how
 * many cells the bin holds (square root scale), hover lists the bin's labels. */
export function densityTraces(view: LayoutView, colors: Map<string, string>): Record<string, unknown>[] {
  const bins = densityBins(view);
  const max = bins.reduce((m, b) => Math.max(m, b.total), 1);
  const totals = labelTotals(view);
  const groups = byLabel(bins, (b) => b.label);
  const order = [...groups.keys()].sort((a, b) => totals[b] - totals[a] || a - b);
  return order.map((l) => {
    const g = groups.get(l)!;
    return labelTrace(view, colors, l, totals[l], {
      x: g.map((b) => b.x),
      y: g.map((b) => b.y),
      customdata: g.map((b) => b.total),
      text: g.map((b) => binHover(view, b)),
      marker: {
        symbol: "square",
        size: g.map((b) => MARKER_MIN + (MARKER_MAX - MARKER_MIN) * Math.sqrt(b.total / max)),
        opacity: g.map((b) => 0.35 + 0.65 * Math.sqrt(b.total / max)),
      },
    });
  });
}

function binHover(view: LayoutView, b: DensityBin): string {
  const parts = [...b.counts.entries()].sort((p, q) => q[1] - p[1]).slice(0, 4)
    .map(([l, n]) => `${labelName(view, l)}: ${n}`);
  return `<b>${b.total} cells</b><br>${parts.join("<br>")}`;
}

/** Points view: one scattergl trace per label; `customdata` is each cell's dataset row (the
 * index of GET /results/{run_id}/cells/{index}). */
export function pointTraces(view: LayoutView, colors: Map<string, string>): Record<string, unknown>[] {
  const p = view.points;
  if (!p) return [];
  const groups = byLabel(p.label.map((_, i) => i), (i) => p.label[i]);
  const order = [...groups.keys()].sort((a, b) => groups.get(b)!.length - groups.get(a)!.length || a - b);
  const size = p.x.length > 5000 ? 3 : 5;
  return order.map((l) => {
    const idx = groups.get(l)!;
    const name = labelName(view, l);
    return labelTrace(view, colors, l, idx.length, {
      x: idx.map((i) => p.x[i]),
      y: idx.map((i) => p.y[i]),
      customdata: idx.map((i) => p.row[i]),
      text: idx.map((i) => `${p.cell[i]}<br><b>${name}</b>${p.confidence ? `<br>confidence ${(p.confidence[i] * 100).toFixed(1)}%` : ""}`),
      marker: { size, opacity: 0.85 },
    });
  });
}

export function viewTraces(view: LayoutView, colors: Map<string, string>): Record<string, unknown>[] {
  return view.mode === "density" ? densityTraces(view, colors) : pointTraces(view, colors);
}

/** What a plotly relayout event asks for: the whole layout again (autorange, double click), a new
 * viewport (zoom or pan; an axis not in the event keeps `current`'s range), or nothing (a resize,
 * a legend click). */
export type ViewportChange = { kind: "reset" } | { kind: "box"; box: LayoutBox } | { kind: "none" };

export function viewportFromRelayout(ev: Record<string, unknown>, current: LayoutBox): ViewportChange {
  if (ev["xaxis.autorange"] === true || ev["yaxis.autorange"] === true) return { kind: "reset" };
  const range = (axis: "xaxis" | "yaxis"): [number, number] | null => {
    const whole = ev[`${axis}.range`];
    const lo = Array.isArray(whole) ? whole[0] : ev[`${axis}.range[0]`];
    const hi = Array.isArray(whole) ? whole[1] : ev[`${axis}.range[1]`];
    if (typeof lo !== "number" || typeof hi !== "number" || !Number.isFinite(lo) || !Number.isFinite(hi)) return null;
    return lo <= hi ? [lo, hi] : [hi, lo];
  };
  const x = range("xaxis");
  const y = range("yaxis");
  if (!x && !y) return { kind: "none" };
  return {
    kind: "box",
    box: { x0: x ? x[0] : current.x0, x1: x ? x[1] : current.x1, y0: y ? y[0] : current.y0, y1: y ? y[1] : current.y1 },
  };
}

/** Whether `inner` lies within `outer`. */
export function contains(outer: LayoutBox, inner: LayoutBox): boolean {
  return inner.x0 >= outer.x0 && inner.x1 <= outer.x1 && inner.y0 >= outer.y0 && inner.y1 <= outer.y1;
}

/** Whose calls label the points, at which Cell Ontology level (null: the run's own, the model's
 * classes). */
export interface ViewLabels {
  level: string | null;
  source: string | null;
}

export const OWN_LABELS: ViewLabels = { level: null, source: null };

/** Whether the answer is labelled as asked. */
export function labelledAs(view: LayoutView, labels: ViewLabels): boolean {
  return (view.level ?? null) === labels.level && (view.source ?? null) === labels.source;
}

/** Whether the answer already holds every cell of `box` with the asked labels: it has all the points
 * (not sampled) of a viewport that contains `box`, so zooming further in needs no request. */
export function covers(view: LayoutView, box: LayoutBox, labels: ViewLabels = OWN_LABELS): boolean {
  return view.mode === "points" && !!view.points && !view.points.sampled && contains(view.viewport, box) && labelledAs(view, labels);
}

/** The query for a viewport (null: the whole layout) with its labels. */
export function viewQuery(box: LayoutBox | null, labels: ViewLabels = OWN_LABELS): LayoutViewQuery & { bins: number; max_points: number } {
  return {
    ...(box ?? {}), bins: BINS, max_points: MAX_POINTS,
    ...(labels.level ? { level: labels.level } : {}), ...(labels.source ? { source: labels.source } : {}),
  };
}
