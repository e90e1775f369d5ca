// Map the service's JSON onto the UI's types, tolerating optional or differently nested fields.
import type {
  ApiApplication,
  ApiCellPage,
  ApiDataset,
  ApiModel,
  ApiLayout,
  ApiResults,
  ApiRun,
  ApiRunPage,
  ApiCellPrediction,
  ApiResultSummary,
  Application,
  CellRow,
  CellsPage,
  ConfusionMatrix,
  Dataset,
  EvaluationArtifacts,
  MethodFigures,
  OntologyScores,
  ReferenceRow,
  ModelInfo,
  ModelMetric,
  OrthologyInfo,
  ParamSpec,
  ReliabilityCurve,
  Results,
  RunStatus,
  RunsPage,
  SummaryRow,
  Umap,
  ValidationReport,
} from "./types";

type J = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const isObj = (v: unknown): v is J => typeof v === "object" && v !== null && !Array.isArray(v);
const arr = <T = unknown>(v: unknown): T[] => (Array.isArray(v) ? (v as T[]) : []);
const numOr = (v: unknown, d: number | null = null): number | null => (typeof v === "number" && Number.isFinite(v) ? v : d);

/** Parameters from a pydantic JSON schema ({properties, required}) or a list of specs. */
export function paramsFromSchema(schema: unknown): ParamSpec[] {
  if (Array.isArray(schema)) return schema as ParamSpec[];
  if (!isObj(schema) || !isObj(schema.properties)) return [];
  const required = new Set(arr<string>(schema.required));
  const defs: J = isObj(schema.$defs) ? schema.$defs : {};
  return Object.entries(schema.properties as J).map(([name, raw]) => {
    let p: J = isObj(raw) ? raw : {};
    if (p.$ref && typeof p.$ref === "string") p = { ...(defs[p.$ref.split("/").pop()!] ?? {}), ...p };
    let type: string = p.type ?? "";
    let choices: unknown[] | null = Array.isArray(p.enum) ? p.enum : p.const !== undefined ? [p.const] : null;
    let min = numOr(p.minimum) ?? numOr(p.exclusiveMinimum);
    let max = numOr(p.maximum) ?? numOr(p.exclusiveMaximum);
    for (const alt of arr<J>(p.anyOf ?? p.oneOf)) {
      if (!isObj(alt) || alt.type === "null") continue;
      type ||= alt.type ?? "";
      if (Array.isArray(alt.enum)) choices = alt.enum;
      min ??= numOr(alt.minimum) ?? numOr(alt.exclusiveMinimum);
      max ??= numOr(alt.maximum) ?? numOr(alt.exclusiveMaximum);
    }
    if (!type && choices) type = "choice";
    if (type === "array" && isObj(p.items) && Array.isArray(p.items.enum)) {
      type = "multi";
      choices = p.items.enum;
    }
    if (type === "object") type = "json";
    return {
      name,
      type: type || "string",
      default: p.default,
      help: p.description ?? p.title ?? null,
      choices,
      min,
      max,
      required: required.has(name),
    };
  });
}

export function normApplication(a: ApiApplication): Application {
  return { id: a.id, name: a.name, description: a.description ?? "", params: paramsFromSchema(a.params_schema) };
}

const METRIC_KEYS = ["accuracy", "macro_f1", "weighted_f1", "ece", "balanced_accuracy"];

function metricsOf(block: unknown, extra: Partial<ModelMetric>): ModelMetric[] {
  if (!isObj(block)) return [];
  return Object.entries(block)
    .filter(([k, v]) => typeof v === "number" && (METRIC_KEYS.includes(k) || /f1|acc|ece/i.test(k)))
    .map(([k, v]) => ({ name: k, value: v as number, ...extra }));
}

