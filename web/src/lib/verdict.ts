// The plain-language verdict of an evaluation, computed from the summary numbers only.
import type { SummaryRow } from "./evaluation";

export const METRIC_PREFERENCE = ["macro_f1", "f1_macro", "balanced_accuracy", "accuracy"];

export function primaryMetric(rows: SummaryRow[]): string | null {
  const metrics = new Set(rows.map((r) => r.metric));
  for (const m of METRIC_PREFERENCE) if (metrics.has(m)) return m;
  return rows.length ? rows[0].metric : null;
}

export function isFineTuned(model: string): boolean {
  return /lora|fine[-_ ]?tun/i.test(model);
}

export interface Verdict {
  metric: string;
  best: SummaryRow;
  candidate: SummaryRow | null; // best fine-tuned model
  baseline: SummaryRow | null; // best baseline
  delta: number | null; // candidate.mean - baseline.mean
  spread: number | null; // sqrt(std_c^2 + std_b^2)
  outcome: "better" | "worse" | "tie" | "no-comparison";
  text: string;
}

const label = (m: string) => m.replace(/_/g, " ");
const f = (x: number) => x.toFixed(3);

/** Compare the best fine-tuned model with the best baseline on the primary metric. */
export function computeVerdict(rows: SummaryRow[]): Verdict | null {
  const metric = primaryMetric(rows);
  if (!metric) return null;
  const rs = rows.filter((r) => r.metric === metric);
  const byMean = [...rs].sort((a, b) => b.mean - a.mean);
  const best = byMean[0];
  const candidate = byMean.find((r) => isFineTuned(r.model)) ?? null;
  const baseline = byMean.find((r) => !isFineTuned(r.model)) ?? null;
  if (!candidate || !baseline) {
    const second = byMean[1];
    const spreadOf = (r: SummaryRow) => (r.n_seeds > 1 ? ` ± ${f(r.std)} over ${r.n_seeds} seeds` : "");
    let text = `${best.model} scored best on ${label(metric)} (${f(best.mean)}${spreadOf(best)}).`;
    if (second) {
      const gap = best.mean - second.mean;
      const spread = Math.sqrt(best.std ** 2 + second.std ** 2);
      text += ` ${second.model} scored ${f(second.mean)}${spreadOf(second)}, ${f(gap)} lower` +
        (best.n_seeds > 1 && second.n_seeds > 1 ? (gap > spread ? ", more than the spread across seeds." : ", within the spread across seeds.") : ".");
    }
    text += " No LoRA fine-tune is part of this comparison.";
    if (Math.min(best.n_seeds, second?.n_seeds ?? best.n_seeds) < 2) text += " With a single seed the spread is unknown, so treat this as indicative only.";
    return { metric, best, candidate, baseline, delta: null, spread: null, outcome: "no-comparison", text };
  }
  const delta = candidate.mean - baseline.mean;
  const spread = Math.sqrt(candidate.std ** 2 + baseline.std ** 2);
  const seeds = Math.min(candidate.n_seeds, baseline.n_seeds);
  const within = Math.abs(delta) <= spread || Math.abs(delta) < 0.005;
  const outcome: Verdict["outcome"] = within ? "tie" : delta > 0 ? "better" : "worse";
  const pair = `${candidate.model} ${f(candidate.mean)} ± ${f(candidate.std)} vs ${baseline.model} ${f(baseline.mean)} ± ${f(baseline.std)}`;
  const seedNote = seeds < 2 ? " With a single seed the spread is unknown, so treat this as indicative only." : "";
  let text: string;
  if (outcome === "better")
    text = `Fine-tuning helped: ${candidate.model} beat the best baseline (${baseline.model}) by ${f(delta)} ${label(metric)} (${pair}, ${seeds} seeds); the gain is larger than the spread across seeds (${f(spread)}).`;
  else if (outcome === "worse")
    text = `Fine-tuning did not help: ${candidate.model} scored ${f(-delta)} ${label(metric)} below the best baseline (${baseline.model}) (${pair}, ${seeds} seeds); the gap is larger than the spread across seeds (${f(spread)}).`;
  else
    text = `No clear difference: ${candidate.model} and the best baseline (${baseline.model}) differ by ${f(delta)} ${label(metric)}, within the spread across seeds (${f(spread)}) (${pair}).`;
  return { metric, best, candidate, baseline, delta, spread, outcome, text: text + seedNote };
}
