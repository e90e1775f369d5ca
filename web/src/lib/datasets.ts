// The datasets this browser uploaded (the service has no "list datasets" call): id, name, report.
import type { Dataset } from "../api/types";

const STORE = "cellfoundry.datasets";

export function recentDatasets(): Dataset[] {
  try {
    const v = JSON.parse(window.localStorage.getItem(STORE) ?? "[]");
    return Array.isArray(v) ? (v as Dataset[]) : [];
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
