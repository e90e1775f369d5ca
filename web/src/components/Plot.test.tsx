import { render, waitFor } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { Plot, usesWebGL } from "./Plot";

describe("Plot", () => {
  it("passes plotly's click (trace, index, customdata) and relayout events to its handlers", async () => {
    const on: Record<string, (ev: unknown) => void> = {};
    vi.mocked(window.Plotly!.react).mockImplementation(((el: HTMLElement & { on?: unknown }) => {
      el.on = (name: string, fn: (ev: unknown) => void) => (on[name] = fn);
      return Promise.resolve();
    }) as never);
    const clicks: unknown[] = [];
    const data = [{ type: "scattergl", x: [1, 2], y: [3, 4], customdata: [7, 9] }];
    const relayouts: unknown[] = [];
    const { getByTestId } = render(<Plot label="p" testId="p" data={data} onClick={(p) => clicks.push(p)}
      onPointClick={(c) => clicks.push(c)} onRelayout={(e) => relayouts.push(e)} />);
    await waitFor(() => expect(getByTestId("p").getAttribute("data-ready")).toBe("true"));
    expect(getByTestId("p").getAttribute("data-webgl")).toBe("true");
    on.plotly_click({ points: [{ curveNumber: 0, pointIndex: 1, customdata: 9 }] });
    expect(clicks).toEqual([{ curveNumber: 0, pointIndex: 1, customdata: 9 }, 9]);
    on.plotly_relayout({ "xaxis.range[0]": 1 });
    expect(relayouts).toEqual([{ "xaxis.range[0]": 1 }]);
  });

  it("tells WebGL traces from SVG ones", () => {
    expect(usesWebGL([{ type: "scatter" }, { type: "bar" }])).toBe(false);
    expect(usesWebGL([{ type: "scatter" }, { type: "scattergl" }])).toBe(true);
  });
});
