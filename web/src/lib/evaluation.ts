// The evaluation report's tables, derived from a run's stored summary (generated API types in,
// plain rows out): the service's model-vs-baseline comparison or evaluate()'s methods x seeds.
import type { CellPrediction, Confusion, Metrics, ResultSummary } from "../api/types";

/** One model (or method) and metric: mean and sample std over seeds (std 0 with one seed). */
export interface SummaryRow {
  model: string;
  metric: string;
  mean: number;
  std: number;
  n_seeds: number;
}

/** A square confusion matrix over the union of true and predicted labels (cell counts). */
export interface ConfusionMatrix {
  model: string;
  labels: string[];
  matrix: number[][];
}

/** Reliability bins: mean confidence against accuracy, with the cells per bin. */
export interface ReliabilityCurve {
  model: string;
  bin_confidence: number[];
  bin_accuracy: number[];
  bin_count: number[];
  ece: number | null;
}

/** The metrics of the summary table, in order. */
export const SUMMARY_METRICS = ["accuracy", "macro_f1", "weighted_f1", "ece"] as const;

/** The metrics of a foundation evaluation's per-method table, in order. */
export const METHOD_METRICS = ["accuracy", "macro_f1", "coverage", "called_macro_f1", "ontology_score", "expressible_share"] as const;
type MethodMetric = (typeof METHOD_METRICS)[number];

/** A metric's mean and std over seeds from evaluate()'s ``{metric}_mean`` / ``{metric}_std`` fields. */
function meanStd<M extends string>(r: { [K in `${M}_mean` | `${M}_std`]?: number | null }, metric: M): [number | null, number | null] {
  return [r[`${metric}_mean`] ?? null, r[`${metric}_std`] ?? null];
}

const isNum = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);

/** "geneformer · lora" for evaluate()'s (model, method) pairs. */
export const methodName = (model: string, method: string) => `${model} · ${method}`;

/** evaluate()'s "{model}-{method}" keys (calibration, per_method) as "model · method". */
export const methodKey = (key: string) => key.replace(/-([^-]+)$/, " · $1");

/** Whether a run's summary is an evaluation report. */
export function isEvaluation(s: ResultSummary): boolean {
  return s.evaluator != null || s.baseline_comparison != null || s.report != null;
}

/** The summary table: evaluate()'s mean ± std per method, or the service's single-seed
 * comparison of the model (``modelName``) with a logistic regression trained on the data. */
export function summaryRows(s: ResultSummary, modelName: string): SummaryRow[] {
  const methods = s.report?.mean_std ?? [];
  if (methods.length) {
    return methods.flatMap((r) =>
      SUMMARY_METRICS.flatMap((metric) => {
        const [mean, std] = meanStd(r, metric);
        return isNum(mean) ? [{ model: methodName(r.model, r.method), metric, mean, std: isNum(std) ? std : 0, n_seeds: r.n_seeds }] : [];
      }),
    );
  }
  const single = (model: string, m: Metrics | null | undefined): SummaryRow[] =>
    m ? SUMMARY_METRICS.flatMap((metric) => (isNum(m[metric]) ? [{ model, metric, mean: m[metric] as number, std: 0, n_seeds: 1 }] : [])) : [];
  const cmp = s.baseline_comparison;
  if (cmp) return [...single(s.model ?? modelName, cmp.model_on_test), ...single("logreg baseline (trained on this data)", cmp.logreg_baseline_on_test)];
  return single(s.model ?? modelName, s.metrics);
}

/** The service's confusion counts squared over the union of true and predicted labels. */
export function squareConfusion(c: Confusion, model: string): ConfusionMatrix {
  const labels = [...new Set([...c.labels_true, ...c.labels_pred])];
  const matrix = labels.map((t) => labels.map((p) => {
    const i = c.labels_true.indexOf(t);
    const j = c.labels_pred.indexOf(p);
    return i >= 0 && j >= 0 ? c.counts[i]?.[j] ?? 0 : 0;
  }));
  return { model, labels, matrix };
}

/** The most-confused (true, predicted) pairs, with the method for evaluate()'s report. */
export function confusedPairs(s: ResultSummary): { model: string | null; true: string; predicted: string; count: number }[] {
  const pairs = s.most_confused ?? s.report?.misclassified_top5 ?? [];
  return pairs.map((p) => ({ model: p.model != null && p.method != null ? methodName(p.model, p.method) : null, true: p.true, predicted: p.predicted, count: p.count }));
}

/** ECE before and after temperature scaling per method (evaluate()'s report). */
export function calibrationRows(s: ResultSummary): { model: string; ece_before: number | null; ece_after: number | null }[] {
  return Object.entries(s.report?.calibration ?? {}).map(([key, c]) => ({
    model: methodKey(key),
    ece_before: c.ece_before_temperature ?? null,
    ece_after: c.ece_after_temperature ?? null,
  }));
}

/** Majority-class and chance rows: single figures (service) or means over seeds (evaluate()). */
export function referenceRows(m: Metrics | null | undefined): { name: string; label: string | null; accuracy: number | null; macro_f1: number | null }[] {
  return Object.entries(m?.reference ?? {}).map(([name, r]) => ({
    name,
    label: r.label ?? null,
    accuracy: r.accuracy ?? r.accuracy_mean ?? null,
    macro_f1: r.macro_f1 ?? r.macro_f1_mean ?? null,
  }));
}

/** Each foundation method's own figures (mean, std over seeds) from ``metrics.per_method``. */
export function methodFigures(m: Metrics | null | undefined): { method: string; figures: { metric: MethodMetric; mean: number | null; std: number | null }[] }[] {
  return Object.entries(m?.per_method ?? {}).map(([method, f]) => ({
    method,
    figures: METHOD_METRICS.filter((metric) => f[`${metric}_mean`] !== undefined).map((metric) => {
      const [mean, std] = meanStd(f, metric);
      return { metric, mean, std };
    }),
  }));
}

/** Reliability bins (mean top-1 confidence vs accuracy) from per-cell predictions with true labels. */
export function reliabilityFromCells(rows: CellPrediction[], model: string, nBins = 10): ReliabilityCurve | null {
  const labelled = rows.filter((c) => c.true_label != null && c.top3.length > 0);
  if (!labelled.length) return null;
  const conf = Array(nBins).fill(0);
  const acc = Array(nBins).fill(0);
  const cnt = Array(nBins).fill(0);
  for (const c of labelled) {
    const p = c.top3[0].probability;
    const b = Math.min(nBins - 1, Math.floor(p * nBins));
    conf[b] += p;
    acc[b] += c.top3[0].label === c.true_label ? 1 : 0;
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
