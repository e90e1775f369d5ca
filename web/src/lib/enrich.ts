// Per-cell predictions fetched page by page (the evaluation page's reliability from cells).
import type { CellRow, ReliabilityCurve, Results } from "../api/types";

export const MAX_JOIN_CELLS = 50_000;
export const JOIN_PAGE = 5000;

/** Reliability bins (mean confidence vs accuracy) from per-cell predictions with true labels. */
export function reliabilityFromCells(rows: CellRow[], model: string, nBins = 10): ReliabilityCurve | null {
  const labelled = rows.filter((c) => c.true_label !== undefined && c.top.length > 0);
  if (!labelled.length) return null;
  const conf = Array(nBins).fill(0);
  const acc = Array(nBins).fill(0);
  const cnt = Array(nBins).fill(0);
  for (const c of labelled) {
    const p = c.top[0].probability;
    const b = Math.min(nBins - 1, Math.floor(p * nBins));
    conf[b] += p;
    acc[b] += c.top[0].label === c.true_label ? 1 : 0;
    cnt[b] += 1;
  }
  const keep = cnt.map((n, i) => (n > 0 ? i : -1)).filter((i) => i >= 0);
  const ece = keep.reduce((e, i) => e + (cnt[i] / labelled.length) * Math.abs(acc[i] / cnt[i] - conf[i] / cnt[i]), 0);
  return {
    model,
    bin_confidence: keep.map((i) => conf[i] / cnt[i]),
    bin_accuracy: keep.map((i) => acc[i] / cnt[i]),
    bin_count: keep.map((i) => cnt[i]),
    ece,
  };
}

/** Every per-cell prediction of a run (page by page), or null above MAX_JOIN_CELLS. */
export async function loadAllCells(
  fetchPage: (offset: number, limit: number, signal?: AbortSignal) => Promise<Results>,
  total: number,
  signal?: AbortSignal,
): Promise<CellRow[] | null> {
  if (total > MAX_JOIN_CELLS) return null;
  const rows: CellRow[] = [];
  for (let off = 0; off < total; off += JOIN_PAGE) rows.push(...((await fetchPage(off, JOIN_PAGE, signal)).cells?.items ?? []));
  return rows;
}
