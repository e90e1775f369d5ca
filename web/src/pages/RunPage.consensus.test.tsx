import { fireEvent, render, screen, waitFor } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { setApiKey } from "../api/client";
import { stubFetch } from "../test/fetch";
import { densityBins } from "../lib/layoutView";
import {
  consensusAtTerm, consensusBroad, consensusCell, consensusLayout, consensusLayoutBroad, consensusLayoutModel, consensusLayoutModelBroad,
  consensusResults, consensusStatus, invalidLevel,
} from "../test/fixtures";
import { RunPage } from "./RunPage";

const id = consensusStatus.id;
const firstRow = () => screen.getByTestId("cells-table").querySelectorAll("tbody tr")[0] as HTMLTableRowElement;

describe("RunPage of a consensus run", () => {
  it("shows agreement, per-model labels, a cell's evidence on click, and switches level (offered or typed) and label source", async () => {
    setApiKey("k");
    const broadCell = consensusBroad.cells.items.find((c) => c.index === consensusCell.index)!;
    const term = consensusResults.levels!.find((o) => o.name === "T cell")!;
    const { calls } = stubFetch({
      [`GET /status/${id}`]: { body: consensusStatus },
      [`GET /results/${id}`]: (url) => {
        const level = url.searchParams.get("level");
        if (level === "T-cells please") return { status: 422, body: invalidLevel };
        return { body: level === "broad" ? consensusBroad : level === term.level ? consensusAtTerm : consensusResults };
      },
      [`GET /results/${id}/cells/${consensusCell.index}`]: (url) => ({ body: url.searchParams.get("level") === "broad" ? broadCell : consensusCell }),
      // the every-cell layout as recorded: by the consensus's or pbmc3k-logreg's calls, at the
      // classes or the broad level (other levels are not recorded: answered 404)
      [`GET /runs/${id}/layout`]: (url) => {
        const level = url.searchParams.get("level");
        const source = url.searchParams.get("source");
        if (level && level !== "broad") return { status: 404, body: { error: { code: "not_recorded", message: "not recorded", hint: null } } };
        return { body: source ? (level ? consensusLayoutModelBroad : consensusLayoutModel) : level ? consensusLayoutBroad : consensusLayout };
      },
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
    const dominant = (v: typeof consensusLayout) => [...new Set(densityBins(v).map((b) => v.labels[b.label]))].sort();
    const layoutQuery = () => calls.filter((c) => c.url.pathname === `/runs/${id}/layout`).at(-1)!.url.searchParams;
    // every cell from GET /runs/{id}/layout (WebGL), by the consensus's calls, then by one model's
    await waitFor(() => expect(traceNames()).toEqual(dominant(consensusLayout)));
    expect(models[1]).toBe(consensusLayoutModel.source);
    fireEvent.change(screen.getByLabelText("Labels of"), { target: { value: models[1] } });
    await waitFor(() => expect(traceNames()).toEqual(dominant(consensusLayoutModel)));
    expect(layoutQuery().get("source")).toBe(models[1]);
    // the level toggle: the results again at level=broad, labels rolled up, terms named
    fireEvent.click(screen.getByRole("button", { name: "Broad types" }));
    await screen.findByTestId("level-terms");
    await screen.findByTestId("cells-table");
    expect(calls.filter((c) => c.url.pathname === `/results/${id}`).at(-1)!.url.searchParams.get("level")).toBe("broad");
    await waitFor(() => expect(firstRow().textContent).toContain(consensusBroad.cells.items[0].rolled_up_ontology_term_id!));
    const rolled = consensusBroad.cells.items[0];
    expect([...firstRow().cells].map((td) => td.textContent)).toContain(rolled.rolled_up_label);
    const terms = screen.getByTestId("level-terms").textContent!;
    for (const [name, t] of Object.entries(consensusBroad.summary.ontology!.rolled_up_terms!))
      if (consensusBroad.summary.ontology!.rolled_up_counts![name]) expect(terms).toContain(`${name}${t}`);
    // the model's own calls of every cell, rolled up to the same level
    await waitFor(() => expect(traceNames()).toEqual(dominant(consensusLayoutModelBroad)));
    expect([layoutQuery().get("level"), layoutQuery().get("source")]).toEqual(["broad", models[1]]);
    expect(screen.getByRole("button", { name: "Broad types" }).getAttribute("aria-pressed")).toBe("true");

    // a broader term the service offers for this run: T cell
    fireEvent.change(screen.getByLabelText("Broader term"), { target: { value: term.level } });
    await waitFor(() => expect(screen.getByTestId("level-bar").textContent).toContain(`rolled up the Cell Ontology to “T cell (${term.level})”`));
    expect(screen.getByText(`Cells per type at “T cell (${term.level})”`)).toBeTruthy();
    const atTerm = consensusAtTerm.cells.items[0];
    await waitFor(() => expect([...firstRow().cells].map((td) => td.textContent)).toContain(atTerm.rolled_up_label));
    expect(consensusAtTerm.summary.ontology!.rolled_up_counts!["T cell"]).toBe(term.n_cells);
    await waitFor(() => expect(layoutQuery().get("level")).toBe(term.level));

    // a term that is not in the Cell Ontology: refused with the service's hint, the results stay
    fireEvent.change(screen.getByLabelText("Any CL term"), { target: { value: "T-cells please" } });
    fireEvent.click(screen.getByRole("button", { name: "Roll up" }));
    const error = await screen.findByTestId("level-error");
    expect(error.textContent).toContain(invalidLevel.error.message);
    expect(error.textContent).toContain(invalidLevel.error.hint!);
    expect(screen.getByTestId("cells-table")).toBeTruthy();
    expect((screen.getByLabelText("Broader term") as HTMLSelectElement).value).toBe(term.level);
    // another level clears the error
    fireEvent.click(screen.getByRole("button", { name: "Model's classes" }));
    await waitFor(() => expect(screen.queryByTestId("level-error")).toBeNull());
    await waitFor(() => expect(screen.getByRole("button", { name: "Model's classes" }).getAttribute("aria-pressed")).toBe("true"));
  }, 30_000); // a long walk through the page: well past the 5 s default on a loaded machine
});
