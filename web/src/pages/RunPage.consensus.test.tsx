import { fireEvent, render, screen, waitFor } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { setApiKey } from "../api/client";
import { stubFetch } from "../test/fetch";
import { consensusBroad, consensusCell, consensusResults, consensusStatus } from "../test/fixtures";
import { RunPage } from "./RunPage";

const id = consensusStatus.id;
const firstRow = () => screen.getByTestId("cells-table").querySelectorAll("tbody tr")[0] as HTMLTableRowElement;

describe("RunPage of a consensus run", () => {
  it("shows agreement, per-model labels, a cell's evidence on click, and switches level and label source", async () => {
    setApiKey("k");
    const broadCell = consensusBroad.cells.items.find((c) => c.index === consensusCell.index)!;
    const { calls } = stubFetch({
      [`GET /status/${id}`]: { body: consensusStatus },
      [`GET /results/${id}`]: (url) => ({ body: url.searchParams.get("level") === "broad" ? consensusBroad : consensusResults }),
      [`GET /results/${id}/cells/${consensusCell.index}`]: (url) => ({ body: url.searchParams.get("level") === "broad" ? broadCell : consensusCell }),
    });
    const plotly = vi.mocked(window.Plotly!.react);
    plotly.mockClear();
    render(<RunPage runId={id} />);
    await screen.findByTestId("agreement-distribution");
    const models = consensusResults.run.model_ids!;
    // the table: consensus label, agreement and each model's own label
    await screen.findByTestId("cells-table");
    const head = [...screen.getByTestId("cells-table").querySelectorAll("thead th")].map((th) => th.textContent);
    expect(head).toEqual(expect.arrayContaining(["Consensus type", "Agreement", ...models]));
    const item = consensusResults.cells.items[0];
    const cells = [...firstRow().cells].map((td) => td.textContent);
    expect(cells).toEqual(expect.arrayContaining([item.label, ...models.map((m) => item.models![m].label)]));
    // clicking a row shows that cell's evidence, with each model's genes
    fireEvent.click(firstRow());
    await screen.findByTestId(`evidence-genes-${models[0]}`);
    expect(calls.some((c) => c.url.pathname === `/results/${id}/cells/${item.index}`)).toBe(true);
    // the layout can be coloured by one model's own labels
    const traceNames = () => {
      const figures = plotly.mock.calls.map((c) => c[1] as Record<string, unknown>[]);
      const last = figures.filter((d) => d.some((t) => String(t.type).startsWith("scatter") && Array.isArray(t.customdata))).at(-1)!;
      return last.map((t) => String(t.name).replace(/ \(\d+\)$/, "")).sort();
    };
    // (the consensus's own labels come from GET /runs/{id}/layout, drawn by LayoutPlot; a model's
    // labels from the layout block of the results)
    fireEvent.change(screen.getByLabelText("Labels of"), { target: { value: models[1] } });
    await waitFor(() => expect(traceNames()).toEqual([...new Set(consensusResults.layout.model_labels![models[1]])].sort()));
    // the level toggle: the results again at level=broad, labels rolled up, terms named
    fireEvent.click(screen.getByRole("button", { name: "Broad types" }));
    await screen.findByTestId("level-terms");
    await screen.findByTestId("cells-table");
    expect(calls.filter((c) => c.url.pathname === `/results/${id}`).at(-1)!.url.searchParams.get("level")).toBe("broad");
    const rolled = consensusBroad.cells.items[0];
    expect([...firstRow().cells].map((td) => td.textContent)).toContain(rolled.rolled_up_label);
    expect(firstRow().textContent).toContain(rolled.rolled_up_ontology_term_id!);
    const terms = screen.getByTestId("level-terms").textContent!;
    for (const [name, term] of Object.entries(consensusBroad.summary.ontology!.rolled_up_terms!))
      if (consensusBroad.summary.ontology!.rolled_up_counts![name]) expect(terms).toContain(`${name}${term}`);
    await waitFor(() => expect(traceNames()).toEqual([...new Set(consensusBroad.layout.labels)].sort()));
    expect(screen.getByRole("button", { name: "Broad types" }).getAttribute("aria-pressed")).toBe("true");
  });
});
