// Derivations for the results' consensus figures, one cell's evidence and the ontology level toggle.
import type { CellPrediction, Layout, ResultSummary, Results } from "../api/types";

/** The labels the layout can be coloured by: the run's own call, then each consensus model's. */
export function labelSources(layout: Layout): string[] {
  return ["", ...Object.keys(layout.model_labels ?? {})];
}

/** The layout with its labels taken from one model of a consensus ("" = the run's own call). */
export function withLabelsOf(layout: Layout, source: string): Layout {
  const labels = source ? layout.model_labels?.[source] : undefined;
  return labels ? { ...layout, labels } : layout;
}

/** The consensus agreement distribution, lowest agreement first. */
export function agreementRows(summary: ResultSummary) {
  return [...(summary.consensus?.agreement_distribution ?? [])].sort((a, b) => a.agreement - b.agreement);
}

/** Each model's agreement with the consensus, in the run's model order. */
export function perModelRows(summary: ResultSummary) {
  const c = summary.consensus;
  if (!c) return [];
  const per = c.per_model ?? {};
  const ids = c.model_ids?.length ? c.model_ids : Object.keys(per);
  return ids.filter((id) => per[id]).map((id) => ({ id, ...per[id], weight: c.weights?.[id] ?? null }));
}

/** Per predicted type, the share of its cells out of reference, largest share first. */
export function outOfReferenceRows(summary: ResultSummary) {
  return Object.entries(summary.out_of_reference?.by_predicted_type ?? {})
    .map(([type, t]) => ({ type, ...t }))
    .sort((a, b) => b.share - a.share || b.n_cells - a.n_cells);
}

/** Per predicted type, its marker overlap with the reference; types without an overlap last. */
export function markerRows(summary: ResultSummary) {
  return Object.entries(summary.marker_overlap?.by_predicted_type ?? {})
    .map(([type, t]) => ({ type, ...t }))
    .sort((a, b) => (b.overlap ?? -1) - (a.overlap ?? -1) || b.n_cells - a.n_cells);
}

/** The label counts shown: rolled up when the results are at a level, else the model's own. */
export function shownCounts(results: Results): Record<string, number> {
  const rolled = results.level ? results.summary.ontology?.rolled_up_counts : null;
  return rolled ?? results.summary.label_counts ?? {};
}

/** Name and Cell Ontology id of a label at the results' level (or of a class of the model). */
export function termOf(summary: ResultSummary, label: string, atLevel: boolean): { name: string; id: string } {
  const o = summary.ontology;
  if (atLevel) return { name: label, id: o?.rolled_up_terms?.[label] ?? "" };
  const t = o?.terms?.[label];
  return { name: t?.name || label, id: t?.id ?? "" };
}

/** Whether the cells carry gene evidence (the run was submitted with explain on). */
export function explained(run: Results["run"]): boolean {
  return Boolean(run.params?.explain);
}

/** A cell's shown call: at the level when asked for, else its own. */
export function cellLabel(c: CellPrediction, atLevel: boolean): string {
  return atLevel && c.rolled_up_label != null ? c.rolled_up_label : c.label;
}

/** The largest absolute contribution among genes (to scale bars); 0 when none stored. */
export function maxContribution(genes: { contribution?: number | null }[]): number {
  return genes.reduce((m, g) => Math.max(m, Math.abs(g.contribution ?? 0)), 0);
}
