import { describe, expect, it } from "vitest";
import type { SummaryRow } from "./evaluation";
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
