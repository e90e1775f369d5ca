import { describe, expect, it } from "vitest";
import type { SummaryRow } from "../api/types";
import { reliabilityFromCells } from "./enrich";
import { computeVerdict, primaryMetric } from "./verdict";

const row = (model: string, mean: number, std: number, metric = "macro_f1", n_seeds = 3): SummaryRow => ({ model, metric, mean, std, n_seeds });

describe("computeVerdict", () => {
  it("says LoRA won, by how much, when the gain exceeds the spread", () => {
    const v = computeVerdict([row("geneformer-lora", 0.9, 0.01), row("logreg", 0.8, 0.02), row("knn", 0.75, 0.02), row("logreg", 0.95, 0, "accuracy")])!;
    expect(v.metric).toBe("macro_f1");
    expect(v.outcome).toBe("better");
    expect(v.delta).toBeCloseTo(0.1, 6);
    expect(v.text).toContain("beat the best baseline (logreg) by 0.100");
  });
  it("says it lost when the baseline is clearly ahead", () => {
    const v = computeVerdict([row("scgpt-lora", 0.6, 0.01), row("logreg", 0.8, 0.01)])!;
    expect(v.outcome).toBe("worse");
    expect(v.text).toMatch(/did not help/);
  });
  it("calls a difference within the spread a tie", () => {
    const v = computeVerdict([row("lora", 0.81, 0.05), row("logreg", 0.8, 0.05)])!;
    expect(v.outcome).toBe("tie");
    expect(v.text).toMatch(/No clear difference/);
  });
  it("warns that one seed gives no spread, and handles no fine-tuned model", () => {
    expect(computeVerdict([row("lora", 0.9, 0, "macro_f1", 1), row("logreg", 0.7, 0, "macro_f1", 1)])!.text).toMatch(/single seed/);
    const v = computeVerdict([row("logreg", 0.8, 0.01), row("knn", 0.7, 0.01)])!;
    expect(v.outcome).toBe("no-comparison");
    expect(v.best.model).toBe("logreg");
    expect(v.text).toBe("logreg scored best on macro f1 (0.800 ± 0.010 over 3 seeds). knn scored 0.700 ± 0.010 over 3 seeds, 0.100 lower, more than the spread across seeds. No LoRA fine-tune is part of this comparison.");
    expect(computeVerdict([])).toBeNull();
  });
  it("prefers macro-F1, then balanced accuracy, then accuracy", () => {
    expect(primaryMetric([row("a", 1, 0, "accuracy"), row("a", 1, 0, "balanced_accuracy")])).toBe("balanced_accuracy");
  });
});

describe("reliabilityFromCells", () => {
  it("bins top-1 confidence against accuracy and computes the ECE", () => {
    const cell = (p: number, top: string, truth: string) => ({ cell_id: "c", predicted: top, confidence: p, unknown: false, top: [{ label: top, probability: p }], true_label: truth });
    const r = reliabilityFromCells([cell(0.95, "A", "A"), cell(0.91, "A", "B"), cell(0.55, "B", "B")], "m")!;
    expect(r.bin_count).toEqual([1, 2]);
    expect(r.bin_accuracy).toEqual([1, 0.5]);
    expect(r.bin_confidence[1]).toBeCloseTo(0.93, 9);
    expect(r.ece).toBeCloseTo((1 / 3) * 0.45 + (2 / 3) * 0.43, 9);
    expect(reliabilityFromCells([], "m")).toBeNull();
  });
});