/** The API's typed model; ``requirements`` and the evaluations' metrics are free-form in the schema. */
export function normModel(m: ApiModel): ModelInfo {
  const req: J = m.requirements;
  const metrics: ModelMetric[] = [];
  for (const e of m.metrics.evaluations) {
    const src = { evaluation_run_id: e.run_id, dataset: e.label_key ? `labels: ${e.label_key}` : null };
    metrics.push(...metricsOf(e.metrics, src));
  }
  metrics.push(...metricsOf(m.metrics.training_holdout, { evaluation_run_id: null, dataset: "held-out split at training" }));
  return {
    id: m.id,
    name: m.name,
    family: m.family,
    applications: m.applications,
    ready: m.ready,
    ready_reason: m.ready ? null : m.status,
    n_parameters: numOr(req.n_parameters),
    embedding_dim: numOr(req.embedding_dim),
    size_bytes: m.size_bytes,
    input: {
      representation: req.representation ?? (req.needs === "counts" ? "counts" : null),
      gene_id_kind: req.gene_key_kind ?? req.gene_id_kind ?? null,
      n_genes: numOr(req.n_genes ?? m.n_genes),
    },
    classes: m.classes,
    metrics,
    description: null,
  };
}

export function normReport(r: unknown): ValidationReport {
  const x: J = isObj(r) ? r : {};
  const messages = arr<J>(x.messages).map((m) => ({ level: m.level, code: m.code ?? "", message: m.message ?? "", hint: m.hint ?? null }));
  return {
    ok: x.ok ?? !messages.some((m) => m.level === "error"),
    n_cells: x.n_cells ?? 0,
    n_genes: x.n_genes ?? 0,
    sparsity: x.sparsity,
    matrices: arr(x.matrices),
    chosen: isObj(x.chosen) ? x.chosen : {},
    gene_id_kind: x.gene_id_kind ?? "unknown",
    species: x.species,
    species_evidence: x.species_evidence,
    species_source: x.species_source,
    orthology: isObj(x.orthology) ? (x.orthology as OrthologyInfo) : null,
    n_duplicate_genes: x.n_duplicate_genes,
    messages,
    coverage: arr<J>(x.coverage ?? x.model_coverage).map(
      (c) => ({ ...c, target: String(c.target ?? c.model_id ?? c.model).replace(/^model /, "") }) as never,
    ),
    obs_columns: arr<string>(x.obs_columns),
  };
}

/** The API's typed dataset; its validation ``report`` is free-form in the schema (normReport reads it). */
export function normDataset(d: ApiDataset): Dataset {
  return {
    id: d.id,
    filename: d.filename,
    size_bytes: d.size_bytes,
    sha256: d.sha256,
    created_at: d.created_at,
    report: normReport(d.report),
  };
}

/** The API's typed run → the UI's status (progress shown as 100 once the run succeeded). */
export function normStatus(s: ApiRun): RunStatus {
  return {
    run_id: s.id,
    state: s.state,
    stage: s.stage,
    progress: s.state === "succeeded" ? 100 : Math.max(0, Math.min(100, s.progress)),
    application_id: s.application_id,
    model_id: s.model_id,
    dataset_id: s.dataset_id,
    created_at: s.created_at,
    started_at: s.started_at,
    finished_at: s.finished_at,
    error: s.error?.message ?? null,
    error_hint: s.error?.hint ?? null,
  };
}

/** The API's page {items, total, page, page_size} → items with offset/limit. */
export function normRuns(p: ApiRunPage): RunsPage {
  return { items: p.items.map(normStatus), total: p.total, offset: (p.page - 1) * p.page_size, limit: p.page_size };
}

/** One row of the API's typed cell page ("label" is the shown label: Unknown below the threshold). */
export function normCell(row: ApiCellPrediction): CellRow {
  return {
    cell_id: row.cell,
    predicted: row.label,
    confidence: row.confidence,
    unknown: row.unknown,
    top: row.top3,
    true_label: row.true_label ?? undefined,
    term_id: row.ontology_term_id ?? null,
  };
}

