// The datasets this browser uploaded (kept for the pickers when the list is not loaded yet), and
// a dataset's gene coverage of one model.
import type { Dataset, GeneCoverage, ValidationReport } from "../api/types";

const STORE = "cellfoundry.datasets";

/** Below this share of its genes a model refuses the data (cellfoundry.data.prepare.DEFAULT_MIN_COVERAGE). */
export const MIN_COVERAGE = 0.3;

export function recentDatasets(): Dataset[] {
  try {
    const v = JSON.parse(window.localStorage.getItem(STORE) ?? "[]");
    return Array.isArray(v) ? (v as Dataset[]).filter((d) => d && typeof d.id === "string" && d.report) : [];
  } catch {
    return [];
  }
}

export function rememberDataset(d: Dataset): void {
  const rest = recentDatasets().filter((x) => x.id !== d.id);
  const list = [d, ...rest].slice(0, 20);
  try {
    window.localStorage.setItem(STORE, JSON.stringify(list));
  } catch {
    // storage full: keep only the newest
    window.localStorage.setItem(STORE, JSON.stringify([d]));
  }
}

/** The model id a coverage entry is about ("model {id}" in the report), or the target as is. */
export function coverageModelId(c: GeneCoverage): string {
  return c.target.replace(/^model /, "");
}

export function coverageFor(report: ValidationReport | null | undefined, modelId: string): GeneCoverage | undefined {
  return report?.coverage.find((c) => coverageModelId(c) === modelId);
}

export function coverageOk(c: GeneCoverage): boolean {
  return c.fraction_present >= MIN_COVERAGE;
}
