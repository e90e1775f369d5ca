// Types of the cellfoundry service's JSON API. The API's own shapes come from schema.d.ts, which
// openapi-typescript generates from the service's /openapi.json (`npm run gen:api`; never edit it).
// The interfaces further down are the UI's view models that normalize.ts builds from those shapes.
import type { components } from "./schema";

/** Every schema of the service's OpenAPI document. */
export type Api = components["schemas"];
export type ApiApplication = Api["ApplicationPublic"];
export type ApiModel = Api["ModelPublic"];
export type ApiDataset = Api["DatasetPublic"];
export type ApiRun = Api["RunPublic"];
export type ApiRunPage = Api["RunPage"];
export type ApiResults = Api["ResultsPublic"];
export type ApiResultSummary = Api["ResultSummaryPublic"];
export type ApiLayout = Api["LayoutPublic"];
export type ApiCellPrediction = Api["CellPrediction"];
export type ApiCellPage = Api["CellPage"];
export type TopLabel = Api["TopLabel"];
export type OntologyTerm = Api["OntologyTermPublic"];
export type OutOfReference = Api["OutOfReferencePublic"];

export type RunState = ApiRun["state"];
export const RUN_STATES: RunState[] = ["queued", "running", "succeeded", "failed", "cancelled"];
export const TERMINAL_STATES: RunState[] = ["succeeded", "failed", "cancelled"];

export type ApiErrorBody = Api["ErrorResponse"];
/** The form's request: params are built from GET /applications' schemas at run time, so they are
 * checked by the service (Api["SubmitCreate"] types each application's params statically). */
export interface SubmitRequest {
  dataset_id: string;
  model_id: string | null;
  application_id: string;
  params: Record<string, unknown>;
}
export type SubmitResponse = Api["SubmitPublic"];
export type Health = Api["HealthPublic"];

export interface ParamSpec {
  name: string;
  type: "int" | "integer" | "float" | "number" | "bool" | "boolean" | "str" | "string" | "choice" | string;
  default?: unknown;
  help?: string | null;
  description?: string | null;
  choices?: unknown[] | null;
  min?: number | null;
  max?: number | null;
  required?: boolean;
}

export interface Application {
  id: string;
  name: string;
  description?: string | null;
  params: ParamSpec[];
  needs_labels?: boolean;
}

export interface ModelMetric {
  name: string;
  value: number;
  std?: number | null;
  evaluation_run_id?: string | null;
  dataset?: string | null;
}

export interface ModelInput {
  representation?: string | null; // "counts" | "lognorm"
  gene_id_kind?: string | null; // "ensembl" | "symbol"
  n_genes?: number | null;
}

export interface ModelInfo {
  id: string;
  name: string;
  family: string;
  applications: string[];
  ready: boolean;
  ready_reason?: string | null;
  n_parameters?: number | null;
  embedding_dim?: number | null;
  size_bytes?: number | null;
  input: ModelInput;
  classes?: string[] | null;
  metrics: ModelMetric[];
  description?: string | null;
}

export interface ReportMessage {
  level: "error" | "warning" | "info";
  code: string;
  message: string;
  hint?: string | null;
}

export interface MatrixInfo {
  source: string;
  kind: string;
  shape: [number, number];
  integer_fraction?: number;
  min_value?: number;
  max_value?: number;
  median_row_total?: number;
}

export interface CoverageInfo {
  target: string; // model id (or a vocabulary name)
  n_target: number;
  n_present: number;
  fraction_present: number;
  fraction_counts_mapped?: number | null;
  key_kind?: string;
  missing_examples?: string[];
  ok?: boolean;
}

/** How a mouse/macaque/pig dataset's genes were mapped to human orthologs (cellfoundry.data.orthologs). */
export interface OrthologyInfo {
  species: string;
  table: string;
  n_genes: number;
  n_genes_mapped: number;
  n_human_genes: number;
  n_human_summed: number;
  fraction_genes_mapped: number;
  fraction_counts_mapped: number | null;
}

export interface ValidationReport {
  ok: boolean;
  n_cells: number;
  n_genes: number;
  sparsity?: number;
  matrices: MatrixInfo[];
  chosen: Record<string, string | null>;
  gene_id_kind: string;
  species?: string;
  species_evidence?: string;
  species_source?: string;
  orthology?: OrthologyInfo | null;
  n_duplicate_genes?: number;
  messages: ReportMessage[];
  coverage: CoverageInfo[];
  obs_columns: string[];
}

