import { describe, expect, it } from "vitest";
import type { LayoutView } from "../api/types";
import { PALETTE } from "../components/charts";
import { layoutDensity, layoutPoints } from "../test/fixtures";
import {
  BINS, MAX_POINTS, UNKNOWN_COLOR, covers, densityBins, densityTraces, labelColors, pointTraces, viewQuery,
  viewTraces, viewportFromRelayout,
} from "./layoutView";

const d = layoutDensity.density!;
const p = layoutPoints.points!;
const colors = labelColors(layoutDensity.labels);

describe("labelColors", () => {
  it("gives each label the colour of its place in the run's label list, Unknown grey, overrides first", () => {
    const c = labelColors(["B", "Unknown", "T"], { T: "#000000" });
    expect(c.get("B")).toBe(PALETTE[0]);
    expect(c.get("Unknown")).toBe(UNKNOWN_COLOR);
    expect(c.get("T")).toBe("#000000");
    // the same list gives the same colours, whatever a view happens to contain
    expect([...labelColors(layoutPoints.labels)]).toEqual([...colors]);
  });
});

describe("densityBins / densityTraces", () => {
  it("fixtures: the whole extent is a density grid, the zoomed quarter its points", () => {
    expect(layoutDensity.mode).toBe("density");
    expect(layoutPoints.mode).toBe("points");
    expect(p.sampled).toBe(false);
    expect(p.x).toHaveLength(layoutPoints.n_in_view);
  });

  it("one marker per non-empty bin holding every cell in view, coloured by the bin's most frequent label", () => {
    const bins = densityBins(layoutDensity);
    const keys = new Set(d.bx.map((x, i) => `${x},${d.by[i]}`));
    expect(bins).toHaveLength(keys.size);
    expect(bins.reduce((n, b) => n + b.total, 0)).toBe(layoutDensity.n_in_view);
    const { x0, x1, y0, y1 } = layoutDensity.viewport;
    for (const b of bins) {
      expect(b.x).toBeGreaterThan(x0);
      expect(b.x).toBeLessThan(x1);
      expect(b.y).toBeGreaterThan(y0);
      expect(b.y).toBeLessThan(y1);
      // brute force over the answer's rows of this bin
      const bx = Math.floor((b.x - x0) / d.bin_width);
      const by = Math.floor((b.y - y0) / d.bin_height);
      const rows = d.count.map((_, i) => i).filter((i) => d.bx[i] === bx && d.by[i] === by);
      expect(rows.reduce((n, i) => n + d.count[i], 0)).toBe(b.total);
      const best = Math.max(...rows.map((i) => d.count[i]));
      expect(d.count[rows.find((i) => d.label[i] === b.label)!]).toBe(best);
    }
    const traces = densityTraces(layoutDensity, colors);
    expect(traces.every((t) => t.type === "scattergl")).toBe(true);
    expect(traces.flatMap((t) => t.x as number[])).toHaveLength(keys.size);
    expect(traces.flatMap((t) => t.customdata as number[]).reduce((a, b) => a + b, 0)).toBe(layoutDensity.n_in_view);
    for (const t of traces) {
      const name = String(t.name).replace(/ \(\d+\)$/, "");
      const l = layoutDensity.labels.indexOf(name);
      const total = d.label.reduce((n, lab, i) => n + (lab === l ? d.count[i] : 0), 0);
      expect(t.name).toBe(`${name} (${total})`);
      expect((t.marker as { color: string }).color).toBe(colors.get(name));
    }
  });
});

describe("pointTraces", () => {
  it("one scattergl trace per label; customdata is each cell's dataset row", () => {
    const traces = viewTraces(layoutPoints, colors);
    expect(traces).toEqual(pointTraces(layoutPoints, colors));
    expect(traces.every((t) => t.type === "scattergl")).toBe(true);
    expect(traces.flatMap((t) => t.customdata as number[]).sort((a, b) => a - b)).toEqual([...p.row].sort((a, b) => a - b));
    for (const t of traces) {
      const name = String(t.name).replace(/ \(\d+\)$/, "");
      const l = layoutPoints.labels.indexOf(name);
      const rows = p.row.filter((_, i) => p.label[i] === l);
      expect(t.customdata).toEqual(rows);
      expect((t.x as number[])[0]).toBe(p.x[p.label.indexOf(l)]);
      expect((t.marker as { color: string }).color).toBe(colors.get(name));
    }
  });
});

describe("viewportFromRelayout / covers / viewQuery", () => {
  const cur = { x0: 0, x1: 10, y0: 0, y1: 10 };
  it("reads zooms, pans and resets from plotly's relayout events", () => {
    expect(viewportFromRelayout({ "xaxis.range[0]": 1, "xaxis.range[1]": 2, "yaxis.range[0]": 3, "yaxis.range[1]": 4 }, cur))
      .toEqual({ kind: "box", box: { x0: 1, x1: 2, y0: 3, y1: 4 } });
    expect(viewportFromRelayout({ "xaxis.range": [5, 1] }, cur)).toEqual({ kind: "box", box: { x0: 1, x1: 5, y0: 0, y1: 10 } });
    expect(viewportFromRelayout({ "xaxis.autorange": true, "yaxis.autorange": true }, cur)).toEqual({ kind: "reset" });
    expect(viewportFromRelayout({ autosize: true }, cur)).toEqual({ kind: "none" });
    expect(viewportFromRelayout({ "xaxis.range[0]": "a", "xaxis.range[1]": 2 }, cur)).toEqual({ kind: "none" });
  });

  it("needs no request for a box inside an answer that holds all its points", () => {
    const v = layoutPoints.viewport;
    const inner = { x0: v.x0 + 0.1, x1: v.x1 - 0.1, y0: v.y0 + 0.1, y1: v.y1 - 0.1 };
    expect(covers(layoutPoints, inner)).toBe(true);
    expect(covers(layoutPoints, { ...inner, x1: v.x1 + 1 })).toBe(false);
    expect(covers(layoutDensity, inner)).toBe(false);
    const sampled = { ...layoutPoints, points: { ...p, sampled: true } } as LayoutView;
    expect(covers(sampled, inner)).toBe(false);
  });

  it("asks for the viewport with bounded points", () => {
    expect(viewQuery(null)).toEqual({ bins: BINS, max_points: MAX_POINTS });
    expect(viewQuery(cur)).toEqual({ ...cur, bins: BINS, max_points: MAX_POINTS });
  });
});
