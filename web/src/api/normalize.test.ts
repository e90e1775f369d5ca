import { describe, expect, it } from "vitest";
import { applications, demoModel, recordedResults, recordedStatus, uploadBody, withSummary } from "../test/fixtures";
import { normApplication, normDataset, normModel, normResults, normRuns, normStatus, paramsFromSchema } from "./normalize";

describe("paramsFromSchema", () => {
  it("reads the service's pydantic schemas: types, defaults, bounds, enums, required", () => {
    const ann = normApplication(applications.find((a) => a.id === "annotation")!);
    const byName = Object.fromEntries(ann.params.map((p) => [p.name, p]));
    expect(byName.threshold).toMatchObject({ type: "number", min: 0, max: 1, default: null, required: false });
    expect(byName.min_coverage).toMatchObject({ type: "number", default: 0.3 });
    expect(byName.layout.choices).toEqual(["umap", "pca", "none"]);
    expect(byName.label_key.type).toBe("string");
    const ft = normApplication(applications.find((a) => a.id === "finetune")!);
    const lk = ft.params.find((p) => p.name === "label_key")!;
    expect(lk.required).toBe(true);
    expect(ft.params.find((p) => p.name === "options")!.type).toBe("json");
    const ev = normApplication(applications.find((a) => a.id === "evaluation")!);
    expect(ev.params.find((p) => p.name === "methods")).toMatchObject({ type: "multi", choices: ["logreg", "knn", "head", "lora", "full"] });
  });
  it("returns nothing for a missing schema", () => {
    expect(paramsFromSchema(undefined)).toEqual([]);
  });
});

describe("normModel", () => {
  it("takes metrics from stored evaluations (with their run) and the training hold-out", () => {
    const m = normModel(demoModel);
    expect(m.input).toEqual({ representation: "lognorm", gene_id_kind: "symbol", n_genes: 765 });
    const fromEval = m.metrics.filter((x) => x.evaluation_run_id === "r_eval1").map((x) => x.name);
    expect(fromEval.sort()).toEqual(["accuracy", "ece", "macro_f1"]);
    expect(m.metrics.find((x) => x.name === "accuracy" && !x.evaluation_run_id)?.value).toBe(0.81);
    expect(m.metrics.some((x) => x.name === "n_cells")).toBe(false);
  });
  it("gives the reason a model is not ready", () => {
    expect(normModel({ ...demoModel, ready: false, status: "weights missing" }).ready_reason).toBe("weights missing");
  });
});

describe("normDataset / normStatus / normRuns", () => {
  it("maps the upload answer", () => {
    const d = normDataset(uploadBody());
    expect(d.id).toBe("d_abc");
    expect(d.report.coverage[0].target).toBe("demo-logreg-pbmc68k");
    expect(d.report.ok).toBe(true);
  });
  it("maps a real run's status and a page of runs (recorded from the API)", () => {
    const st = normStatus(recordedStatus);
    expect(st).toMatchObject({ run_id: recordedStatus.id, state: "succeeded", progress: 100, model_id: recordedStatus.model_id, error: null });
    const failed = normStatus({ ...recordedStatus, state: "failed", progress: 40, error: { code: "x", message: "bad", hint: "fix it" } });
    expect([failed.error, failed.error_hint, failed.progress]).toEqual(["bad", "fix it", 40]);
    const page = normRuns({ items: [recordedStatus], total: 7, page: 3, page_size: 1 });
    expect([page.total, page.offset, page.limit, page.items[0].run_id]).toEqual([7, 2, 1, recordedStatus.id]);
  });
});

