// The one place the UI talks to the service: fetch + XHR (for upload progress), JSON errors.
import type { Application, CellPrediction, Dataset, LayoutBox, LayoutView, Model, Results, Run, RunPage, RunState, SubmitRequest, SubmitResponse } from "./types";

const KEY_STORAGE = "cellfoundry.apiKey";

/** An error the service answered with (or a network failure), with a fix hint when known. */
export class ApiError extends Error {
  status: number;
  code: string;
  hint: string | null;

  constructor(status: number, code: string, message: string, hint: string | null = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.hint = hint;
  }
}

export function getApiKey(): string {
  try {
    return window.localStorage.getItem(KEY_STORAGE) ?? "";
  } catch {
    return "";
  }
}

export function setApiKey(key: string): void {
  if (key) window.localStorage.setItem(KEY_STORAGE, key.trim());
  else window.localStorage.removeItem(KEY_STORAGE);
  window.dispatchEvent(new Event("cellfoundry:key"));
}

let baseUrl = "";
/** Override the API origin (tests); default is the page's own origin. */
export function setBaseUrl(url: string): void {
  baseUrl = url.replace(/\/$/, "");
}

export function apiUrl(path: string): string {
  return `${baseUrl}${path}`;
}

function authHeaders(): Record<string, string> {
  const key = getApiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

const NO_KEY_HINT = "Enter your API key on the Settings page (`cellfoundry keys create NAME` prints one).";

/** A new random Idempotency-Key (32 hex digits; crypto.getRandomValues works on plain http too,
 * unlike crypto.randomUUID). */
export function newIdempotencyKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Turn a non-2xx answer into an ApiError using the service's {error: {code, message, hint}}. */
export async function errorFromResponse(res: Response): Promise<ApiError> {
  let body: unknown = null;
  try {
    body = await res.json();
  } catch {
    /* not JSON */
  }
  return parseError(res.status, body);
}

export function parseError(status: number, body: unknown): ApiError {
  const b = body as { error?: { code?: string; message?: string; hint?: string | null }; detail?: unknown };
  if (b && typeof b === "object" && b.error && typeof b.error === "object") {
    const hint = b.error.hint ?? (status === 401 ? NO_KEY_HINT : null);
    return new ApiError(status, b.error.code ?? `http_${status}`, b.error.message ?? `HTTP ${status}`, hint);
  }
  if (b && typeof b === "object" && "detail" in b) {
    const d = typeof b.detail === "string" ? b.detail : JSON.stringify(b.detail);
    return new ApiError(status, `http_${status}`, d);
  }
  if (status === 401) return new ApiError(401, "unauthorized", "This needs an API key.", NO_KEY_HINT);
  return new ApiError(status, `http_${status}`, `The service answered HTTP ${status}.`);
}

async function request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal, headers: Record<string, string> = {}): Promise<T> {
  let res: Response;
  try {
    res = await fetch(apiUrl(path), {
      method,
      headers: {
        Accept: "application/json",
        ...(body !== undefined ? { "Content-Type": "application/json" } : {}),
        ...authHeaders(),
        ...headers,
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
      signal,
    });
  } catch (e) {
    if ((e as Error).name === "AbortError") throw e;
    throw new ApiError(0, "network", "Could not reach the cellfoundry service.",
      "Check that `cellfoundry serve` is running and reachable from this browser.");
  }
  if (!res.ok) throw await errorFromResponse(res);
  if (res.status === 204) return undefined as T;
  return (await res.json()) as T;
}

function qs(params: Record<string, string | number | undefined | null>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : "";
}

/** offset/limit → the service's page (1-based) / page_size. */
function paging(o: { offset?: number; limit?: number }): { page?: number; page_size?: number } {
  if (!o.limit) return {};
  return { page: Math.floor((o.offset ?? 0) / o.limit) + 1, page_size: o.limit };
}

/** GET /runs/{run_id}/layout's query: a viewport, its grid and point budget, and whose labels at
 * which Cell Ontology level. */
export type LayoutViewQuery = Partial<LayoutBox> & {
  bins?: number;
  max_points?: number;
  level?: string | null;
  source?: string | null;
};

export const api = {
  applications: (signal?: AbortSignal) => request<Application[]>("GET", "/applications", undefined, signal),
  models: (signal?: AbortSignal) => request<Model[]>("GET", "/models", undefined, signal),
  applicationModels: (appId: string, signal?: AbortSignal) =>
    request<Model[]>("GET", `/applications/${encodeURIComponent(appId)}/models`, undefined, signal),
  /** With `idempotencyKey`, a repeat of the same submit with the same key answers the run the
   * first one created (after a lost answer) instead of queueing a second. */
  submit: (req: SubmitRequest, idempotencyKey?: string) =>
    request<SubmitResponse>("POST", "/submit", req, undefined, idempotencyKey ? { "Idempotency-Key": idempotencyKey } : {}),
  status: (runId: string, signal?: AbortSignal) => request<Run>("GET", `/status/${encodeURIComponent(runId)}`, undefined, signal),
  cancel: (runId: string) => request<Run>("POST", `/runs/${encodeURIComponent(runId)}/cancel`),
  runs: (opts: { state?: RunState | ""; applicationId?: string; offset?: number; limit?: number }, signal?: AbortSignal) =>
    request<RunPage>("GET", `/runs${qs({ state: opts.state, application_id: opts.applicationId, ...paging(opts) })}`, undefined, signal),
  /** Results with one page of cells (`offset` must be a multiple of `limit`); with `level`, also
   * at that broader Cell Ontology level (e.g. "broad"). */
  results: (runId: string, opts: { offset?: number; limit?: number; level?: string | null } = {}, signal?: AbortSignal) =>
    request<Results>("GET", `/results/${encodeURIComponent(runId)}${qs({ ...paging(opts), level: opts.level })}`, undefined, signal),
  /** One cell's stored prediction with its evidence (row `index` of the run). */
  cell: (runId: string, index: number, level?: string | null, signal?: AbortSignal) =>
    request<CellPrediction>("GET", `/results/${encodeURIComponent(runId)}/cells/${index}${qs({ level })}`, undefined, signal),
  /** A viewport of the run's every-cell layout (default: all of it): points, or binned counts when more
   * than `max_points` lie inside; labelled at `level` and, for a consensus, by one model's own calls
   * (`source`, a model id). */
  layoutView: (runId: string, q: LayoutViewQuery = {}, signal?: AbortSignal) =>
    request<LayoutView>("GET", `/runs/${encodeURIComponent(runId)}/layout${qs(q)}`, undefined, signal),
  datasets: (signal?: AbortSignal) => request<Dataset[]>("GET", "/datasets", undefined, signal),
  dataset: (id: string, signal?: AbortSignal) => request<Dataset>("GET", `/datasets/${encodeURIComponent(id)}`, undefined, signal),
};

/** Upload a file as multipart field `file`, reporting progress 0–1; resolves with the dataset. */
export function uploadFile(
  file: File,
  onProgress: (fraction: number) => void,
): { promise: Promise<Dataset>; abort: () => void } {
  const xhr = new XMLHttpRequest();
  const promise = new Promise<Dataset>((resolve, reject) => {
    xhr.open("POST", apiUrl("/upload"));
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (ev) => {
      if (ev.lengthComputable && ev.total > 0) onProgress(ev.loaded / ev.total);
    };
    xhr.onload = () => {
      let body: unknown = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        /* not JSON */
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(1);
        resolve(body as Dataset);
      } else reject(parseError(xhr.status, body));
    };
    xhr.onerror = () =>
      reject(new ApiError(0, "network", "The upload failed: the connection to the service was lost.",
        "Check that the service is running, then try again."));
    xhr.onabort = () => reject(new ApiError(0, "aborted", "The upload was cancelled."));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
  return { promise, abort: () => xhr.abort() };
}

/** Fetch the annotated dataset with the key and hand it to the browser as a file download. */
export async function downloadResult(runId: string, format: "h5ad" | "csv" | "parquet"): Promise<void> {
  let res: Response;
  try {
    res = await fetch(apiUrl(`/download/${encodeURIComponent(runId)}?format=${format}`), { headers: authHeaders() });
  } catch {
    throw new ApiError(0, "network", "Could not reach the cellfoundry service.", "Check that it is running.");
  }
  if (!res.ok) throw await errorFromResponse(res);
  const blob = await res.blob();
  const cd = res.headers.get("Content-Disposition") ?? "";
  const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(cd);
  const name = m ? decodeURIComponent(m[1]) : `cellfoundry-${runId}.${format}`;
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
