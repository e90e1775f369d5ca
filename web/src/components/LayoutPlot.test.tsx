import { act, render, screen, waitFor } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { setApiKey } from "../api/client";
import { MAX_POINTS, densityBins, labelTotals } from "../lib/layoutView";
import { stubFetch } from "../test/fetch";
import {
  consensusLayout, consensusLayoutBroad, consensusLayoutModel, consensusLayoutModelBroad, consensusStatus, layoutDensity, layoutPoints, recordedStatus,
} from "../test/fixtures";
import { LayoutPlot } from "./LayoutPlot";

const id = recordedStatus.id;

/** Plotly.react records the handlers the plot binds, as plotly's graph div would. */
function plotlyEvents() {
  const on: Record<string, (ev: unknown) => void> = {};
  vi.mocked(window.Plotly!.react).mockImplementation(((el: HTMLElement & { on?: unknown }) => {
    el.on = (name: string, fn: (ev: unknown) => void) => (on[name] = fn);
    return Promise.resolve();
  }) as never);
  return on;
}

const lastFigure = () => vi.mocked(window.Plotly!.react).mock.calls.at(-1)![1] as Record<string, unknown>[];

describe("LayoutPlot", () => {
  it("draws the server's density grid with WebGL, fetches the zoomed viewport's points, and passes clicks on", async () => {
    setApiKey("k");
    const on = plotlyEvents();
    const { calls } = stubFetch({
      [`GET /runs/${id}/layout`]: (url) => ({ body: url.searchParams.has("x0") ? layoutPoints : layoutDensity }),
    });
    const selected: number[] = [];
    render(<LayoutPlot runId={id} method="PCA" onSelectCell={(i) => selected.push(i)} />);
    const view = screen.getByTestId("layout-view");
    await waitFor(() => expect(view.getAttribute("data-mode")).toBe("density"));
    const first = calls.filter((c) => c.url.pathname === `/runs/${id}/layout`);
    expect(first).toHaveLength(1);
    expect(first[0].url.searchParams.has("x0")).toBe(false);
    expect(Number(first[0].url.searchParams.get("max_points"))).toBe(MAX_POINTS);
    const plot = screen.getByTestId("umap");
    expect(plot.getAttribute("data-webgl")).toBe("true");
    const binCount = new Set(layoutDensity.density!.bx.map((x, i) => `${x},${layoutDensity.density!.by[i]}`)).size;
    expect(plot.getAttribute("data-points")).toBe(String(binCount));
    expect(screen.getByTestId("umap-note").textContent).toContain(`${layoutDensity.n_in_view} of ${layoutDensity.n_cells} cells in view`);
    // a bin is not a cell: clicking it selects nothing
    await waitFor(() => expect(on.plotly_click).toBeTruthy());
    act(() => on.plotly_click({ points: [{ curveNumber: 0, pointIndex: 0, customdata: 5 }] }));
    expect(selected).toEqual([]);

    // zoom: the viewport's points are fetched
    const v = layoutPoints.viewport;
    act(() => on.plotly_relayout({ "xaxis.range[0]": v.x0, "xaxis.range[1]": v.x1, "yaxis.range[0]": v.y0, "yaxis.range[1]": v.y1 }));
    await waitFor(() => expect(view.getAttribute("data-mode")).toBe("points"));
    const zoom = calls.filter((c) => c.url.pathname === `/runs/${id}/layout`).at(-1)!;
    expect(Number(zoom.url.searchParams.get("x0"))).toBe(v.x0);
    expect(Number(zoom.url.searchParams.get("y1"))).toBe(v.y1);
    expect(plot.getAttribute("data-points")).toBe(String(layoutPoints.points!.x.length));
    expect(lastFigure().every((t) => t.type === "scattergl")).toBe(true);
    expect(screen.getByTestId("umap-note").textContent).toContain(`Showing all ${layoutPoints.n_in_view} cells in view`);
    const trace = lastFigure()[1];
    act(() => on.plotly_click({ points: [{ curveNumber: 1, pointIndex: 2, customdata: (trace.customdata as number[])[2] }] }));
    expect(selected).toEqual([(trace.customdata as number[])[2]]);

    // further in: the answer already holds every point there, no request
    const n = calls.length;
    act(() => on.plotly_relayout({ "xaxis.range": [v.x0 + 0.5, v.x1 - 0.5], "yaxis.range": [v.y0 + 0.5, v.y1 - 0.5] }));
    await new Promise((r) => setTimeout(r, 50));
    expect(calls.length).toBe(n);
    // double click: the whole layout again
    act(() => on.plotly_relayout({ "xaxis.autorange": true, "yaxis.autorange": true }));
    await waitFor(() => expect(view.getAttribute("data-mode")).toBe("density"));
    expect(calls.at(-1)!.url.searchParams.has("x0")).toBe(false);
    expect(view.getAttribute("data-requests")).toBe("3");
  });

  it("keeps a label's colour from the density view to the zoomed points, and takes the page's colours", async () => {
    setApiKey("k");
    const on = plotlyEvents();
    stubFetch({ [`GET /runs/${id}/layout`]: (url) => ({ body: url.searchParams.has("x0") ? layoutPoints : layoutDensity }) });
    const label = layoutPoints.labels[layoutPoints.points!.label[0]];
    render(<LayoutPlot runId={id} method="PCA" colors={{ [label]: "#123456" }} />);
    const view = screen.getByTestId("layout-view");
    await waitFor(() => expect(view.getAttribute("data-mode")).toBe("density"));
    const colourOf = () => new Map(lastFigure().map((t) => [String(t.name).replace(/ \(\d+\)$/, ""), (t.marker as { color: string }).color]));
    const before = colourOf();
    await waitFor(() => expect(on.plotly_relayout).toBeTruthy());
    const v = layoutPoints.viewport;
    act(() => on.plotly_relayout({ "xaxis.range": [v.x0, v.x1], "yaxis.range": [v.y0, v.y1] }));
    await waitFor(() => expect(view.getAttribute("data-mode")).toBe("points"));
    const after = colourOf();
    expect(after.get(label)).toBe("#123456");
    let shared = 0;
    for (const [name, c] of after) if (before.has(name)) { shared++; expect(c).toBe(before.get(name)); }
    expect(shared).toBeGreaterThan(0);
  });

  it("asks for the level and the label source given, and draws the labels of each answer", async () => {
    setApiKey("k");
    const cid = consensusStatus.id;
    const { calls } = stubFetch({
      [`GET /runs/${cid}/layout`]: (url) => {
        const source = url.searchParams.get("source");
        const level = url.searchParams.get("level");
        return { body: source ? (level ? consensusLayoutModelBroad : consensusLayoutModel) : level ? consensusLayoutBroad : consensusLayout };
      },
    });
    const model = consensusLayout.sources![1];
    expect(consensusLayoutModelBroad.source).toBe(model);
    const names = () => lastFigure().map((t) => String(t.name).replace(/ \(\d+\)$/, "")).sort();
    // a density grid: a trace per label that is the most frequent in some bin
    const shownOf = (v: typeof consensusLayout) => [...new Set(densityBins(v).map((b) => v.labels[b.label]))].sort();
    const withCells = (v: typeof consensusLayout) => v.labels.filter((_, i) => labelTotals(v)[i] > 0);
    const { rerender } = render(<LayoutPlot runId={cid} method="PCA" level="broad" source={model} />);
    const view = screen.getByTestId("layout-view");
    await waitFor(() => expect(view.getAttribute("data-source")).toBe(model));
    expect(view.getAttribute("data-level")).toBe("broad");
    const q = calls.at(-1)!.url.searchParams;
    expect([q.get("level"), q.get("source")]).toEqual(["broad", model]);
    expect(names()).toEqual(shownOf(consensusLayoutModelBroad));
    expect(screen.getByTestId("umap").getAttribute("aria-label")).toContain(`model ${model}'s own predicted type at “broad”`);

    // the consensus's own calls at the same level, then at its classes: asked for again each time
    rerender(<LayoutPlot runId={cid} method="PCA" level="broad" source={null} />);
    await waitFor(() => expect(view.getAttribute("data-source")).toBe(""));
    expect(calls.at(-1)!.url.searchParams.has("source")).toBe(false);
    expect(names()).toEqual(shownOf(consensusLayoutBroad));
    rerender(<LayoutPlot runId={cid} method="PCA" />);
    await waitFor(() => expect(view.getAttribute("data-level")).toBe(""));
    expect(calls.at(-1)!.url.searchParams.has("level")).toBe(false);
    expect(names()).toEqual(shownOf(consensusLayout));
    // rolled up, a model's labels are fewer than at its classes
    expect(withCells(consensusLayoutModelBroad).length).toBeLessThan(withCells(consensusLayoutModel).length);
    expect(view.getAttribute("data-requests")).toBe("3");
  });

  it("says when the layout cannot be loaded", async () => {
    setApiKey("k");
    stubFetch({ [`GET /runs/${id}/layout`]: { status: 404, body: { error: { code: "no_layout", message: "run has no layout", hint: null } } } });
    render(<LayoutPlot runId={id} method="PCA" />);
    expect((await screen.findByRole("alert")).textContent).toContain("run has no layout");
  });
});
