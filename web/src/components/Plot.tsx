// A thin wrapper around plotly.js-dist-min (loaded lazily, bundled: no CDN).
import { useEffect, useRef, useState } from "react";

export interface PlotProps {
  data: Record<string, unknown>[];
  layout?: Record<string, unknown>;
  label: string; // accessible name of the figure
  height?: number;
  testId?: string;
  onHover?: (point: { curveNumber: number; pointIndex: number } | null) => void;
  /** a point was clicked: its trace, index in the trace and `customdata` (e.g. the cell's row) */
  onClick?: (point: PlotPoint) => void;
  /** the same click, with the point's `customdata` only */
  onPointClick?: (customdata: unknown) => void;
  /** the user zoomed, panned or reset the axes (plotly's relayout event, e.g. {"xaxis.range[0]": 1}) */
  onRelayout?: (event: Record<string, unknown>) => void;
}

export interface PlotPoint {
  curveNumber: number;
  pointIndex: number;
  customdata?: unknown;
}

type PlotlyEvents = HTMLElement & {
  on?: (name: string, fn: (ev: unknown) => void) => void;
  removeAllListeners?: (name: string) => void;
};

type PlotlyModule = {
  react: (el: HTMLElement, data: unknown[], layout: unknown, config: unknown) => Promise<unknown>;
  purge: (el: HTMLElement) => void;
};

declare const __PLOTLY_SRC__: string;
declare global {
  interface Window {
    Plotly?: PlotlyModule;
  }
}

let plotlyPromise: Promise<PlotlyModule> | null = null;
/** plotly.js-dist-min, shipped as a local file next to the app (see vite.config.ts), loaded once. */
function loadPlotly(): Promise<PlotlyModule> {
  plotlyPromise ??= new Promise<PlotlyModule>((resolve, reject) => {
    if (window.Plotly) return resolve(window.Plotly);
    const s = document.createElement("script");
    s.src = `${import.meta.env.BASE_URL}${__PLOTLY_SRC__}`;
    s.async = true;
    s.onload = () => (window.Plotly ? resolve(window.Plotly) : reject(new Error("plotly did not load")));
    s.onerror = () => {
      plotlyPromise = null;
      reject(new Error("could not load the plotting library"));
    };
    document.head.appendChild(s);
  });
  return plotlyPromise;
}

/** Whether a trace draws with WebGL (scattergl and friends). */
export function usesWebGL(data: Record<string, unknown>[]): boolean {
  return data.some((t) => typeof t.type === "string" && /gl$|^heatmapgl$|^splom$/.test(t.type));
}

/** Number of points drawn (sum of x lengths of all traces); used by tests. */
export function pointCount(data: Record<string, unknown>[]): number {
  return data.reduce((n, t) => n + (Array.isArray(t.x) ? t.x.length : Array.isArray(t.z) ? (t.z as unknown[]).length : 0), 0);
}

export function Plot({ data, layout = {}, label, height = 380, testId, onClick, onPointClick, onRelayout }: PlotProps) {
  const el = useRef<HTMLDivElement>(null);
  // the latest handlers, read by the listeners bound once per element
  const handlers = useRef({ onClick, onPointClick, onRelayout });
  handlers.current = { onClick, onPointClick, onRelayout };
  const [err, setErr] = useState<string | null>(null);
  const [ready, setReady] = useState(false);
  useEffect(() => {
    let alive = true;
    loadPlotly()
      .then((Plotly) => {
        if (!alive || !el.current) return;
        return Plotly.react(
          el.current,
          data,
          {
            autosize: true,
            height,
            margin: { l: 50, r: 20, t: 30, b: 45 },
            font: { family: "Inter, system-ui, sans-serif", size: 12, color: "#0f172a" },
            paper_bgcolor: "rgba(0,0,0,0)",
            plot_bgcolor: "rgba(0,0,0,0)",
            ...layout,
          },
          { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"] },
        ).then(() => {
          const gd = el.current as PlotlyEvents | null;
          if (gd?.on && gd.dataset.bound !== "1") {
            gd.dataset.bound = "1";
            gd.on("plotly_click", (ev) => {
              const p = (ev as { points?: PlotPoint[] }).points?.[0];
              if (!p) return;
              handlers.current.onClick?.({ curveNumber: p.curveNumber, pointIndex: p.pointIndex, customdata: p.customdata });
              handlers.current.onPointClick?.(p.customdata);
            });
            gd.on("plotly_relayout", (ev) => handlers.current.onRelayout?.(ev as Record<string, unknown>));
          }
          if (alive) setReady(true);
        });
      })
      .catch((e: Error) => alive && setErr(e.message));
    return () => {
      alive = false;
    };
  }, [data, layout, height]);
  useEffect(() => {
    const node = el.current;
    return () => {
      if (node && plotlyPromise) plotlyPromise.then((P) => {
      P.purge(node);
      delete node.dataset.bound;
    }).catch(() => undefined);
    };
  }, []);
  return (
    <figure className="plot" aria-label={label} data-testid={testId} data-points={pointCount(data)} data-ready={ready}
      data-webgl={usesWebGL(data) || undefined}>
      {err && <div className="alert alert-error" role="alert">Could not draw the plot: {err}</div>}
      <div ref={el} style={{ width: "100%", minHeight: height }} />
    </figure>
  );
}
