import { fireEvent, render, screen, waitFor } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { setApiKey } from "../api/client";
import { pct } from "../lib/format";
import { stubFetch } from "../test/fetch";
import { recordedResults, recordedStatus } from "../test/fixtures";
import { RunPage } from "./RunPage";

const run = (extra: Record<string, unknown>) => ({
  id: "r_1", state: "running", stage: "annotating", progress: 40, application_id: "annotation", dataset_id: "d_1",
  model_id: "demo", params: {}, attempts: 1, worker: "w", created_at: "2026-11-21T06:00:00Z", started_at: "2026-11-21T06:00:01Z",
  finished_at: null, updated_at: null, error: null, ...extra,
});

const N = 30;
const cells = Array.from({ length: N }, (_, i) => ({
  cell: `c${i}`, label: i % 3 ? "B" : "Unknown", predicted: "B", confidence: i % 3 ? 0.9 : 0.3, unknown: i % 3 === 0,
  top3: [{ label: "B", probability: 0.9 }, { label: "T", probability: 0.1 }], true_label: i % 2 ? "B cell" : "T cell",
}));

function resultsRoute(url: URL) {
  const page = Number(url.searchParams.get("page") ?? 1);
  const size = Number(url.searchParams.get("page_size") ?? 100);
  return {
    body: {
      run: run({ state: "succeeded", progress: 100 }),
      summary: { model: "demo", n_cells: N, label_counts: { B: 20, Unknown: 10 }, mean_confidence: 0.7, unknown_share: 0.333, unknown_threshold: 0.5, label_key: "cell_type", layout: "umap", layout_sampled: false },
      files: ["layout", "predictions", "probabilities"],
      layout: {
        method: "umap", sampled: false, n_points: N, cells: cells.map((c) => c.cell), x: cells.map((_, i) => i), y: cells.map((_, i) => i % 5), labels: cells.map((c) => c.label),
        confidence: cells.map((c) => c.confidence), top3: cells.map((c) => c.top3),
        obs: { cell_type: cells.map((c) => c.true_label), donor: cells.map((_, i) => (i === 4 ? null : i % 2 ? "d1" : "d2")) },
      },
      cells: { page, page_size: size, total: N, items: cells.slice((page - 1) * size, page * size) },
    },
  };
}