export function normCells(c: ApiCellPage | null | undefined): CellsPage | null {
  if (!c) return null;
  return { items: c.items.map(normCell), total: c.total, offset: (c.page - 1) * c.page_size, limit: c.page_size };
}

/** The API's typed column-wise layout → Umap. */
export function normUmap(u: ApiLayout | null | undefined, summary: J): Umap | null {
  if (!u) return null;
  const n = u.x.length;
  return {
    x: u.x,
    y: u.y,
    cell_ids: u.cells,
    top3: u.top3 ?? undefined,
    obs: u.obs,
    labels: u.labels?.length === n ? u.labels : Array(n).fill(""),
    confidence: u.confidence?.length === n ? u.confidence : [],
    sampled: u.sampled,
    n_total: numOr(summary.n_cells, n)!,
    method: u.method ?? summary.layout ?? null,
  };
}

/** "geneformer · lora" for evaluate()'s (model, method) pairs; the model name alone otherwise. */
function methodName(r: J): string {
  if (r.model != null && r.method != null) return `${r.model} · ${r.method}`;
  return String(r.model ?? r.method ?? r.name ?? "");
}

const SUMMARY_METRICS = ["accuracy", "macro_f1", "weighted_f1", "ece"];

/** Mean and sample std over seeds of per-seed rows {model, method, seed, accuracy, ...}. */
function aggregateSeeds(rows: J[]): SummaryRow[] {
  const groups = new Map<string, J[]>();
  for (const r of rows) {
    const k = methodName(r);
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k)!.push(r);
  }
  const out: SummaryRow[] = [];
  for (const [model, rs] of groups) {
    for (const metric of SUMMARY_METRICS) {
      const v = rs.map((r) => r[metric]).filter((x): x is number => typeof x === "number");
      if (!v.length) continue;
      const mean = v.reduce((a, b) => a + b, 0) / v.length;
      const std = v.length > 1 ? Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / (v.length - 1)) : 0;
      out.push({ model, metric, mean, std, n_seeds: v.length });
    }
  }
  return out;
}

function summaryRowsFrom(s: J, modelName: string): SummaryRow[] {
  // 1) evaluate()'s report: mean_std rows {model, method, accuracy_mean, accuracy_std, ..., n_seeds},
  //    or summary.csv-like rows {model, metric, mean, std, n_seeds}, or per-seed rows to aggregate
  const perSeed = Array.isArray(s.summary) && s.summary.some((r: J) => isObj(r) && r.seed !== undefined);
  const rows = arr<J>(s.mean_std ?? s.summary_rows ?? s.summary_table ?? (Array.isArray(s.summary) && !perSeed ? s.summary : null));
  if (!rows.length && perSeed) return aggregateSeeds(s.summary);
  const out: SummaryRow[] = [];
  for (const r of rows) {
    if (!isObj(r)) continue;
    const model = methodName(r);
    if (r.metric !== undefined) {
      out.push({ model, metric: String(r.metric), mean: Number(r.mean), std: Number(r.std ?? 0), n_seeds: Number(r.n_seeds ?? r.n ?? 1) });
      continue;
    }
    for (const [k, v] of Object.entries(r)) {
      const m = /^(.*)_mean$/.exec(k);
      if (m && typeof v === "number" && SUMMARY_METRICS.includes(m[1]))
        out.push({ model, metric: m[1], mean: v, std: Number(r[`${m[1]}_std`] ?? 0), n_seeds: Number(r.n_seeds ?? r.n ?? 1) });
    }
  }
  if (out.length) return out;
  // 2) the service's single-seed comparison: the model vs a logistic-regression baseline on the same held-out cells
  const cmp: J | null = isObj(s.baseline_comparison) ? s.baseline_comparison : null;
  if (cmp) {
    const name = String(s.model_name ?? s.model ?? modelName);
    const add = (model: string, block: unknown) => {
      if (!isObj(block)) return;
      for (const k of METRIC_KEYS) if (typeof block[k] === "number") out.push({ model, metric: k, mean: block[k], std: 0, n_seeds: 1 });
    };
    add(name, cmp.model_on_test);
    add("logreg baseline (trained on this data)", cmp.logreg_baseline_on_test);
  } else if (isObj(s.metrics)) {
    for (const k of METRIC_KEYS) if (typeof s.metrics[k] === "number") out.push({ model: String(s.model ?? modelName), metric: k, mean: s.metrics[k], std: 0, n_seeds: 1 });
  }
  return out;
}

