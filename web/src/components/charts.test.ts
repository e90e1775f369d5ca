import { describe, expect, it } from "vitest";
import { recordedResults } from "../test/fixtures";
import { pointCount } from "./Plot";
import { confusionFigure, countsFigure, histogramFigure, umapTraces } from "./charts";

// the recorded annotation's layout: 700 pbmc68k cells with labels, confidence, top 3 and obs columns
const layout = recordedResults.layout;
const tally = (values: (string | null)[]) => {
  const m = new Map<string, number>();
  for (const v of values) m.set(v ?? "(missing)", (m.get(v ?? "(missing)") ?? 0) + 1);
  return [...m].sort((a, b) => b[1] - a[1]);
};

describe("umapTraces", () => {
  it("draws every cell once, one trace per predicted type (largest first), with label/confidence/top-3 on hover", () => {
    const t = umapTraces(layout, { kind: "predicted" });
    expect(pointCount(t)).toBe(layout.n_points);
    expect(t.map((x) => x.name)).toEqual(tally(layout.labels!).map(([k, n]) => `${k} (${n})`));
    const first = t[0];
    const i = layout.labels!.indexOf(tally(layout.labels!)[0][0]);
    const text = (first.text as string[])[0];
    expect(text).toContain(layout.cells[i]);
    expect(text).toContain(`<b>${layout.labels![i]}</b>`);
    expect(text).toContain(`confidence ${(layout.confidence![i] * 100).toFixed(1)}%`);
    expect(text).toContain(`top 3: ${layout.top3![i].map((x) => `${x.label} ${(x.probability * 100).toFixed(0)}%`).join(", ")}`);
  });
  it("colours by confidence continuously and by a user obs column", () => {
    const c = umapTraces(layout, { kind: "confidence" });
    expect(c).toHaveLength(1);
    expect((c[0].marker as { color: number[] }).color).toEqual(layout.confidence);
    const d = umapTraces(layout, { kind: "obs", column: "phase" });
    expect(d.map((x) => x.name)).toEqual(tally(layout.obs.phase).map(([k, n]) => `${k} (${n})`));
    expect(pointCount(d)).toBe(layout.n_points);
    // an unknown column falls back to the predicted types
    expect(umapTraces(layout, { kind: "obs", column: "no_such_column" }).map((x) => x.name)).toEqual(umapTraces(layout, { kind: "predicted" }).map((x) => x.name));
  });
  it("uses WebGL only for large point counts", () => {
    expect(layout.n_points).toBeLessThanOrEqual(5000);
    expect(umapTraces(layout, { kind: "predicted" })[0].type).toBe("scatter");
  });
});

describe("other figures", () => {
  it("marks the Unknown threshold on the histogram", () => {
    const h = histogramFigure([0.1, 0.9], 0.4);
    expect(h.layout.shapes[0]).toMatchObject({ x0: 0.4, x1: 0.4 });
    expect(histogramFigure([0.1], null).layout.shapes).toEqual([]);
  });
  it("sorts counts and row-normalises the confusion matrix", () => {
    const c = countsFigure({ a: 1, b: 5 });
    expect(c.data[0].y).toEqual(["b", "a"]);
    const m = confusionFigure({ model: "m", labels: ["a", "b"], matrix: [[3, 1], [0, 0]] });
    expect(m.data[0].z).toEqual([[0.75, 0.25], [0, 0]]);
  });
});

describe("colours", () => {
  it("gives the same colour to a type in the layout and the counts bar, and keeps Unknown grey", () => {
    const t = umapTraces(layout, { kind: "predicted" });
    const c = countsFigure(recordedResults.summary.label_counts!);
    const colours = c.data[0].marker.color as string[];
    expect(c.data[0].y).toEqual(t.map((x) => String(x.name).replace(/ \(\d+\)$/, "")));
    t.forEach((x, i) => expect((x.marker as { color: string }).color).toBe(colours[i]));
    expect(countsFigure({ B: 2, Unknown: 1 }).data[0].marker.color).toEqual(["#1f77b4", "#9ca3af"]);
  });
});
