// A model's measured figures as table rows: each stored evaluation's, then the training hold-out's.
import type { Metrics, Model } from "../api/types";

export interface ModelMetricRow {
  name: string;
  value: number;
  evaluation_run_id: string | null; // null: the training hold-out
  source: string;
}

/** The figures shown per model, in this order. */
export const MODEL_METRICS = ["accuracy", "macro_f1", "weighted_f1", "ece", "ontology_score"] as const;

function rows(m: Metrics, evaluation_run_id: string | null, source: string): ModelMetricRow[] {
  return MODEL_METRICS.flatMap((name) => {
    const value = m[name];
    return typeof value === "number" && Number.isFinite(value) ? [{ name, value, evaluation_run_id, source }] : [];
  });
}

export function modelMetrics(model: Model): ModelMetricRow[] {
  return [
    ...model.metrics.evaluations.flatMap((e) => rows(e.metrics, e.run_id, `labels: ${e.label_key}`)),
    ...rows(model.metrics.training_holdout, null, "held-out split at training"),
  ];
}
