// Service-shaped JSON for component tests. The *.json files are the service's own answers,
// recorded by `PYTHONPATH=src python scripts/record_web_fixtures.py` (never edit them by hand):
// GET /applications, /models, POST /upload, GET /status and /results of a real annotation run
// (the demo model on ../shared/data/10x_pbmc68k_reduced.h5ad).
import type { ApiResults, ApiRun } from "../api/types";
import applications from "./applications.json";
import results from "./results.json";
import upload from "./upload.json";
import status from "./status.json";

export { applications };
export const recordedResults = results as ApiResults & { layout: NonNullable<ApiResults["layout"]>; cells: NonNullable<ApiResults["cells"]> };
export const recordedStatus = status as ApiRun;
/** The recorded annotation's answer with another application's summary, no layout and no cells. */
export const withSummary = (summary: Record<string, unknown>): ApiResults => ({ ...recordedResults, summary, layout: null, cells: null });

export const demoModel = {
  id: "demo-logreg-pbmc68k",
  name: "demo-logreg-pbmc68k",
  family: "logreg",
  size_bytes: 123456,
  n_genes: 765,
  classes: ["CD14+ Monocyte", "CD19+ B", "CD4+/CD25 T Reg", "CD56+ NK", "CD8+ Cytotoxic T", "Dendritic"],
  requirements: { needs: "lognorm", gene_key_kind: "symbol", representation: "lognorm", n_genes: 765, kind: "baseline" },
  ready: true,
  status: "ready",
  applications: ["annotation", "embedding", "finetune", "evaluation"],
  metrics: {
    training_holdout: { accuracy: 0.81, macro_f1: 0.74, n_cells: 210 },
    evaluations: [
      { run_id: "r_eval1", dataset_id: "d_1", label_key: "cell_type", metrics: { accuracy: 0.9, macro_f1: 0.85, ece: 0.04 }, created_at: "2026-11-21T06:00:00Z" },
    ],
  },
  source_run_id: null,
  created_at: "2026-11-21T05:00:00Z",
};

export const brokenModel = {
  ...demoModel,
  id: "scgpt-human",
  name: "scGPT human",
  family: "scgpt",
  ready: false,
  status: "weights file missing: best_model.pt",
  metrics: { training_holdout: {}, evaluations: [] },
};

export const report = {
  ok: true,
  n_cells: 2638,
  n_genes: 32738,
  sparsity: 0.97,
  matrices: [{ source: "X", kind: "counts", shape: [2638, 32738] }],
  chosen: { counts: "X", lognorm: "X" },
  gene_id_kind: "ensembl",
  species: "human",
  n_duplicate_genes: 0,
  messages: [
    { level: "warning", code: "few_cells", message: "Only 15 cells are labelled Megakaryocytes.", hint: "Merge rare types or add cells." },
  ],
  coverage: [
    { target: "demo-logreg-pbmc68k", n_target: 765, n_present: 700, fraction_present: 0.915, fraction_counts_mapped: null, key_kind: "symbol", missing_examples: [] },
    { target: "scgpt-human", n_target: 60697, n_present: 6000, fraction_present: 0.1, fraction_counts_mapped: null, key_kind: "symbol", missing_examples: [] },
  ],
  obs_columns: ["cell_type", "n_counts"],
};

/** The recorded POST /upload answer with the report above (its warnings and low-coverage model). */
export function uploadBody(extra: Record<string, unknown> = {}) {
  return { ...upload, id: "d_abc", filename: "pbmc3k.h5ad", report, ...extra };
}
