import { render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { setApiKey } from "../api/client";
import { stubFetch } from "../test/fetch";
import {
  evaluationCells, evaluationResults, evaluationStatus, foundationSummary, mismatchResults, serviceSummary,
} from "../test/fixtures";
import { methodKey, reliabilityFromCells, summaryRows } from "../lib/evaluation";
import { computeVerdict } from "../lib/verdict";
import { EvaluationPage, EvaluationReport } from "./EvaluationPage";
import { num, pct } from "../lib/format";

const rowsOf = (testId: string) =>
  [...screen.getByTestId(testId).querySelectorAll("tbody tr")].map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent));

describe("EvaluationPage", () => {
  it("loads a recorded evaluation run: verdict, model vs baseline, confusion, pairs and reliability from its cells", async () => {
    setApiKey("k");
    const id = evaluationStatus.id;
    const { calls } = stubFetch({
      [`GET /status/${id}`]: { body: evaluationStatus },
      [`GET /results/${id}`]: (url) => ({
        body: Number(url.searchParams.get("page_size")) > 1 ? { ...evaluationResults, cells: evaluationCells } : evaluationResults,
      }),
    });
    render(<EvaluationPage runId={id} />);
    const s = evaluationResults.summary;
    const cmp = s.baseline_comparison!;
    const verdict = computeVerdict(summaryRows(s, evaluationResults.run.model_id))!;
    expect((await screen.findByTestId("verdict")).textContent).toBe(verdict.text);
    // the model and the baseline, each with its own figures on the same held-out cells
    const summary = rowsOf("summary-table");
    expect(summary.map((r) => r[0]!.replace(/ best$/, ""))).toEqual([evaluationResults.run.model_id, "logreg baseline (trained on this data)"]);
    expect(summary[0]).toContain(num(cmp.model_on_test.macro_f1));
    expect(summary[1]).toContain(num(cmp.logreg_baseline_on_test.macro_f1));
    // one confusion heatmap; the most-confused pairs as stored
    expect(screen.getByTestId(`confusion-${evaluationResults.run.model_id}`)).toBeTruthy();
    expect(rowsOf("most-confused")).toEqual(s.most_confused!.slice(0, 15).map((p) => [p.true, p.predicted, String(p.count)]));
    // reliability from every stored cell, fetched on one page
    const reliability = await screen.findByTestId("reliability");
    const curve = reliabilityFromCells(evaluationCells.items, evaluationResults.run.model_id)!;
    expect(reliability.getAttribute("data-points")).toBe(String(2 + curve.bin_count.length));
    expect(calls.filter((c) => c.url.pathname === `/results/${id}`).length).toBe(2);
    // every label of the data is one of the model's: no naming warning
    expect(s.metrics!.share_of_cells_with_model_labels).toBe(1);
    expect(screen.queryByText("The model and the data name cell types differently")).toBeNull();
  });

  it("warns when the model names cell types differently from the data (recorded: pbmc68k model on pbmc3k labels)", () => {
    const s = mismatchResults.summary;
    render(<EvaluationReport summary={s} modelName={mismatchResults.run.model_id} />);
    expect(s.metrics!.share_of_cells_with_model_labels!).toBeLessThan(0.5);
    expect(screen.getByText("The model and the data name cell types differently")).toBeTruthy();
    expect(screen.getByText(new RegExp(`Only ${pct(s.metrics!.share_of_cells_with_model_labels).replace(".", "\\.")} of the cells`))).toBeTruthy();
  });
});