describe("RunPage", () => {
  it("asks for a key", () => {
    render(<RunPage runId="r_1" />);
    expect(screen.getByText("An API key is needed")).toBeTruthy();
  });

  it("shows a failed run's error and fix, and stops polling", async () => {
    setApiKey("k");
    const { calls } = stubFetch({
      "GET /status/r_1": { body: run({ state: "failed", stage: "failed", error: { code: "data_error", message: "the dataset has no obs column 'x'", hint: "choose one of: cell_type" } }) },
    });
    render(<RunPage runId="r_1" />);
    expect((await screen.findByTestId("run-error")).textContent).toBe("the dataset has no obs column 'x'");
    expect(screen.getByText(/choose one of: cell_type/)).toBeTruthy();
    expect(screen.getByRole("progressbar", { name: "Run progress" })).toBeTruthy();
    const n = calls.length;
    await new Promise((r) => setTimeout(r, 1200));
    expect(calls.length).toBe(n);
  });

  it("polls a running run until it succeeds, then shows results, UMAP points, table and downloads", async () => {
    setApiKey("k");
    let polls = 0;
    stubFetch({
      "GET /status/r_1": () => ({ body: ++polls < 2 ? run({}) : run({ state: "succeeded", stage: "done", progress: 100, finished_at: "2026-11-21T06:00:09Z" }) }),
      "GET /results/r_1": resultsRoute,
    });
    render(<RunPage runId="r_1" />);
    expect((await screen.findByTestId("run-state")).textContent).toBe("running");
    await waitFor(() => expect(screen.getByTestId("run-state").textContent).toBe("succeeded"), { timeout: 10_000 });
    const umap = await screen.findByTestId("umap");
    expect(umap.getAttribute("data-points")).toBe(String(N));
    expect(screen.getByTestId("umap-note").textContent).toContain("all 30 cells");
    expect(screen.getByText("33.3%")).toBeTruthy(); // Unknown share
    const table = await screen.findByTestId("cells-table");
    expect(table.querySelectorAll("tbody tr")).toHaveLength(25);
    expect(screen.getByText("Page 1 of 2 · 30 total")).toBeTruthy();
    // the dataset's obs columns sent with the layout are offered for colouring
    expect(screen.getByRole("option", { name: "cell_type" })).toBeTruthy();
    fireEvent.click(screen.getByRole("button", { name: "Next" }));
    await waitFor(() => expect(screen.getByTestId("cells-table").querySelectorAll("tbody tr")).toHaveLength(5));
    expect(screen.getByRole("button", { name: /Download annotated .h5ad/ })).toBeTruthy();
  });

  it("colours the layout by confidence and obs columns from the layout block, fetching one page only", async () => {
    setApiKey("k");
    const { calls } = stubFetch({
      "GET /status/r_1": { body: run({ state: "succeeded", progress: 100 }) },
      "GET /results/r_1": resultsRoute,
    });
    const plotly = vi.mocked(window.Plotly!.react);
    plotly.mockClear();
    render(<RunPage runId="r_1" />);
    await screen.findByTestId("umap");
    // no join: the results are asked for once, one table page, never every prediction
    const resultCalls = calls.filter((c) => c.url.pathname === "/results/r_1");
    expect(resultCalls).toHaveLength(1);
    expect(Number(resultCalls[0].url.searchParams.get("page_size"))).toBeLessThanOrEqual(25);
    const umapData = () => {
      const figures = plotly.mock.calls.map((c) => c[1] as Record<string, unknown>[]);
      return figures.filter((d) => d.some((t) => t.type === "scatter" && Array.isArray(t.text))).at(-1)!;
    };
    // hover text per point carries its confidence and top 3 from the layout
    await waitFor(() => expect(umapData()).toBeTruthy());
    const texts = umapData().flatMap((t) => t.text as string[]);
    expect(texts.find((t) => t.startsWith("c1<br>"))).toContain("confidence 90.0%");
    expect(texts.find((t) => t.startsWith("c1<br>"))).toContain("top 3: B 90%, T 10%");
    const conf = screen.getByRole("button", { name: "Confidence" }) as HTMLButtonElement;
    expect(conf.disabled).toBe(false);
    fireEvent.click(conf);
    await waitFor(() => expect(umapData()).toHaveLength(1));
    expect((umapData()[0].marker as { color: number[] }).color).toEqual(cells.map((c) => c.confidence));
    // the user's own obs column (a missing value shown as its own group)
    const select = screen.getByLabelText("Your obs column") as HTMLSelectElement;
    expect([...select.options].map((o) => o.value)).toEqual(["", "cell_type", "donor"]);
    fireEvent.change(select, { target: { value: "donor" } });
    await waitFor(() => expect(umapData().map((t) => t.name)).toEqual(["d1 (15)", "d2 (14)", "(missing) (1)"]));
  });

  it("never pages through every prediction to fill a layout that lacks per-point values", async () => {
    setApiKey("k");
    const { calls } = stubFetch({
      "GET /status/r_1": { body: run({ state: "succeeded", progress: 100 }) },
      "GET /results/r_1": (url) => {
        const r = resultsRoute(url);
        const { confidence: _c, top3: _t, obs: _o, ...layout } = r.body.layout;
        return { body: { ...r.body, layout } };
      },
    });
    render(<RunPage runId="r_1" />);
    await screen.findByTestId("umap");
    await screen.findByTestId("cells-table");
    expect(calls.filter((c) => c.url.pathname === "/results/r_1")).toHaveLength(1);
    expect((screen.getByRole("button", { name: "Confidence" }) as HTMLButtonElement).disabled).toBe(true);
    expect((screen.getByLabelText("Your obs column") as HTMLSelectElement).disabled).toBe(true);
  });

  it("says when the data's genes were mapped to human orthologs", async () => {
    setApiKey("k");
    const mapping = "mouse genes mapped to human orthologs (Ensembl 105 human-mouse orthologs): 14,718 of 15,026 genes (98.0%, 99.1% of counts) -> 14,700 human genes";
    stubFetch({
      "GET /status/r_1": { body: run({ state: "succeeded", stage: "done", progress: 100 }) },
      "GET /results/r_1": (url: URL) => {
        const r = resultsRoute(url);
        r.body.summary = { ...r.body.summary, species: "mouse", species_mapping: mapping } as typeof r.body.summary;
        return r;
      },
    });
    render(<RunPage runId="r_1" />);
    expect(await screen.findByText("The data's genes are mouse genes")).toBeTruthy();
    expect(screen.getByTestId("species-mapping").textContent).toContain("14,718 of 15,026 genes");
  });

  it("says when it cannot load the run", async () => {
    setApiKey("k");
    stubFetch({ "GET /status/r_1": { status: 404, body: { error: { code: "run_not_found", message: "no run 'r_1'", hint: "list your runs with GET /runs" } } } });
    render(<RunPage runId="r_1" />);
    expect(await screen.findByText("no run 'r_1'")).toBeTruthy();
  });

  it("shows a fine-tuning run's new model instead of empty plots", async () => {
    setApiKey("k");
    stubFetch({
      "GET /status/r_1": { body: run({ state: "succeeded", progress: 100, application_id: "finetune" }) },
      "GET /results/r_1": { body: { run: run({ state: "succeeded" }), summary: { label_key: "cell_type", new_model_id: "logreg-r_1" }, files: ["model"] } },
    });
    render(<RunPage runId="r_1" />);
    expect(await screen.findByText("A new model was registered: logreg-r_1")).toBeTruthy();
    expect(screen.queryByTestId("umap")).toBeNull();
    expect(screen.getByTestId("result-summary").textContent).toContain("cell_type");
  });
});

describe("RunPage with a recorded annotation", () => {
  it("shows the run's species, gene panel, coverage and each class's and cell's Cell Ontology term", async () => {
    setApiKey("k");
    const id = recordedStatus.id;
    stubFetch({ [`GET /status/${id}`]: { body: recordedStatus }, [`GET /results/${id}`]: { body: recordedResults } });
    render(<RunPage runId={id} />);
    const s = recordedResults.summary;
    const facts = await screen.findByTestId("run-facts");
    expect(facts.textContent).toContain(s.species!);
    expect(facts.textContent).toContain(s.gene_panel_mode!);
    expect(facts.textContent).toContain(pct(s.gene_coverage!));
    const terms = screen.getByTestId("ontology-terms");
    const rows = [...terms.querySelectorAll("tbody tr")].map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent));
    expect(rows).toEqual(Object.entries(s.ontology!.terms!).map(([cls, t]) => [cls, t.name || "—", t.id || "not mapped"]));
    const table = await screen.findByTestId("cells-table");
    const first = recordedResults.cells.items[0];
    const cellRow = [...table.querySelectorAll("tbody tr")].find((tr) => tr.textContent!.includes(first.cell))!;
    expect(cellRow.textContent).toContain(first.ontology_term_id!);
  });
});
