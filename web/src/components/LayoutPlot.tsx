// Every cell of a run's layout with WebGL: per-label binned counts from the server at low zoom,
// the cells themselves (at most MAX_POINTS, fetched for the viewport) once zoomed in; labelled by
// the run's calls or (a consensus) one model's, at the model's classes or a broader level.
import { useCallback, useMemo, useState } from "react";
import type { LayoutBox } from "../api/types";
import { count } from "../lib/format";
import { labelColors, viewportFromRelayout, viewTraces } from "../lib/layoutView";
import { useLayoutView } from "../lib/useLayoutView";
import { Plot } from "./Plot";

export interface LayoutPlotProps {
  runId: string;
  method: string; // axis titles: "UMAP", "PCA"
  /** label → colour, for labels whose colour the page fixes (the rest follow the palette) */
  colors?: Record<string, string>;
  /** a cell was clicked: its row in the dataset (GET /results/{run_id}/cells/{index}) */
  onSelectCell?: (index: number) => void;
  height?: number;
  /** label the cells at this Cell Ontology level ("broad", a CL id or name; null: the classes) */
  level?: string | null;
  /** a consensus run: label the cells by this model's own calls (null: the consensus's) */
  source?: string | null;
}

export function LayoutPlot({ runId, method, colors, onSelectCell, height = 520, level = null, source = null }: LayoutPlotProps) {
  const [box, setBox] = useState<LayoutBox | null>(null);
  const labels = useMemo(() => ({ level, source }), [level, source]);
  const { view, loading, error, requests } = useLayoutView(runId, box, labels);
  const palette = useMemo(() => labelColors(view?.labels ?? [], colors), [view?.labels, colors]);
  const data = useMemo(() => (view ? viewTraces(view, palette) : []), [view, palette]);
  const layout = useMemo(() => ({
    xaxis: { title: { text: `${method} 1` }, zeroline: false, showticklabels: false },
    yaxis: { title: { text: `${method} 2` }, zeroline: false, showticklabels: false, scaleanchor: "x" },
    legend: { itemsizing: "constant" }, hovermode: "closest",
    uirevision: runId, // plotly keeps the user's zoom when new data arrives
  }), [method, runId]);
  const onRelayout = useCallback((ev: Record<string, unknown>) => {
    if (!view) return;
    const change = viewportFromRelayout(ev, box ?? view.extent);
    if (change.kind === "reset") setBox(null);
    else if (change.kind === "box") setBox(change.box);
  }, [view, box]);
  const onClick = useCallback((p: { customdata?: unknown }) => {
    if (view?.mode === "points" && typeof p.customdata === "number") onSelectCell?.(p.customdata);
  }, [view, onSelectCell]);
  return (
    <div data-testid="layout-view" data-mode={view?.mode ?? ""} data-requests={requests} data-loading={loading}
      data-level={view?.level ?? ""} data-source={view?.source ?? ""}>
      {error && <div className="alert alert-error" role="alert">Could not load the layout: {error.message}</div>}
      <Plot label={`${method} of every cell coloured by ${describe(level, source)}`} testId="umap" data={data} layout={layout}
        height={height} onRelayout={onRelayout} onClick={onClick} />
      {view && (
        <p className="small muted" data-testid="umap-note">
          {view.mode === "density"
            ? `${count(view.n_in_view)} of ${count(view.n_cells)} cells in view, drawn as ${count(data.reduce((n, t) => n + (t.x as unknown[]).length, 0))} bins `
              + "(size and shade: cells per bin; colour: its most frequent type). Zoom in to see the cells."
            : view.points?.sampled
              ? `Showing ${count(view.points.x.length)} of the ${count(view.n_in_view)} cells in view (of ${count(view.n_cells)}); zoom in for all of them.`
              : `Showing all ${count(view.n_in_view)} cells${box ? ` in view (of ${count(view.n_cells)}). Double-click to zoom out` : ""}.`}
          {loading && " Loading…"}
        </p>
      )}
    </div>
  );
}

/** What the colours are, in words. */
function describe(level: string | null, source: string | null): string {
  const whose = source ? `model ${source}'s own predicted type` : "predicted type";
  return level ? `${whose} at “${level}”` : whose;
}