describe("EvaluationReport with the ontology-aware score, called cells, reference rows and per-method figures", () => {
  // recorded by scripts/record_evaluation_fixture.py from the real evaluation task

  it("shows the service evaluation's ontology-aware accuracy, score and expressible share with the credit rule", () => {
    render(<EvaluationReport summary={serviceSummary} modelName="model" />);
    const o = serviceSummary.metrics!.ontology!;
    const table = screen.getByTestId("ontology-scores");
    const row = (name: string) => [...table.querySelectorAll("tbody tr")].find((tr) => tr.querySelector("td")!.textContent === name)!;
    expect(row("Ontology-aware accuracy").textContent).toContain(num(o.ontology_accuracy));
    expect(row("Ontology-aware accuracy").textContent).toContain(num(o.called_ontology_accuracy));
    expect(row("Ontology score").textContent).toContain(num(o.ontology_score));
    expect(row("Ontology score, mean over true terms").textContent).toContain(num(o.ontology_macro_score));
    expect(row("Share of cells whose true term the model can express").textContent).toContain(pct(o.expressible_share));
    expect(row("Share of cells called with a coarser term").textContent).toContain(pct(o.coarser_share));
    // the top-level copies are the block's own figures
    expect(serviceSummary.metrics!.ontology_score).toBe(o.ontology_score);
    expect(screen.getByTestId("ontology-rule").textContent).toMatch(/true Cell Ontology term or a finer one.*depth\(call\)\/depth\(true\) credit/);
  });

  it("shows the forced-choice figures beside the called-cell ones, and the majority-class and chance rows", () => {
    render(<EvaluationReport summary={serviceSummary} modelName="model" />);
    const m = serviceSummary.metrics!;
    const ref = m.reference!;
    const rows = rowsOf("called-figures");
    expect(rows[0]).toEqual(["The model (all evaluated cells)", num(m.accuracy), num(m.macro_f1), pct(m.coverage), num(m.called_accuracy), num(m.called_macro_f1)]);
    expect(rows[1]).toEqual([`Majority class (${ref.majority.label})`, num(ref.majority.accuracy), num(ref.majority.macro_f1), "—", "—", "—"]);
    expect(rows[2]).toEqual(["Chance (label frequencies)", num(ref.chance.accuracy), num(ref.chance.macro_f1), "—", "—", "—"]);
    expect(screen.queryByTestId("per-method")).toBeNull();
  });

  it("shows each foundation method's own figures from per_method, no single best figure, and the reference rows", () => {
    render(<EvaluationReport summary={foundationSummary} modelName="scimilarity" />);
    const per = foundationSummary.metrics!.per_method!;
    const table = screen.getByTestId("per-method");
    const rows = [...table.querySelectorAll("tbody tr")];
    expect(rows.map((tr) => tr.querySelector("td")!.textContent)).toEqual(Object.keys(per));
    const heads = [...table.querySelectorAll("thead th")].slice(1).map((th) => th.textContent!.replace(/ /g, "_"));
    expect(heads).toEqual(["accuracy", "macro_f1", "coverage", "called_macro_f1", "ontology_score", "expressible_share"]);
    for (const [i, f] of Object.values(per).entries()) {
      const cells = [...rows[i].querySelectorAll("td")].slice(1).map((td) => td.textContent);
      const figure = f as Record<string, number>;
      expect(cells).toEqual(heads.map((h) => `${num(figure[`${h}_mean`])} ± ${num(figure[`${h}_std`])}`));
    }
    expect(table.textContent).not.toMatch(/best/);
    const ref = foundationSummary.metrics!.reference!;
    expect(rowsOf("called-figures").map((r) => r.slice(0, 3))).toEqual([
      ["Majority class", num(ref.majority.accuracy_mean), num(ref.majority.macro_f1_mean)],
      ["Chance (label frequencies)", num(ref.chance.accuracy_mean), num(ref.chance.macro_f1_mean)],
    ]);
  });

  it("shows evaluate()'s summary as mean ± std per method over seeds, its top confusions and calibration", () => {
    render(<EvaluationReport summary={foundationSummary} modelName="scimilarity" />);
    const report = foundationSummary.report!;
    const summary = rowsOf("summary-table");
    for (const r of report.mean_std!) {
      const row = summary.find((x) => x[0]!.replace(/ best$/, "") === `${r.model} · ${r.method}`)!;
      expect(row).toContain(`${num(r.macro_f1_mean)} ± ${num(r.macro_f1_std)}`);
      expect(row.at(-1)).toBe(String(r.n_seeds));
    }
    expect(rowsOf("most-confused")).toEqual(report.misclassified_top5!.slice(0, 15).map((p) => [`${p.model} · ${p.method}`, p.true, p.predicted, String(p.count)]));
    // no reliability bins: the ECE before and after temperature scaling per method
    expect(rowsOf("calibration")).toEqual(Object.entries(report.calibration!).map(([k, c]) => [methodKey(k), num(c.ece_before_temperature), num(c.ece_after_temperature)]));
    expect(screen.getByTestId("verdict").textContent).toMatch(/No LoRA fine-tune is part of this comparison/);
  });
});