describe("normResults", () => {
  it("maps a real annotation's results (recorded from the API): summary, layout, typed cell page", () => {
    const r = normResults(recordedResults);
    const s = recordedResults.summary;
    expect(r.summary.n_cells).toBe(s.n_cells);
    expect(r.summary.threshold).toBe(s.unknown_threshold);
    expect(r.summary.gene_panel_mode).toBe(s.gene_panel_mode);
    expect(r.summary.species).toBe(s.species);
    expect(Object.keys(r.summary.ontology_terms!)).toEqual(s.classes);
    expect(r.umap!.x).toHaveLength(recordedResults.layout.n_points);
    expect(r.umap!.top3![0]).toEqual(recordedResults.layout.top3![0]);
    const c = recordedResults.cells;
    expect(r.cells!.total).toBe(c.total);
    expect(r.cells!.limit).toBe(c.page_size);
    expect(r.cells!.items.map((x) => x.cell_id)).toEqual(c.items.map((x) => x.cell));
    expect(r.cells!.items[0]).toMatchObject({
      predicted: c.items[0].label, confidence: c.items[0].confidence, unknown: c.items[0].unknown,
      top: c.items[0].top3, term_id: c.items[0].ontology_term_id,
    });
    // every cell's term is its predicted class's term in the summary
    for (const x of c.items) expect(x.ontology_term_id).toBe(r.summary.ontology_terms![x.predicted].id);
    expect(r.evaluation).toBeNull();
  });
  it("turns the service's evaluation summary into a report (model vs baseline, square confusion)", () => {
    const r = normResults(withSummary({
        label_key: "cell_type", n_cells: 10, metrics: { accuracy: 0.7, macro_f1: 0.6 },
        baseline_comparison: { model_on_test: { accuracy: 0.7, macro_f1: 0.6 }, logreg_baseline_on_test: { accuracy: 0.9, macro_f1: 0.88 } },
        confusion: { labels_true: ["A", "B"], labels_pred: ["A", "B", "C"], counts: [[3, 1, 0], [0, 4, 2]] },
        most_confused: [{ true: "B", predicted: "C", count: 2, share_of_true: 0.33 }],
      }));
    const e = r.evaluation!;
    expect(e.confusion[0].labels).toEqual(["A", "B", "C"]);
    expect(e.confusion[0].matrix).toEqual([[3, 1, 0], [0, 4, 2], [0, 0, 0]]);
    expect(e.summary.filter((s) => s.metric === "macro_f1").map((s) => s.mean)).toEqual([0.6, 0.88]);
    expect(e.most_confused[0]).toMatchObject({ true: "B", predicted: "C", count: 2 });
  });

  it("reads evaluate()'s report (mean ± std per model and method, top confusions, warnings)", () => {
    const e = normResults(withSummary({
        summary: [
          { model: "geneformer", method: "lora", seed: 0, accuracy: 0.9, macro_f1: 0.8 },
          { model: "geneformer", method: "lora", seed: 1, accuracy: 0.8, macro_f1: 0.6 },
        ],
        mean_std: [{ model: "geneformer", method: "lora", accuracy_mean: 0.85, accuracy_std: 0.07, macro_f1_mean: 0.7, macro_f1_std: 0.14, train_seconds_mean: 3, n_seeds: 2 }],
        misclassified_top5: [{ model: "geneformer", method: "lora", true: "A", predicted: "B", count: 4 }],
        warnings: ["geneformer: the base model was RANDOMLY INITIALISED"],
      })).evaluation!;
    expect(e.summary).toEqual([
      { model: "geneformer · lora", metric: "accuracy", mean: 0.85, std: 0.07, n_seeds: 2 },
      { model: "geneformer · lora", metric: "macro_f1", mean: 0.7, std: 0.14, n_seeds: 2 },
    ]);
    expect(e.most_confused[0].model).toBe("geneformer · lora");
    expect(e.warnings).toHaveLength(1);
    const agg = normResults(withSummary({ summary: [
      { model: "m", method: "logreg", seed: 0, macro_f1: 0.5 }, { model: "m", method: "logreg", seed: 1, macro_f1: 0.7 },
    ] })).evaluation!.summary;
    expect(agg[0].mean).toBeCloseTo(0.6, 9);
    expect(agg[0].std).toBeCloseTo(Math.sqrt(0.02), 9);
  });

  it("reads evaluate()'s report nested under summary.report, with calibration per method", () => {
    const e = normResults(withSummary({
        label_key: "cell_type", evaluator: "cellfoundry.evaluation.evaluate",
        metrics: { per_method: {}, best_method: "g-lora", accuracy: 0.9, macro_f1: 0.8 },
        report: {
          mean_std: [
            { model: "g", method: "lora", macro_f1_mean: 0.8, macro_f1_std: 0.02, n_seeds: 3 },
            { model: "g", method: "logreg", macro_f1_mean: 0.7, macro_f1_std: 0.01, n_seeds: 3 },
          ],
          calibration: { "g-lora": { ece_before_temperature: 0.1, ece_after_temperature: 0.03 } },
        },
      })).evaluation!;
    expect(e.summary.map((r) => r.model)).toEqual(["g · lora", "g · logreg"]);
    expect(e.calibration).toEqual([{ model: "g · lora", ece_before: 0.1, ece_after: 0.03 }]);
  });
});
