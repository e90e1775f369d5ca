import { describe, expect, it } from "vitest";
import type { Umap } from "../api/types";
import { pointCount } from "./Plot";
import { confusionFigure, countsFigure, histogramFigure, umapTraces } from "./charts";

const umap: Umap = {
  x: [0, 1, 2, 3, 4], y: [0, 1, 0, 1, 0], labels: ["B", "T", "B", "Unknown", "T"],
  confidence: [0.9, 0.8, 0.7, 0.2, 0.95], sampled: false, n_total: 5,
  top3: [[{ label: "B", probability: 0.9 }, { label: "T", probability: 0.05 }], [], [], [], []],
  obs: { donor: ["a", "a", "b", "b", null], n_counts: [100, 200, 300, 400, 500] },
};

describe("umapTraces", () => {
  it("draws every cell once, one trace per predicted type, with label/confidence/top-3 on hover", () => {
    const t = umapTraces(umap, { kind: "predicted" });
    expect(pointCount(t)).toBe(5);
    expect(t.map((x) => x.name)).toEqual(["B (2)", "T (2)", "Unknown (1)"]);
    const text = (t[0].text as string[])[0];
    expect(text).toContain("<b>B</b>");
    expect(text).toContain("confidence 90.0%");
    expect(text).toContain("top 3: B 90%, T 5%");
  });
  it("colours by confidence continuously and by a user obs column", () => {
    const c = umapTraces(umap, { kind: "confidence" });
    expect(c).toHaveLength(1);
    expect((c[0].marker as { color: number[] }).color).toEqual(umap.confidence);
    const d = umapTraces(umap, { kind: "obs", column: "donor" });
    expect(d.map((x) => x.name)).toEqual(["a (2)", "b (2)", "(missing) (1)"]);
    const n = umapTraces(umap, { kind: "obs", column: "n_counts" });
    expect(n).toHaveLength(1);
    expect(pointCount(n)).toBe(5);
  });
  it("uses WebGL only for large point counts", () => {
    expect(umapTraces(umap, { kind: "predicted" })[0].type).toBe("scatter");
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
  it("keeps Unknown grey and gives the same colour to a type in the UMAP and the counts bar", () => {
    const t = umapTraces(umap, { kind: "predicted" });
    const c = countsFigure({ B: 2, T: 2, Unknown: 1 });
    const colours = c.data[0].marker.color as string[];
    expect((t[2].marker as { color: string }).color).toBe("#9ca3af");
    expect(colours[2]).toBe("#9ca3af");
    expect((t[0].marker as { color: string }).color).toBe(colours[0]);
    expect((t[1].marker as { color: string }).color).toBe(colours[1]);
  });
});
