import { useEffect, useMemo, useState } from "react";
import { api } from "../api/client";
import type { Application, Dataset, Model, ResultSummary, Run } from "../api/types";
import { TERMINAL_STATES } from "../api/types";
import { ParamsForm, defaultParams, validateParams } from "../components/ParamsForm";
import { Plot } from "../components/Plot";
import { confusionFigure, reliabilityFigure } from "../components/charts";
import { Alert, Badge, Button, Card, Empty, ErrorView, Field, NeedKey, Progress, Spinner } from "../components/ui";
import { recentDatasets } from "../lib/datasets";
import { loadAllCells } from "../lib/enrich";
import {
  calibrationRows, confusedPairs, isEvaluation, methodFigures, referenceRows, reliabilityFromCells, squareConfusion, summaryRows,
  type ReliabilityCurve,
} from "../lib/evaluation";
import { num, pct } from "../lib/format";
import { useApiKey, useAsync, useInterval, useSubmitRun } from "../lib/hooks";
import { runProgress } from "../lib/runs";
import { computeVerdict, primaryMetric } from "../lib/verdict";
import { stateTone } from "./RunPage";

export function isEvaluationApp(a: Application): boolean {
  return /eval|fine|tun|compar/i.test(`${a.id} ${a.name}`);
}

export function EvaluationPage({ runId }: { runId?: string }) {
  const key = useApiKey();
  return (
    <>
      <div className="page-head">
        <h1>Evaluation & fine-tuning</h1>
        <p>Compare a LoRA fine-tune with the baselines over several seeds, on data with known labels.</p>
      </div>
      {!key ? <NeedKey what="Evaluations" /> : runId ? <EvaluationRun runId={runId} /> : <><Launch /><RecentEvaluations /></>}
    </>
  );
}

function Launch() {
  const apps = useAsync<Application[]>((s) => api.applications(s), []);
  const evalApps = apps.data?.filter(isEvaluationApp) ?? [];
  const local = useMemo(() => recentDatasets(), []);
  const remote = useAsync<Dataset[]>((s) => api.datasets(s), []);
  const datasets = remote.status === "ready" ? remote.data : local;
  const [appId, setAppId] = useState("");
  const [datasetId, setDatasetId] = useState(local[0]?.id ?? "");
  const [modelId, setModelId] = useState("");
  const [params, setParams] = useState<Record<string, unknown>>({});
  const { busy, error: err, submit: submitRun } = useSubmitRun((id) => `/evaluation/${encodeURIComponent(id)}`);
  const app = evalApps.find((a) => a.id === appId) ?? null;
  const models = useAsync<Model[]>((s) => (appId ? api.applicationModels(appId, s) : Promise.resolve([])), [appId]);
  const dataset = datasets.find((d) => d.id === datasetId) ?? null;
  useEffect(() => {
    if (!datasetId && datasets.length) setDatasetId(datasets[0].id);
  }, [datasetId, datasets]);
  useEffect(() => {
    if (!appId && evalApps.length) setAppId(evalApps[0].id);
  }, [appId, evalApps]);
  useEffect(() => {
    if (app) setParams(defaultParams(app.params));
  }, [app]);
  useEffect(() => {
    if (models.status === "ready" && !models.data.some((m) => m.id === modelId)) setModelId(models.data.find((m) => m.ready)?.id ?? "");
  }, [models.status, models.data, modelId]);
  const paramErrors = app ? validateParams(app.params, params) : {};
  const submit = async () => {
    if (app) await submitRun({ dataset_id: datasetId.trim(), model_id: modelId, application_id: app.id, params });
  };
  return (
    <Card title="Launch a comparison">
      {apps.status === "loading" && <Spinner label="Loading applications…" />}
      {apps.status === "error" && <ErrorView error={apps.error} onRetry={apps.reload} />}
      {apps.status === "ready" && evalApps.length === 0 && (
        <Empty title="The service offers no evaluation or fine-tuning application" />
      )}
      {apps.status === "ready" && evalApps.length > 0 && (
        <form onSubmit={(e) => { e.preventDefault(); void submit(); }}>
          <div className="grid grid-3">
            <Field label="Application" htmlFor="eval-app">
              <select id="eval-app" value={appId} onChange={(e) => setAppId(e.target.value)}>
                {evalApps.map((a) => <option key={a.id} value={a.id}>{a.name}</option>)}
              </select>
            </Field>
            <Field label="Labelled dataset" htmlFor="eval-dataset" help={datasets.length ? undefined : <>Upload labelled data first (<a href="#/upload">Upload</a>), or paste a dataset id.</>}>
              {datasets.length ? (
                <select id="eval-dataset" value={datasetId} onChange={(e) => setDatasetId(e.target.value)}>
                  {datasets.map((d) => <option key={d.id} value={d.id}>{d.filename} ({d.id})</option>)}
                </select>
              ) : (
                <input id="eval-dataset" type="text" value={datasetId} onChange={(e) => setDatasetId(e.target.value)} />
              )}
            </Field>
            <Field label="Model" htmlFor="eval-model" help={models.status === "error" ? "Could not load the models." : undefined}>
              <select id="eval-model" value={modelId} onChange={(e) => setModelId(e.target.value)}>
                {(models.data ?? []).map((m) => <option key={m.id} value={m.id} disabled={!m.ready}>{m.name} ({m.family}){m.ready ? "" : " — not ready"}</option>)}
              </select>
            </Field>
          </div>
          {app && <ParamsForm specs={app.params} values={params} onChange={setParams} errors={paramErrors} obsColumns={dataset?.report.obs_columns} />}
          {err != null && <ErrorView error={err} title="The service refused this comparison" />}
          <Button type="submit" disabled={busy || !datasetId || !modelId || Object.keys(paramErrors).length > 0}>
            {busy ? "Submitting…" : "Launch comparison"}
          </Button>
        </form>
      )}
    </Card>
  );
}