function confusionFrom(c: unknown, model: string): ConfusionMatrix | null {
  if (!isObj(c)) return null;
  const counts = arr<number[]>(c.counts ?? c.matrix);
  const lt = arr<string>(c.labels_true ?? c.labels);
  const lp = arr<string>(c.labels_pred ?? c.labels);
  if (!counts.length) return null;
  // square it over the union of labels so the heatmap reads as a confusion matrix
  const labels = [...new Set([...lt, ...lp])];
  const matrix = labels.map((t) => labels.map((p) => {
    const i = lt.indexOf(t);
    const j = lp.indexOf(p);
    return i >= 0 && j >= 0 ? Number(counts[i]?.[j] ?? 0) : 0;
  }));
  return { model: String(c.model ?? model), labels, matrix };
}

function ontologyFrom(o: unknown): OntologyScores | null {
  if (!isObj(o)) return null;
  return {
    accuracy: numOr(o.ontology_accuracy),
    score: numOr(o.ontology_score),
    macro_score: numOr(o.ontology_macro_score),
    expressible_share: numOr(o.expressible_share),
    coarser_share: numOr(o.coarser_share),
    coverage: numOr(o.coverage),
    called_accuracy: numOr(o.called_ontology_accuracy),
    called_score: numOr(o.called_ontology_score),
    credit_rule: typeof o.credit_rule === "string" ? o.credit_rule : null,
  };
}

/** Majority-class and chance rows: {name: {accuracy, macro_f1}} (service) or {name: {accuracy_mean, ...}} (evaluate). */
function referenceFrom(r: unknown): ReferenceRow[] {
  if (!isObj(r)) return [];
  return Object.entries(r).filter(([, v]) => isObj(v)).map(([name, v]) => ({
    name,
    label: typeof (v as J).label === "string" ? (v as J).label : null,
    accuracy: numOr((v as J).accuracy ?? (v as J).accuracy_mean),
    macro_f1: numOr((v as J).macro_f1 ?? (v as J).macro_f1_mean),
  }));
}

const PER_METHOD_METRICS = ["accuracy", "macro_f1", "coverage", "called_macro_f1", "ontology_score", "expressible_share"];

function perMethodFrom(p: unknown): MethodFigures[] {
  if (!isObj(p)) return [];
  return Object.entries(p).filter(([, v]) => isObj(v)).map(([method, v]) => ({
    method,
    figures: PER_METHOD_METRICS.filter((m) => (v as J)[`${m}_mean`] !== undefined).map((m) => ({ metric: m, mean: numOr((v as J)[`${m}_mean`]), std: numOr((v as J)[`${m}_std`]) })),
  }));
}

