import { render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { normResults } from "../api/normalize";
import { setApiKey } from "../api/client";
import { stubFetch } from "../test/fetch";
import { withSummary } from "../test/fixtures";
import { EvaluationPage, EvaluationReport } from "./EvaluationPage";
import { num, pct } from "../lib/format";
import serviceSummary from "../test/evaluation_summary.json";
import foundationSummary from "../test/evaluation_foundation_summary.json";

describe("EvaluationReport", () => {
  it("renders summary mean ± std, confusion heatmaps side by side, pairs, reliability and a verdict", () => {
    const ev = {
      summary: [
        { model: "geneformer-lora", metric: "macro_f1", mean: 0.91, std: 0.01, n_seeds: 3 },
        { model: "logreg", metric: "macro_f1", mean: 0.85, std: 0.02, n_seeds: 3 },
        { model: "geneformer-lora", metric: "accuracy", mean: 0.95, std: 0.01, n_seeds: 3 },
        { model: "logreg", metric: "accuracy", mean: 0.9, std: 0.01, n_seeds: 3 },
      ],
      confusion: [
        { model: "geneformer-lora", labels: ["A", "B"], matrix: [[9, 1], [0, 10]] },
        { model: "logreg", labels: ["A", "B"], matrix: [[8, 2], [1, 9]] },
      ],
      most_confused: [{ model: "logreg", true: "A", predicted: "B", count: 2 }],
      reliability: [{ model: "logreg", bin_confidence: [0.5, 0.9], bin_accuracy: [0.4, 0.95], bin_count: [3, 17], ece: 0.05 }],
    };
    render(<EvaluationReport evaluation={ev} />);
    expect(screen.getByTestId("verdict").textContent).toMatch(/Fine-tuning helped: geneformer-lora beat the best baseline \(logreg\) by 0.060 macro f1/);
    expect(screen.getByText("0.910 ± 0.010")).toBeTruthy();
    expect(screen.getByTestId("confusion-geneformer-lora")).toBeTruthy();
    expect(screen.getByTestId("confusion-logreg")).toBeTruthy();
    expect(screen.getByTestId("most-confused").textContent).toContain("A");
    expect(screen.getByTestId("reliability").getAttribute("data-points")).toBe("4");
  });

  it("reads the service's evaluation run (model vs a baseline trained on the data)", async () => {
    setApiKey("k");
    const summary = {
      label_key: "cell_type", n_cells: 20, metrics: { accuracy: 0.7, macro_f1: 0.6, share_of_cells_with_model_labels: 0.2 },
      baseline_comparison: { model_on_test: { accuracy: 0.7, macro_f1: 0.6 }, logreg_baseline_on_test: { accuracy: 0.9, macro_f1: 0.88 }, n_train: 14, n_test: 6 },
      confusion: { labels_true: ["A", "B"], labels_pred: ["A", "B"], counts: [[7, 3], [3, 7]] },
      most_confused: [{ true: "A", predicted: "B", count: 3, share_of_true: 0.3 }],
    };
    stubFetch({
      "GET /status/r_e": { body: { id: "r_e", state: "succeeded", stage: "done", progress: 100, application_id: "evaluation", model_id: "demo", error: null } },
      "GET /results/r_e": { body: { run: { id: "r_e", model_id: "demo", application_id: "evaluation" }, summary, files: ["confusion"] } },
    });
    render(<EvaluationPage runId="r_e" />);
    expect((await screen.findByTestId("verdict")).textContent).toBe(
      "logreg baseline (trained on this data) scored best on macro f1 (0.880). demo scored 0.600, 0.280 lower. No LoRA fine-tune is part of this comparison. With a single seed the spread is unknown, so treat this as indicative only.",
    );
    expect(screen.getByTestId("summary-table").querySelectorAll("tbody tr")).toHaveLength(2);
    expect(screen.getByText("The model and the data name cell types differently")).toBeTruthy();
    expect(normResults(withSummary(summary)).evaluation!.confusion[0].labels).toEqual(["A", "B"]);
  });
});

describe("EvaluationReport with the ontology-aware score, called cells, reference rows and per-method figures", () => {
  // recorded by scripts/record_evaluation_fixture.py from the real evaluation task
  const service = serviceSummary as Record<string, any>;
  const foundation = foundationSummary as Record<string, any>;

  it("shows the service evaluation's ontology-aware accuracy, score and expressible share with the credit rule", () => {
    const ev = normResults(withSummary(service)).evaluation!;
    render(<EvaluationReport evaluation={ev} />);
    const o = service.metrics.ontology;
    const table = screen.getByTestId("ontology-scores");
    const row = (name: string) => [...table.querySelectorAll("tbody tr")].find((tr) => tr.querySelector("td")!.textContent === name)!;
    expect(row("Ontology-aware accuracy").textContent).toContain(num(o.ontology_accuracy));
    expect(row("Ontology-aware accuracy").textContent).toContain(num(o.called_ontology_accuracy));
    expect(row("Ontology score").textContent).toContain(num(o.ontology_score));
    expect(row("Ontology score, mean over true terms").textContent).toContain(num(o.ontology_macro_score));
    expect(row("Share of cells whose true term the model can express").textContent).toContain(pct(o.expressible_share));
    expect(row("Share of cells called with a coarser term").textContent).toContain(pct(o.coarser_share));
    // the top-level copies are the block's own figures
    expect(service.metrics.ontology_score).toBe(o.ontology_score);
    expect(screen.getByTestId("ontology-rule").textContent).toMatch(/true Cell Ontology term or a finer one.*depth\(call\)\/depth\(true\) credit/);
  });

  it("shows the forced-choice figures beside the called-cell ones, and the majority-class and chance rows", () => {
    render(<EvaluationReport evaluation={normResults(withSummary(service)).evaluation!} />);
    const m = service.metrics;
    const rows = [...screen.getByTestId("called-figures").querySelectorAll("tbody tr")].map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent));
    expect(rows[0]).toEqual(["The model (all evaluated cells)", num(m.accuracy), num(m.macro_f1), pct(m.coverage), num(m.called_accuracy), num(m.called_macro_f1)]);
    expect(rows[1]).toEqual([`Majority class (${m.reference.majority.label})`, num(m.reference.majority.accuracy), num(m.reference.majority.macro_f1), "—", "—", "—"]);
    expect(rows[2]).toEqual(["Chance (label frequencies)", num(m.reference.chance.accuracy), num(m.reference.chance.macro_f1), "—", "—", "—"]);
    expect(screen.queryByTestId("per-method")).toBeNull();
  });

  it("shows each foundation method's own figures from per_method, no single best figure, and the reference rows", () => {
    const ev = normResults(withSummary(foundation)).evaluation!;
    render(<EvaluationReport evaluation={ev} />);
    const per = foundation.metrics.per_method as Record<string, Record<string, number>>;
    const table = screen.getByTestId("per-method");
    const rows = [...table.querySelectorAll("tbody tr")];
    expect(rows.map((tr) => tr.querySelector("td")!.textContent)).toEqual(Object.keys(per));
    const heads = [...table.querySelectorAll("thead th")].slice(1).map((th) => th.textContent!.replace(/ /g, "_"));
    expect(heads).toEqual(expect.arrayContaining(["accuracy", "macro_f1", "coverage", "called_macro_f1", "ontology_score", "expressible_share"]));
    for (const [i, [, f]] of Object.entries(per).entries()) {
      const cells = [...rows[i].querySelectorAll("td")].slice(1).map((td) => td.textContent);
      expect(cells).toEqual(heads.map((h) => `${num(f[`${h}_mean`])} ± ${num(f[`${h}_std`])}`));
    }
    expect(table.textContent).not.toMatch(/best/);
    const ref = foundation.metrics.reference;
    const refRows = [...screen.getByTestId("called-figures").querySelectorAll("tbody tr")].map((tr) => [...tr.querySelectorAll("td")].slice(0, 3).map((td) => td.textContent));
    expect(refRows).toEqual([
      ["Majority class", num(ref.majority.accuracy_mean), num(ref.majority.macro_f1_mean)],
      ["Chance (label frequencies)", num(ref.chance.accuracy_mean), num(ref.chance.macro_f1_mean)],
    ]);
  });
});
