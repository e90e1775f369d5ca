import { fireEvent, render, screen, waitFor } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { setApiKey } from "../api/client";
import { count, pct } from "../lib/format";
import { stubFetch } from "../test/fetch";
import {
  failedStatus, finetuneResults, finetuneStatus, layoutDensity, mouseResults, mouseUpload, notFound, recordedResults, recordedStatus,
  resultsPage2, runningStatus,
} from "../test/fixtures";
import { RunPage } from "./RunPage";

const id = recordedStatus.id;
const layout = recordedResults.layout;

/** The recorded annotation's /results: page 1 and 2 of 25 cells were recorded. */
function resultsRoute(url: URL) {
  const page = Number(url.searchParams.get("page") ?? 1);
  return { body: page === 1 ? recordedResults : { ...recordedResults, cells: resultsPage2 } };
}

describe("RunPage", () => {
  it("asks for a key", () => {
    render(<RunPage runId={id} />);
    expect(screen.getByText("An API key is needed")).toBeTruthy();
  });

  it("shows a failed run's error and fix, and stops polling", async () => {
    setApiKey("k");
    const { calls } = stubFetch({ [`GET /status/${failedStatus.id}`]: { body: failedStatus } });
    render(<RunPage runId={failedStatus.id} />);
    expect((await screen.findByTestId("run-error")).textContent).toBe(failedStatus.error!.message);
    expect(screen.getByText(failedStatus.error!.hint!)).toBeTruthy();
    expect(screen.getByRole("progressbar", { name: "Run progress" })).toBeTruthy();
    const n = calls.length;
    await new Promise((r) => setTimeout(r, 1200));
    expect(calls.length).toBe(n);
  });

  it("polls a running run until it succeeds, then shows results, layout points, table and downloads", async () => {
    setApiKey("k");
    let polls = 0;
    stubFetch({
      [`GET /status/${id}`]: () => ({ body: ++polls < 2 ? { ...runningStatus, id } : recordedStatus }),
      [`GET /results/${id}`]: resultsRoute,
      [`GET /runs/${id}/layout`]: { body: layoutDensity },
    });
    render(<RunPage runId={id} />);
    expect((await screen.findByTestId("run-state")).textContent).toBe("running");
    await waitFor(() => expect(screen.getByTestId("run-state").textContent).toBe("succeeded"), { timeout: 10_000 });
    // coloured by predicted type: every cell, from the server's view of the layout, with WebGL
    const umap = await screen.findByTestId("umap");
    await waitFor(() => expect(screen.getByTestId("layout-view").getAttribute("data-mode")).toBe("density"));
    expect(umap.getAttribute("data-webgl")).toBe("true");
    expect(screen.getByTestId("umap-note").textContent)
      .toContain(`${count(layoutDensity.n_in_view)} of ${count(layoutDensity.n_cells)} cells in view`);
    const unknownStat = screen.getAllByText("Unknown").find((el) => el.className === "stat-label")!;
    expect(unknownStat.nextElementSibling!.textContent).toBe(pct(recordedResults.summary.unknown_share));
    const table = await screen.findByTestId("cells-table");
    expect(table.querySelectorAll("tbody tr")).toHaveLength(recordedResults.cells.items.length);
    const total = recordedResults.cells.total;
    expect(screen.getByText(`Page 1 of ${Math.ceil(total / 25)} · ${count(total)} total`)).toBeTruthy();
    // the dataset's obs columns sent with the layout are offered for colouring
    for (const col of Object.keys(layout.obs)) expect(screen.getByRole("option", { name: col })).toBeTruthy();
    fireEvent.click(screen.getByRole("button", { name: "Next" }));
    await waitFor(() => expect(screen.getByTestId("cells-table").textContent).toContain(resultsPage2.items[0].cell));
    expect(screen.getByTestId("cells-table").querySelectorAll("tbody tr")).toHaveLength(resultsPage2.items.length);
    expect(screen.getByRole("button", { name: /Download annotated .h5ad/ })).toBeTruthy();
  });

  it("colours the layout by confidence and obs columns from the layout block, fetching one page only", async () => {
    setApiKey("k");
    const { calls } = stubFetch({
      [`GET /status/${id}`]: { body: recordedStatus }, [`GET /results/${id}`]: resultsRoute,
      [`GET /runs/${id}/layout`]: { body: layoutDensity },
    });
    const plotly = vi.mocked(window.Plotly!.react);
    plotly.mockClear();
    render(<RunPage runId={id} />);
    await screen.findByTestId("umap");
    // no join: the results are asked for once, one table page, never every prediction
    const resultCalls = calls.filter((c) => c.url.pathname === `/results/${id}`);
    expect(resultCalls).toHaveLength(1);
    expect(Number(resultCalls[0].url.searchParams.get("page_size"))).toBeLessThanOrEqual(25);
    const umapData = () => {
      const figures = plotly.mock.calls.map((c) => c[1] as Record<string, unknown>[]);
      return figures.filter((d) => d.some((t) => String(t.type).startsWith("scatter") && Array.isArray(t.text))).at(-1)!;
    };
    const conf = screen.getByRole("button", { name: "Confidence" }) as HTMLButtonElement;
    expect(conf.disabled).toBe(false);
    fireEvent.click(conf);
    await waitFor(() => expect(umapData()).toHaveLength(1));
    expect((umapData()[0].marker as { color: number[] }).color).toEqual(layout.confidence);
    // hover text per point carries its confidence and top 3 from the layout
    const texts = umapData().flatMap((t) => t.text as string[]);
    const i = 1;
    const hover = texts.find((t) => t.startsWith(`${layout.cells[i]}<br>`))!;
    expect(hover).toContain(`confidence ${(layout.confidence![i] * 100).toFixed(1)}%`);
    expect(hover).toContain(`top 3: ${layout.top3![i].map((t) => `${t.label} ${(t.probability * 100).toFixed(0)}%`).join(", ")}`);
    // the user's own obs column: one trace per value, largest first, with its cell count
    const select = screen.getByLabelText("Your obs column") as HTMLSelectElement;
    expect([...select.options].map((o) => o.value)).toEqual(["", ...Object.keys(layout.obs)]);
    fireEvent.change(select, { target: { value: "bulk_labels" } });
    const groups = new Map<string, number>();
    for (const v of layout.obs.bulk_labels) groups.set(v ?? "(missing)", (groups.get(v ?? "(missing)") ?? 0) + 1);
    await waitFor(() => expect(new Set(umapData().map((t) => t.name))).toEqual(new Set([...groups].map(([k, n]) => `${k} (${n})`))));
  });

  it("never pages through every prediction to fill a layout that lacks per-point values", async () => {
    setApiKey("k");
    // the recorded layout without its per-point values (as layouts stored before they were kept)
    const bare = { ...layout, confidence: null, top3: null, obs: {} };
    const { calls } = stubFetch({
      [`GET /status/${id}`]: { body: recordedStatus },
      [`GET /results/${id}`]: { body: { ...recordedResults, layout: bare } },
      [`GET /runs/${id}/layout`]: { body: layoutDensity },
    });
    render(<RunPage runId={id} />);
    await screen.findByTestId("umap");
    await screen.findByTestId("cells-table");
    expect(calls.filter((c) => c.url.pathname === `/results/${id}`)).toHaveLength(1);
    expect((screen.getByRole("button", { name: "Confidence" }) as HTMLButtonElement).disabled).toBe(true);
    expect((screen.getByLabelText("Your obs column") as HTMLSelectElement).disabled).toBe(true);
  });

  it("says when the data's genes were mapped to human orthologs (a mouse dataset)", async () => {
    setApiKey("k");
    const run = mouseResults.run;
    stubFetch({ [`GET /status/${run.id}`]: { body: run }, [`GET /results/${run.id}`]: { body: mouseResults } });
    render(<RunPage runId={run.id} />);
    expect(mouseUpload.report.species).toBe("mouse");
    expect(await screen.findByText(`The data's genes are ${mouseResults.summary.species} genes`)).toBeTruthy();
    expect(screen.getByTestId("species-mapping").textContent).toBe(`${mouseResults.summary.species_mapping}; the model saw these human orthologs.`);
  });

  it("says when it cannot load the run", async () => {
    setApiKey("k");
    stubFetch({ "GET /status/r_no_such_run": { status: 404, body: notFound } });
    render(<RunPage runId="r_no_such_run" />);
    expect(await screen.findByText(notFound.error.message)).toBeTruthy();
  });

  it("shows a fine-tuning run's new model instead of empty plots", async () => {
    setApiKey("k");
    const tuned = finetuneStatus.id;
    stubFetch({ [`GET /status/${tuned}`]: { body: finetuneStatus }, [`GET /results/${tuned}`]: { body: finetuneResults } });
    render(<RunPage runId={tuned} />);
    expect(await screen.findByText(`A new model was registered: ${finetuneResults.summary.new_model_id}`)).toBeTruthy();
    expect(screen.queryByTestId("umap")).toBeNull();
    expect(screen.getByTestId("result-summary").textContent).toContain(finetuneResults.summary.label_key!);
  });
});

describe("RunPage with a recorded annotation", () => {
  it("shows the run's species, gene panel, coverage and each class's and cell's Cell Ontology term", async () => {
    setApiKey("k");
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

  it("shows the figures against the true labels of label_key", async () => {
    setApiKey("k");
    stubFetch({ [`GET /status/${id}`]: { body: recordedStatus }, [`GET /results/${id}`]: { body: recordedResults } });
    render(<RunPage runId={id} />);
    const s = recordedResults.summary;
    expect(await screen.findByText(`accuracy vs ${s.label_key}`)).toBeTruthy();
    expect(screen.getByText(`macro f1 vs ${s.label_key}`)).toBeTruthy();
  });
});
