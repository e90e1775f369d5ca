import { render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { normResults } from "../api/normalize";
import { setApiKey } from "../api/client";
import { stubFetch } from "../test/fetch";
import { withSummary } from "../test/fixtures";
import { EvaluationPage, EvaluationReport } from "./EvaluationPage";

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