export function normEvaluation(s: J, modelName: string): EvaluationArtifacts | null {
  const m: J | null = isObj(s.metrics) ? s.metrics : null;
  const hasEval = s.confusion || s.baseline_comparison || m?.per_method || s.summary_rows || s.summary_table || s.confusions || s.mean_std || Array.isArray(s.summary);
  const calibration = isObj(s.calibration)
    ? Object.entries(s.calibration as J).filter(([, v]) => isObj(v)).map(([model, v]) => ({
        model: model.replace(/-(\w+)$/, " · $1"),
        ece_before: numOr((v as J).ece_before_temperature),
        ece_after: numOr((v as J).ece_after_temperature),
      }))
    : [];
  if (!hasEval) return null;
  const confusion: ConfusionMatrix[] = [];
  if (Array.isArray(s.confusions)) for (const c of s.confusions) { const m = confusionFrom(c, modelName); if (m) confusion.push(m); }
  else if (isObj(s.confusions)) for (const [k, c] of Object.entries(s.confusions)) { const m = confusionFrom(c, k); if (m) confusion.push(m); }
  else { const m = confusionFrom(s.confusion, modelName); if (m) confusion.push(m); }
  const reliability: ReliabilityCurve[] = [];
  const rel = s.reliability ?? s.reliability_bins;
  const relItems: [string, J][] = Array.isArray(rel) ? (rel as J[]).map((r) => [String(r.model ?? modelName), r]) : isObj(rel) ? (rel.bin_confidence || rel.confidence ? [[modelName, rel]] : Object.entries(rel) as [string, J][]) : [];
  for (const [model, r] of relItems) {
    reliability.push({
      model,
      bin_confidence: arr<number>(r.bin_confidence ?? r.confidence ?? r.mean_confidence),
      bin_accuracy: arr<number>(r.bin_accuracy ?? r.accuracy),
      bin_count: arr<number>(r.bin_count ?? r.count ?? r.counts),
      ece: numOr(r.ece),
    });
  }
  return {
    summary: summaryRowsFrom(s, modelName),
    confusion,
    warnings: arr<string>(s.warnings).map(String),
    calibration,
    label_overlap: isObj(s.metrics) ? numOr(s.metrics.share_of_cells_with_model_labels) : null,
    ontology: ontologyFrom(m?.ontology),
    called: m && m.coverage !== undefined
      ? { accuracy: numOr(m.accuracy), macro_f1: numOr(m.macro_f1), coverage: numOr(m.coverage), called_accuracy: numOr(m.called_accuracy), called_macro_f1: numOr(m.called_macro_f1) }
      : null,
    reference: referenceFrom(m?.reference),
    per_method: perMethodFrom(m?.per_method),
    most_confused: arr<J>(s.most_confused ?? s.misclassified_top5).map((p) => ({ model: p.method != null ? methodName(p) : p.model, true: String(p.true ?? p.true_label), predicted: String(p.predicted ?? p.predicted_label), count: Number(p.count ?? p.n ?? 0) })),
    reliability,
  };
}

export function normResults(r: ApiResults): Results {
  const typed: ApiResultSummary = r.summary; // the fields the API's schema declares
  const s: J = typed; // plus each application's own keys (evaluation reports, fine-tune figures)
  const summary = {
    n_cells: numOr(s.n_cells, 0)!,
    label_counts: isObj(s.label_counts) ? (s.label_counts as Record<string, number>) : {},
    mean_confidence: numOr(s.mean_confidence, NaN)!,
    unknown_fraction: numOr(s.unknown_share ?? s.unknown_fraction, NaN)!,
    threshold: numOr(s.unknown_threshold ?? s.threshold),
    classes: arr<string>(s.classes),
    metrics: isObj(s.metrics) ? Object.fromEntries(Object.entries(s.metrics).filter(([k, v]) => typeof v === "number" && k !== "n_cells")) as Record<string, number> : null,
    label_key: s.label_key ?? null,
    gene_coverage: typed.gene_coverage ?? null,
    gene_panel_mode: typed.gene_panel_mode ?? null,
    species: typed.species ?? null,
    ontology_terms: typed.ontology?.terms ?? {},
    ontology_version: typed.ontology?.version ?? null,
    out_of_reference: typed.out_of_reference ?? null,
    raw: typed,
  };
  // evaluate()'s report.json arrives nested as summary.report on foundation-model evaluations
  const evalSource: J = { ...s, ...(isObj(s.report) ? s.report : {}) };
  return {
    run_id: r.run.id,
    application_id: r.run.application_id,
    summary,
    umap: normUmap(r.layout, s),
    cells: normCells(r.cells),
    evaluation: normEvaluation(evalSource, String(s.model ?? r.run.model_id)),
  };
}
