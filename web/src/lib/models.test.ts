import { describe, expect, it } from "vitest";
import { brokenModel, demoModel, pbmc3kModel } from "../test/fixtures";
import { MODEL_METRICS, modelMetrics } from "./models";

describe("modelMetrics", () => {
  it("lists each stored evaluation's figures with its run, then the training hold-out's", () => {
    const rows = modelMetrics(pbmc3kModel);
    const [ev] = pbmc3kModel.metrics.evaluations;
    const fromEval = rows.filter((r) => r.evaluation_run_id === ev.run_id);
    expect(fromEval.length).toBeGreaterThan(0);
    for (const r of fromEval) expect(r.value).toBe(ev.metrics[r.name as (typeof MODEL_METRICS)[number]]);
    expect(fromEval[0].source).toBe(`labels: ${ev.label_key}`);
    const held = rows.filter((r) => r.evaluation_run_id === null);
    expect(held.map((r) => r.name)).toEqual(MODEL_METRICS.filter((k) => typeof pbmc3kModel.metrics.training_holdout[k] === "number"));
    expect(rows.indexOf(held[0])).toBe(fromEval.length);
  });
  it("has only the hold-out figures for a model without evaluations, none of them counts", () => {
    expect(brokenModel.metrics.evaluations).toHaveLength(0);
    const rows = modelMetrics(brokenModel);
    expect(rows.every((r) => r.evaluation_run_id === null && r.name !== "n_cells")).toBe(true);
    expect(rows.find((r) => r.name === "accuracy")?.value).toBe(brokenModel.metrics.training_holdout.accuracy);
    // the demo model: its evaluation on pbmc3k's differently named labels, then its hold-out
    const demo = modelMetrics(demoModel);
    expect(demo.filter((r) => r.evaluation_run_id !== null).map((r) => r.evaluation_run_id)).toContain(demoModel.metrics.evaluations[0].run_id);
    expect(demo.filter((r) => r.evaluation_run_id === null).find((r) => r.name === "accuracy")?.value).toBe(demoModel.metrics.training_holdout.accuracy);
  });
});
