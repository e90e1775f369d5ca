// Per-cell predictions fetched page by page (the evaluation page's reliability from cells).
import type { CellPrediction, Results } from "../api/types";

export const MAX_JOIN_CELLS = 50_000;
export const JOIN_PAGE = 5000;

/** Every per-cell prediction of a run (page by page), or null above MAX_JOIN_CELLS. */
export async function loadAllCells(
  fetchPage: (offset: number, limit: number, signal?: AbortSignal) => Promise<Results>,
  total: number,
  signal?: AbortSignal,
): Promise<CellPrediction[] | null> {
  if (total > MAX_JOIN_CELLS) return null;
  const rows: CellPrediction[] = [];
  for (let off = 0; off < total; off += JOIN_PAGE) rows.push(...((await fetchPage(off, JOIN_PAGE, signal)).cells?.items ?? []));
  return rows;
}
