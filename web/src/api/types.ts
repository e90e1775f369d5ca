// Short names for the service's API types. Every shape comes from schema.d.ts, which
// openapi-typescript generates from the service's /openapi.json (`npm run gen:api`; never edit it).
import type { components } from "./schema";

/** Every schema of the service's OpenAPI document. */
export type Api = components["schemas"];
export type Application = Api["ApplicationPublic"];
export type ParamSpec = Api["ParamSpecPublic"];
export type Model = Api["ModelPublic"];
export type Metrics = Api["MetricsPublic"];
export type Dataset = Api["DatasetPublic"];
export type ValidationReport = Api["ValidationReportPublic"];
export type GeneCoverage = Api["GeneCoveragePublic"];
export type Run = Api["RunPublic"];
export type RunPage = Api["RunPage"];
export type RunState = Run["state"];
export type Results = Api["ResultsPublic"];
export type ResultSummary = Api["ResultSummaryPublic"];
export type Layout = Api["LayoutPublic"];
/** GET /runs/{run_id}/layout: a viewport of every cell, as points or as per-label binned counts. */
export type LayoutView = Api["LayoutViewPublic"];
export type LayoutBox = Api["LayoutBox"];
export type CellPrediction = Api["CellPrediction"];
export type CellPage = Api["CellPage"];
export type Confusion = Api["ConfusionPublic"];
export type SubmitResponse = Api["SubmitPublic"];
export type Health = Api["HealthPublic"];

export const RUN_STATES: RunState[] = ["queued", "running", "succeeded", "failed", "cancelled"];
export const TERMINAL_STATES: RunState[] = ["succeeded", "failed", "cancelled"];

/** POST /submit's body. The form builds `params` at run time from the application's param specs,
 * so they are typed loosely here and checked by the service (Api["SubmitCreate"] types each
 * application's params statically). */
export type SubmitRequest = Pick<Api["SubmitCreate"], "dataset_id" | "model_id"> & {
  application_id: string;
  params: Record<string, unknown>;
};
export type ErrorResponse = Api["ErrorResponse"];
