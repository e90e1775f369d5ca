// How a run's state reads on the page.
import type { Run } from "../api/types";

/** Progress in percent, 100 once the run succeeded. */
export function runProgress(run: Run): number {
  return run.state === "succeeded" ? 100 : Math.max(0, Math.min(100, run.progress));
}

/** The offset of the first item of a page (pages are 1-based). */
export function pageOffset(p: { page: number; page_size: number }): number {
  return (p.page - 1) * p.page_size;
}