export interface Dataset {
  id: string;
  filename: string;
  size_bytes?: number | null;
  sha256?: string | null;
  created_at?: string | null;
  report: ValidationReport;
}

export interface UploadResponse extends Dataset {
  dataset_id?: string;
}

export interface RunStatus {
  run_id: string;
  state: RunState;
  stage?: string | null;
  progress: number;
  application_id?: string | null;
  model_id?: string | null;
  dataset_id?: string | null;
  created_at?: string | null;
  started_at?: string | null;
  finished_at?: string | null;
  error?: string | null;
  error_hint?: string | null;
}

export interface RunsPage {
  items: RunStatus[];
  total: number;
  offset: number;
  limit: number;
}

export interface ResultSummary {
  n_cells: number;
  label_counts: Record<string, number>;
  mean_confidence: number;
  unknown_fraction: number;
  threshold?: number | null;
  classes?: string[];
  metrics?: Record<string, number> | null;
  label_key?: string | null;
  gene_coverage?: number | null; // share of the model's genes present in the data
  gene_panel_mode?: string | null; // all_genes / unobserved / refit / family_default
  species?: string | null;
  ontology_terms?: Record<string, OntologyTerm>; // class -> Cell Ontology term
  ontology_version?: string | null;
  out_of_reference?: OutOfReference | null;
  raw?: ApiResultSummary; // the service's summary as sent
}

export interface Umap {
  x: number[];
  y: number[];
  cell_ids?: string[];
  labels: string[];
  confidence: number[];
  top3?: { label: string; probability: number }[][];
  obs?: Record<string, (string | number | null)[]>;
  sampled: boolean;
  n_total: number;
  method?: string | null; // "umap" | "pca"
}

export interface CellRow {
  cell_id: string;
  predicted: string;
  confidence: number;
  unknown: boolean;
  top: TopLabel[];
  true_label?: string;
  term_id?: string | null; // Cell Ontology term of `predicted`
}

export interface CellsPage {
  items: CellRow[];
  total: number;
  offset: number;
  limit: number;
}

export interface ConfusionMatrix {
  model: string;
  labels: string[];
  matrix: number[][];
}

export interface ReliabilityCurve {
  model: string;
  bin_confidence: number[];
  bin_accuracy: number[];
  bin_count: number[];
  ece?: number | null;
}

export interface SummaryRow {
  model: string;
  metric: string;
  mean: number;
  std: number;
  n_seeds: number;
}

export interface EvaluationArtifacts {
  summary: SummaryRow[];
  confusion: ConfusionMatrix[];
  most_confused: { model?: string; true: string; predicted: string; count: number }[];
  reliability: ReliabilityCurve[];
  warnings?: string[];
  calibration?: { model: string; ece_before: number | null; ece_after: number | null }[];
  label_overlap?: number | null; // share of cells whose true label is one of the model's classes
  ontology?: OntologyScores | null; // Cell Ontology-aware scores of the model (service evaluation)
  called?: CalledFigures | null; // forced-choice figures beside the called-cell ones
  reference?: ReferenceRow[]; // majority-class and chance rows for the evaluated cells
  per_method?: MethodFigures[]; // foundation evaluations: each method's own mean/std
}

export interface OntologyScores {
  accuracy: number | null;
  score: number | null;
  macro_score: number | null;
  expressible_share: number | null;
  coarser_share: number | null;
  coverage: number | null;
  called_accuracy: number | null;
  called_score: number | null;
  credit_rule: string | null;
}

export interface CalledFigures {
  accuracy: number | null;
  macro_f1: number | null;
  coverage: number | null;
  called_accuracy: number | null;
  called_macro_f1: number | null;
}

export interface ReferenceRow {
  name: string;
  label: string | null;
  accuracy: number | null;
  macro_f1: number | null;
}

export interface MethodFigures {
  method: string;
  figures: { metric: string; mean: number | null; std: number | null }[];
}

export interface Results {
  run_id: string;
  application_id?: string | null;
  summary: ResultSummary;
  umap?: Umap | null;
  cells?: CellsPage | null;
  evaluation?: EvaluationArtifacts | null;
}

