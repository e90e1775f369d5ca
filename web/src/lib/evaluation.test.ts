import { describe, expect, it } from "vitest";
import { evaluationCells, evaluationResults, foundationSummary, recordedResults, serviceSummary } from "../test/fixtures";
import {
  SUMMARY_METRICS, calibrationRows, confusedPairs, isEvaluation, methodFigures, referenceRows, reliabilityFromCells, squareConfusion,
  summaryRows,
} from "./evaluation";

// every summary below is a stored summary recorded from the real service

describe("summaryRows", () => {
  it("reads the service's comparison: the model and the logreg baseline, one seed each", () => {
    const rows = summaryRows(serviceSummary, "m");
    const cmp = serviceSummary.baseline_comparison!;
    expect([...new Set(rows.map((r) => r.model))]).toEqual(["m", "logreg baseline (trained on this data)"]);
    for (const metric of SUMMARY_METRICS) {
      expect(rows.find((r) => r.model === "m" && r.metric === metric)?.mean).toBe(cmp.model_on_test[metric]);
      expect(rows.find((r) => r.model !== "m" && r.metric === metric)?.mean).toBe(cmp.logreg_baseline_on_test[metric]);
    }
    expect(rows.every((r) => r.std === 0 && r.n_seeds === 1)).toBe(true);
  });
  it("reads evaluate()'s mean ± std per (model, method)", () => {
    const rows = summaryRows(foundationSummary, "ignored");
    const ms = foundationSummary.report!.mean_std!;
    expect([...new Set(rows.map((r) => r.model))]).toEqual(ms.map((r) => `${r.model} · ${r.method}`));
    for (const r of ms) {
      const row = rows.find((x) => x.model === `${r.model} · ${r.method}` && x.metric === "macro_f1")!;
      expect([row.mean, row.std, row.n_seeds]).toEqual([r.macro_f1_mean, r.macro_f1_std, r.n_seeds]);
    }
  });
  it("has no rows for an annotation without labels' figures", () => {
    expect(summaryRows({ ...recordedResults.summary, metrics: undefined }, "m")).toEqual([]);
  });
});

describe("the other tables", () => {
  it("tells evaluations from annotations", () => {
    expect([serviceSummary, foundationSummary, evaluationResults.summary].map(isEvaluation)).toEqual([true, true, true]);
    expect(isEvaluation(recordedResults.summary)).toBe(false);
  });
  it("squares the confusion counts over the union of labels, keeping every count in place", () => {
    const c = serviceSummary.confusion!;
    const sq = squareConfusion(c, "m");
    expect(sq.labels).toEqual([...new Set([...c.labels_true, ...c.labels_pred])]);
    expect(sq.matrix.every((row) => row.length === sq.labels.length)).toBe(true);
    c.labels_true.forEach((t, i) => c.labels_pred.forEach((p, j) => {
      expect(sq.matrix[sq.labels.indexOf(t)][sq.labels.indexOf(p)]).toBe(c.counts[i][j]);
    }));
    const total = (m: number[][]) => m.flat().reduce((a, b) => a + b, 0);
    expect(total(sq.matrix)).toBe(total(c.counts));
  });
  it("lists confused pairs with the method for evaluate()'s report only", () => {
    expect(confusedPairs(serviceSummary).map((p) => [p.model, p.true, p.predicted, p.count])).toEqual(
      serviceSummary.most_confused!.map((p) => [null, p.true, p.predicted, p.count]),
    );
    const top = foundationSummary.report!.misclassified_top5!;
    expect(confusedPairs(foundationSummary).map((p) => p.model)).toEqual(top.map((p) => `${p.model} · ${p.method}`));
  });
  it("reads calibration per method, reference rows and each method's figures", () => {
    const cal = foundationSummary.report!.calibration!;
    expect(calibrationRows(foundationSummary)).toEqual(Object.entries(cal).map(([k, c]) => ({
      model: k.replace(/-([^-]+)$/, " · $1"), ece_before: c.ece_before_temperature, ece_after: c.ece_after_temperature,
    })));
    expect(calibrationRows(serviceSummary)).toEqual([]);
    const ref = serviceSummary.metrics!.reference!;
    expect(referenceRows(serviceSummary.metrics)).toEqual([
      { name: "majority", label: ref.majority.label, accuracy: ref.majority.accuracy, macro_f1: ref.majority.macro_f1 },
      { name: "chance", label: null, accuracy: ref.chance.accuracy, macro_f1: ref.chance.macro_f1 },
    ]);
    const fref = foundationSummary.metrics!.reference!;
    expect(referenceRows(foundationSummary.metrics).map((r) => r.accuracy)).toEqual([fref.majority.accuracy_mean, fref.chance.accuracy_mean]);
    const per = foundationSummary.metrics!.per_method!;
    const figures = methodFigures(foundationSummary.metrics);
    expect(figures.map((f) => f.method)).toEqual(Object.keys(per));
    expect(figures[0].figures.find((f) => f.metric === "accuracy")).toEqual({
      metric: "accuracy", mean: Object.values(per)[0].accuracy_mean, std: Object.values(per)[0].accuracy_std,
    });
    expect(methodFigures(serviceSummary.metrics)).toEqual([]);
  });
});

describe("reliabilityFromCells", () => {
  it("bins the recorded cells' top-1 confidence against their accuracy", () => {
    const cells = evaluationCells.items;
    const r = reliabilityFromCells(cells, "m")!;
    const labelled = cells.filter((c) => c.true_label != null);
    expect(r.bin_count.reduce((a, b) => a + b, 0)).toBe(labelled.length);
    // each bin's mean confidence lies in its bin; overall accuracy is the share of right top-1 calls
    r.bin_confidence.forEach((c, i) => {
      expect(c).toBeGreaterThanOrEqual(0);
      expect(c).toBeLessThanOrEqual(1);
      if (i > 0) expect(c).toBeGreaterThan(r.bin_confidence[i - 1]);
    });
    const right = labelled.filter((c) => c.top3[0].label === c.true_label).length;
    const weighted = r.bin_accuracy.reduce((a, acc, i) => a + acc * r.bin_count[i], 0);
    expect(weighted).toBeCloseTo(right, 6);
    const ece = r.bin_accuracy.reduce((e, acc, i) => e + (r.bin_count[i] / labelled.length) * Math.abs(acc - r.bin_confidence[i]), 0);
    expect(r.ece).toBeCloseTo(ece, 12);
    expect(reliabilityFromCells([], "m")).toBeNull();
    expect(reliabilityFromCells(cells.map((c) => ({ ...c, true_label: null })), "m")).toBeNull();
  });
});
