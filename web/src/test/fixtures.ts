// The service's own answers for component tests, typed by the generated API types. The *.json
// files are recorded from the real API, never edited by hand:
// - `PYTHONPATH=src python scripts/record_web_fixtures.py`: GET /applications, /models, /datasets,
//   /runs, POST /upload (pbmc68k, pbmc3k, pbmc68k as mouse genes, and a refused scaled-only
//   file), and the status and results of real annotations, a fine-tune, two evaluations and a
//   failed run;
//   (with a consensus of two models, explained, also at the broad level and at a broader term it
//   offers, its every-cell layout by each label source and level, a refused level, and one cell's
//   evidence);
// - `PYTHONPATH=src python scripts/record_evaluation_fixture.py`: the stored summaries of the
//   service's evaluation task and of a foundation-model evaluation (evaluate()).
import type {
  Application, CellPage, CellPrediction, Dataset, ErrorResponse, LayoutView, Model, Results, ResultSummary, Run, RunPage, SubmitResponse,
} from "../api/types";
import applicationsJson from "./applications.json";
import consensusCellJson from "./consensus_cell.json";
import consensusLayoutBroadJson from "./consensus_layout_broad.json";
import consensusLayoutJson from "./consensus_layout.json";
import consensusLayoutModelBroadJson from "./consensus_layout_model_broad.json";
import consensusLayoutModelJson from "./consensus_layout_model.json";
import consensusResultsBroadJson from "./consensus_results_broad.json";
import consensusResultsTermJson from "./consensus_results_term.json";
import consensusResultsJson from "./consensus_results.json";
import consensusStatusJson from "./consensus_status.json";
import datasetsJson from "./datasets.json";
import evaluationCellsJson from "./evaluation_cells.json";
import evaluationFoundationSummary from "./evaluation_foundation_summary.json";
import evaluationMismatchJson from "./evaluation_mismatch_results.json";
import evaluationResultsJson from "./evaluation_results.json";
import evaluationStatusJson from "./evaluation_status.json";
import evaluationSummary from "./evaluation_summary.json";
import failedStatusJson from "./failed_status.json";
import finetuneResultsJson from "./finetune_results.json";
import finetuneStatusJson from "./finetune_status.json";
import layoutDensityJson from "./layout_density.json";
import layoutPointsJson from "./layout_points.json";
import mouseResultsJson from "./mouse_results.json";
import modelsJson from "./models.json";
import resultsInvalidLevelJson from "./results_invalid_level.json";
import resultsJson from "./results.json";
import resultsPage2Json from "./results_page2.json";
import runsJson from "./runs.json";
import statusJson from "./status.json";
import submitJson from "./submit.json";
import submitRefusedJson from "./submit_refused.json";
import statusNotFoundJson from "./status_not_found.json";
import statusRunningJson from "./status_running.json";
import uploadJson from "./upload.json";
import uploadMouseJson from "./upload_mouse.json";
import uploadPbmc3kJson from "./upload_pbmc3k.json";
import uploadRefusedJson from "./upload_refused.json";
import unauthorizedJson from "./unauthorized.json";

export const applications = applicationsJson as Application[];
export const models = modelsJson as Model[];
const model = (id: string) => models.find((m) => m.id === id)!;
/** The demo model (trained on pbmc68k, ready, no stored evaluation). */
export const demoModel = model("demo-logreg-pbmc68k");
/** A logistic regression trained on half of pbmc3k, with the stored evaluation below. */
export const pbmc3kModel = model("pbmc3k-logreg");
/** A copy of the demo model with a weights file deleted: not ready. */
export const brokenModel = model("demo-broken");

/** POST /upload of 10x_pbmc68k_reduced.h5ad (scaled X, log-normalised raw, gene symbols). */
export const upload = uploadJson as Dataset;
/** POST /upload of pbmc3k_labeled_counts.h5ad (raw counts, cell_type labels). */
export const labelledUpload = uploadPbmc3kJson as Dataset;
/** POST /upload of the pbmc68k cells with only their scaled matrix: refused with 422. */
export const refusedUpload = uploadRefusedJson as ErrorResponse;
/** POST /upload of the pbmc68k cells renamed to their mouse 1:1 orthologs. */
export const mouseUpload = uploadMouseJson as Dataset;
export const datasets = datasetsJson as Dataset[];

