// The viewport of a run's every-cell layout that the plot shows: fetched again when the user zooms
// to a box the last answer does not fully hold (see covers()) or to other labels (a level, one
// model's calls), the previous answer kept meanwhile.
import { useEffect, useRef, useState } from "react";
import { api } from "../api/client";
import type { LayoutBox, LayoutView } from "../api/types";
import { OWN_LABELS, covers, viewQuery, type ViewLabels } from "./layoutView";

export interface LayoutViewState {
  view: LayoutView | null;
  loading: boolean;
  error: Error | null;
  /** requests made so far (the first one included) */
  requests: number;
}

export function useLayoutView(runId: string, box: LayoutBox | null, labels: ViewLabels = OWN_LABELS): LayoutViewState {
  const [state, setState] = useState<LayoutViewState>({ view: null, loading: true, error: null, requests: 0 });
  const viewRef = useRef<LayoutView | null>(null);
  viewRef.current = state.view;
  const key = box ? `${box.x0},${box.x1},${box.y0},${box.y1}` : "";
  useEffect(() => {
    const have = viewRef.current;
    if (box && have && covers(have, box, labels)) return;
    const ctl = new AbortController();
    setState((s) => ({ ...s, loading: true, error: null, requests: s.requests + 1 }));
    api.layoutView(runId, viewQuery(box, labels), ctl.signal).then(
      (view) => !ctl.signal.aborted && setState((s) => ({ ...s, view, loading: false })),
      (error: Error) => !ctl.signal.aborted && setState((s) => ({ ...s, loading: false, error })),
    );
    return () => ctl.abort();
    // box is keyed by its bounds, labels by its two values
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [runId, key, labels.level, labels.source]);
  return state;
}