function RecentEvaluations() {
  const runs = useAsync((s) => api.runs({ limit: 100 }, s), []);
  const apps = useAsync<Application[]>((s) => api.applications(s), []);
  const evalIds = new Set((apps.data ?? []).filter(isEvaluationApp).map((a) => a.id));
  const items = (runs.data?.items ?? []).filter((r) => evalIds.has(r.application_id));
  return (
    <Card title="Your evaluations">
      {(runs.status === "loading" || apps.status === "loading") && <Spinner label="Loading evaluations…" />}
      {runs.status === "error" && <ErrorView error={runs.error} onRetry={runs.reload} />}
      {runs.status === "ready" && apps.status === "ready" && items.length === 0 && <Empty title="No evaluations yet">Launch one above.</Empty>}
      {items.length > 0 && (
        <table aria-label="Evaluation runs">
          <thead><tr><th>Run</th><th>Status</th><th>Application</th><th>Model</th></tr></thead>
          <tbody>
            {items.map((r) => (
              <tr key={r.id}>
                <td className="mono"><a href={`#/evaluation/${encodeURIComponent(r.id)}`}>{r.id}</a></td>
                <td><Badge tone={stateTone(r.state)}>{r.state}</Badge></td>
                <td>{r.application_id}</td>
                <td>{r.model_id}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Card>
  );
}

function EvaluationRun({ runId }: { runId: string }) {
  const [status, setStatus] = useState<Run | null>(null);
  const first = useAsync((s) => api.status(runId, s).then((st) => { setStatus(st); return st; }), [runId]);
  const terminal = status ? TERMINAL_STATES.includes(status.state) : false;
  useInterval(() => { api.status(runId).then(setStatus, () => undefined); }, 1500, first.status === "ready" && !terminal);
  if (first.status === "loading" && !status) return <Spinner label="Loading the evaluation…" />;
  if (first.status === "error") return <ErrorView error={first.error} onRetry={first.reload} title="Could not load this evaluation" />;
  if (!status) return null;
  return (
    <>
      <p><a href="#/evaluation">← All evaluations</a> · <a href={`#/runs/${encodeURIComponent(runId)}`}>Run page</a></p>
      {!terminal && (
        <Card title={`Evaluation ${runId}`}>
          <div className="row gap"><Badge tone={stateTone(status.state)}>{status.state}</Badge><span>{status.stage}</span></div>
          <Progress value={runProgress(status)} label="Evaluation progress" />
          <p className="small muted">The report appears here when the evaluation finishes.</p>
        </Card>
      )}
      {status.state === "failed" && (
        <Alert tone="error" title="This evaluation failed">
          <p data-testid="run-error">{status.error?.message ?? "The service gave no reason."}</p>
          {status.error?.hint && <p className="hint"><strong>Fix:</strong> {status.error.hint}</p>}
        </Alert>
      )}
      {status.state === "cancelled" && <Alert tone="warn" title="This evaluation was cancelled." />}
      {status.state === "succeeded" && <EvaluationResults runId={runId} />}
    </>
  );
}

function EvaluationResults({ runId }: { runId: string }) {
  const res = useAsync(async (s) => {
    const r = await api.results(runId, { limit: 1 }, s);
    const modelName = r.summary.model ?? r.run.model_id;
    // no reliability bins from the service: compute them from the stored per-cell predictions
    let reliability: ReliabilityCurve[] = [];
    if (isEvaluation(r.summary) && r.cells?.total) {
      const rows = await loadAllCells((offset, limit, sig) => api.results(runId, { offset, limit }, sig), r.cells.total, s);
      const curve = rows ? reliabilityFromCells(rows, modelName) : null;
      if (curve) reliability = [curve];
    }
    return { summary: r.summary, modelName, reliability };
  }, [runId]);
  if (res.status === "loading") return <Spinner label="Loading the report…" />;
  if (res.status === "error") return <ErrorView error={res.error} onRetry={res.reload} title="Could not load the report" />;
  if (!isEvaluation(res.data.summary)) return <Empty title="This run has no evaluation report">It is not an evaluation or fine-tuning run. <a href={`#/runs/${encodeURIComponent(runId)}`}>Open its run page.</a></Empty>;
  return <EvaluationReport summary={res.data.summary} modelName={res.data.modelName} reliability={res.data.reliability} />;
}

/** An evaluation run's report from its stored summary; ``reliability`` from its per-cell predictions. */
export function EvaluationReport({ summary: s, modelName, reliability = [] }: { summary: ResultSummary; modelName: string; reliability?: ReliabilityCurve[] }) {
  const rows = summaryRows(s, modelName);
  const verdict = computeVerdict(rows);
  const metrics = [...new Set(rows.map((r) => r.metric))];
  const models = [...new Set(rows.map((r) => r.model))];
  const main = primaryMetric(rows);
  const cell = (model: string, metric: string) => rows.find((r) => r.model === model && r.metric === metric);
  const m = s.metrics;
  const ontology = m?.ontology;
  const called = m?.coverage != null ? m : null;
  const reference = referenceRows(m);
  const perMethod = methodFigures(m);
  const perMethodMetrics = [...new Set(perMethod.flatMap((p) => p.figures.map((f) => f.metric)))];
  const confusion = s.confusion ? [squareConfusion(s.confusion, s.model ?? modelName)] : [];
  const pairs = confusedPairs(s);
  const calibration = calibrationRows(s);
  const labelOverlap = m?.share_of_cells_with_model_labels;
  return (
    <div data-testid="evaluation-report">
      {(s.report?.warnings ?? []).map((w) => <Alert key={w} tone="warn" title="Read this first">{w}</Alert>)}
      {labelOverlap != null && labelOverlap < 0.5 && (
        <Alert tone="warn" title="The model and the data name cell types differently">
          Only {pct(labelOverlap)} of the cells carry a true label that is one of the model's cell types, so the
          model's scores mostly measure the naming mismatch, not its quality. Compare it on data labelled with its own
          cell types, or fine-tune it on these labels.
        </Alert>
      )}
      <Card title="Verdict">
        {verdict ? (
          <Alert tone={verdict.outcome === "better" ? "ok" : verdict.outcome === "worse" ? "warn" : "info"}>
            <p className="verdict" data-testid="verdict">{verdict.text}</p>
          </Alert>
        ) : <Empty title="No summary numbers to judge" />}
      </Card>
      <Card title="Summary (mean ± std over seeds)">
        {rows.length === 0 ? <Empty title="No summary rows" /> : (
          <div className="table-wrap">
            <table aria-label="Summary of metrics per model" data-testid="summary-table">
              <thead><tr><th>Model</th>{metrics.map((m) => <th key={m} className="num">{m.replace(/_/g, " ")}{m === main ? " ★" : ""}</th>)}<th className="num">Seeds</th></tr></thead>
              <tbody>
                {models.map((model) => (
                  <tr key={model}>
                    <td>{model}{verdict?.best.model === model && <> <Badge tone="ok">best</Badge></>}</td>
                    {metrics.map((m) => {
                      const r = cell(model, m);
                      return <td key={m} className="num">{r ? (r.n_seeds > 1 ? `${num(r.mean)} ± ${num(r.std)}` : num(r.mean)) : "—"}</td>;
                    })}
                    <td className="num">{Math.max(...rows.filter((r) => r.model === model).map((r) => r.n_seeds))}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        {main && <p className="small muted">★ the metric the verdict uses. ± is the standard deviation over seeds (shown when there are two or more).</p>}
      </Card>
      {ontology && (
        <Card title="Cell Ontology-aware score">
          <table aria-label="Cell Ontology-aware scores" data-testid="ontology-scores">
            <thead><tr><th></th><th className="num">All cells (forced choice)</th><th className="num">Called cells</th></tr></thead>
            <tbody>
              <tr><td>Ontology-aware accuracy</td><td className="num">{num(ontology.ontology_accuracy)}</td><td className="num">{num(ontology.called_ontology_accuracy)}</td></tr>
              <tr><td>Ontology score</td><td className="num">{num(ontology.ontology_score)}</td><td className="num">{num(ontology.called_ontology_score)}</td></tr>
              <tr><td>Ontology score, mean over true terms</td><td className="num">{num(ontology.ontology_macro_score)}</td><td className="num">—</td></tr>
              <tr><td>Share of cells the model called</td><td className="num">{pct(ontology.coverage)}</td><td className="num">—</td></tr>
              <tr><td>Share of cells whose true term the model can express</td><td className="num">{pct(ontology.expressible_share)}</td><td className="num">—</td></tr>
              <tr><td>Share of cells called with a coarser term</td><td className="num">{pct(ontology.coarser_share)}</td><td className="num">—</td></tr>
            </tbody>
          </table>
          <p className="small muted" data-testid="ontology-rule">A call is right when it is the true Cell Ontology term or a finer one; a coarser call gets depth(call)/depth(true) credit; another lineage, Unknown or no term gets 0.</p>
        </Card>
      )}
      {(called || reference.length > 0) && (
        <Card title="Forced choice, called cells and reference rows">
          <table aria-label="Forced-choice and called-cell figures with reference rows" data-testid="called-figures">
            <thead><tr><th></th><th className="num">Accuracy</th><th className="num">Macro F1</th><th className="num">Coverage</th><th className="num">Called-cell accuracy</th><th className="num">Called-cell macro F1</th></tr></thead>
            <tbody>
              {called && (
                <tr><td>The model (all evaluated cells)</td><td className="num">{num(called.accuracy)}</td><td className="num">{num(called.macro_f1)}</td><td className="num">{pct(called.coverage)}</td><td className="num">{num(called.called_accuracy)}</td><td className="num">{num(called.called_macro_f1)}</td></tr>
              )}
              {reference.map((r) => (
                <tr key={r.name}><td>{r.name === "majority" ? "Majority class" : r.name === "chance" ? "Chance (label frequencies)" : r.name}{r.label ? ` (${r.label})` : ""}</td><td className="num">{num(r.accuracy)}</td><td className="num">{num(r.macro_f1)}</td><td className="num">—</td><td className="num">—</td><td className="num">—</td></tr>
              ))}
            </tbody>
          </table>
          <p className="small muted">Forced choice scores every cell (an Unknown call counts as wrong); called-cell figures score only the cells the model called. The majority-class and chance rows are what a model without information would reach on these cells.</p>
        </Card>
      )}
      {perMethod.length > 0 && (
        <Card title="Each method's own figures (mean ± std over seeds)">
          <div className="table-wrap">
            <table aria-label="Each method's own figures" data-testid="per-method">
              <thead><tr><th>Method</th>{perMethodMetrics.map((m) => <th key={m} className="num">{m.replace(/_/g, " ")}</th>)}</tr></thead>
              <tbody>
                {perMethod.map((pm) => (
                  <tr key={pm.method}>
                    <td>{pm.method}</td>
                    {perMethodMetrics.map((metric) => {
                      const f = pm.figures.find((x) => x.metric === metric);
                      return <td key={metric} className="num">{f ? (f.std != null ? `${num(f.mean)} ± ${num(f.std)}` : num(f.mean)) : "—"}</td>;
                    })}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <p className="small muted">Each method is trained from this model on the dataset's own training split: these are the methods' figures, not the stored model's.</p>
        </Card>
      )}
      <Card title="Confusion matrices (share of each true type)">
        {confusion.length === 0 ? <Empty title="No confusion matrices" /> : (
          <div className={`grid ${confusion.length > 1 ? "grid-2" : ""}`}>
            {confusion.map((c) => (
              <Plot key={c.model} label={`Confusion matrix of ${c.model}`} testId={`confusion-${c.model}`} {...confusionFigure(c)} height={440} />
            ))}
          </div>
        )}
      </Card>
      <div className="grid grid-2">
        <Card title="Most-confused pairs">
          {pairs.length === 0 ? <Empty title="No confusions">Every cell was assigned its true type.</Empty> : (
            <table aria-label="Most-confused pairs" data-testid="most-confused">
              <thead><tr>{pairs.some((p) => p.model) && <th>Model</th>}<th>True type</th><th>Predicted as</th><th className="num">Cells</th></tr></thead>
              <tbody>
                {pairs.slice(0, 15).map((p, i) => (
                  <tr key={i}>{pairs.some((q) => q.model) && <td>{p.model}</td>}<td>{p.true}</td><td>{p.predicted}</td><td className="num">{p.count}</td></tr>
                ))}
              </tbody>
            </table>
          )}
        </Card>
        <Card title="Reliability diagram">
          {reliability.length === 0 && calibration.length > 0 && (
            <table aria-label="Calibration error per model" data-testid="calibration">
              <thead><tr><th>Model</th><th className="num">ECE before temperature</th><th className="num">ECE after</th></tr></thead>
              <tbody>{calibration.map((c) => <tr key={c.model}><td>{c.model}</td><td className="num">{num(c.ece_before)}</td><td className="num">{num(c.ece_after)}</td></tr>)}</tbody>
            </table>
          )}
          {reliability.length === 0 && !calibration.length ? <Empty title="No calibration data" /> : reliability.length === 0 ? null : (
            <Plot label="Reliability diagram: accuracy against confidence" testId="reliability" {...reliabilityFigure(reliability)} height={400} />
          )}
        </Card>
      </div>
    </div>
  );
}