/** POST /submit's answer for that annotation, and its refusal of min_coverage 2 (422). */
export const submitted = submitJson as SubmitResponse;
export const submitRefused = submitRefusedJson as ErrorResponse;
/** The demo model's annotation of pbmc68k (PCA layout, bulk_labels as true labels): its status
 * while running and when done, and its results with pages 1 and 2 of 25 cells. */
export const runningStatus = statusRunningJson as Run;
export const recordedStatus = statusJson as Run;
export const recordedResults = resultsJson as Results & { layout: NonNullable<Results["layout"]>; cells: CellPage };
export const resultsPage2 = resultsPage2Json as CellPage;
/** GET /status of a run that does not exist (404). */
export const notFound = statusNotFoundJson as ErrorResponse;
/** The demo model's annotation of the mouse dataset (no layout, one cell per page). */
export const mouseResults = mouseResultsJson as Results;
/** A logistic regression fine-tuned on pbmc68k's bulk_labels: a new model registered. */
export const finetuneStatus = finetuneStatusJson as Run;
export const finetuneResults = finetuneResultsJson as Results;

/** pbmc3k-logreg's evaluation on the pbmc3k cells it was not trained on (one cell per page). */
export const evaluationStatus = evaluationStatusJson as Run;
export const evaluationResults = evaluationResultsJson as Results & { cells: CellPage };
/** Every cell of that evaluation on one page. */
export const evaluationCells = evaluationCellsJson as CellPage;
/** The demo model (pbmc68k cell-type names) evaluated on pbmc3k's differently named labels. */
export const mismatchResults = evaluationMismatchJson as Results;
/** An evaluation asked for a label column the data lacks. */
export const failedStatus = failedStatusJson as Run;
export const runs = runsJson as RunPage;
/** GET /runs with a key the service does not know (401). */
export const unauthorized = unauthorizedJson as ErrorResponse;

/** The stored summaries of the service's evaluation task and of a foundation evaluation. */
export const serviceSummary = evaluationSummary as ResultSummary;
export const foundationSummary = evaluationFoundationSummary as ResultSummary;

/** GET /runs/{id}/layout of that annotation: the whole extent with max_points 200 and bins 32
 * (a density grid: 700 cells), then its lower-left quarter with max_points 400 (its points). */
export const layoutDensity = layoutDensityJson as LayoutView;
export const layoutPoints = layoutPointsJson as LayoutView;

/** The demo model and pbmc3k-logreg combined on the pbmc3k cells (consensus, explain on, PCA
 * layout): its status, results with 10 cells, the same at level=broad, and GET
 * /results/{id}/cells/{i} of the layout's first point. */
export const consensusStatus = consensusStatusJson as Run;
export const consensusResults = consensusResultsJson as Results & { layout: NonNullable<Results["layout"]>; cells: CellPage };
export const consensusBroad = consensusResultsBroadJson as Results & { layout: NonNullable<Results["layout"]>; cells: CellPage };
export const consensusCell = consensusCellJson as CellPrediction;
/** The same results at one of the broader terms they offer (`levels`: T cell, by its CL id), and
 * GET /results/{id}?level=T-cells please (no CL term: refused, 422 invalid_level). */
export const consensusAtTerm = consensusResultsTermJson as Results & { layout: NonNullable<Results["layout"]>; cells: CellPage };
export const invalidLevel = resultsInvalidLevelJson as ErrorResponse;
/** GET /runs/{id}/layout of that consensus (max_points 200, bins 32: density grids of every cell),
 * labelled by the consensus's calls and by pbmc3k-logreg's own (source), each at the model's
 * classes and at level=broad. */
export const consensusLayout = consensusLayoutJson as LayoutView;
export const consensusLayoutBroad = consensusLayoutBroadJson as LayoutView;
export const consensusLayoutModel = consensusLayoutModelJson as LayoutView;
export const consensusLayoutModelBroad = consensusLayoutModelBroadJson as LayoutView;
