import { useEffect, useMemo, useState } from "react";
import { api } from "../api/client";
import type { Application, Dataset, Model } from "../api/types";
import { ParamsForm, defaultParams, validateParams } from "../components/ParamsForm";
import { ConsensusModels, OTHER_MODELS } from "../components/ConsensusModels";
import { CoverageBars } from "../components/ReportView";
import { Alert, Badge, Button, Card, Empty, ErrorView, Field, NeedKey, Spinner } from "../components/ui";
import { coverageFor, coverageOk, recentDatasets } from "../lib/datasets";
import { count, pct } from "../lib/format";
import { useApiKey, useAsync, useSubmitRun } from "../lib/hooks";

const STEPS = ["Data", "Application", "Model", "Parameters", "Review"] as const;

/** Why a model cannot run this data (null when it can). */
export function modelBlocker(model: Model, dataset: Dataset | null): string | null {
  if (!model.ready) return `Not ready: ${model.status}`;
  const cov = coverageFor(dataset?.report, model.id);
  if (cov && !coverageOk(cov)) return `Only ${pct(cov.fraction_present)} of its genes are in this data.`;
  if (model.requirements.representation === "counts" && dataset && !dataset.report.chosen?.counts)
    return "It needs raw counts and this data has none.";
  return null;
}

export function NewRunPage({ initialDataset, initialApp }: { initialDataset?: string; initialApp?: string }) {
  const key = useApiKey();
  const local = useMemo(() => recentDatasets(), []);
  const remote = useAsync<Dataset[]>((s) => api.datasets(s), [key]);
  const datasets = remote.status === "ready" ? remote.data : local;
  const [step, setStep] = useState(0);
  const [datasetId, setDatasetId] = useState(initialDataset ?? local[0]?.id ?? "");
  const [appId, setAppId] = useState(initialApp ?? "");
  const [modelId, setModelId] = useState("");
  const [params, setParams] = useState<Record<string, unknown>>({});
  const { busy: submitting, error: submitError, submit: submitRun } = useSubmitRun((id) => `/runs/${encodeURIComponent(id)}`);
  const apps = useAsync<Application[]>((s) => api.applications(s), []);
  const app = apps.data?.find((a) => a.id === appId) ?? null;
  const models = useAsync<Model[]>((s) => (appId ? api.applicationModels(appId, s) : Promise.resolve([])), [appId]);
  const dataset = datasets.find((d) => d.id === datasetId) ?? null;

  useEffect(() => {
    if (!datasetId && datasets.length) setDatasetId(datasets[0].id);
  }, [datasetId, datasets]);
  useEffect(() => {
    if (initialDataset) setStep(initialApp ? 2 : 1);
  }, [initialDataset, initialApp]);
  useEffect(() => {
    if (app) setParams(defaultParams(app.params));
  }, [app]);
  useEffect(() => {
    // pick the first usable model when the list arrives
    if (models.status === "ready" && !models.data.some((m) => m.id === modelId)) {
      const first = models.data.find((m) => !modelBlocker(m, dataset));
      setModelId(first?.id ?? "");
    }
  }, [models.status, models.data, dataset, modelId]);

  if (!key) return (<><Head /><NeedKey what="Datasets and runs" /></>);

  const paramErrors = app ? validateParams(app.params, params) : {};
  const multi = app?.params.some((p) => p.name === OTHER_MODELS) ?? false;
  const others = Array.isArray(params[OTHER_MODELS]) ? (params[OTHER_MODELS] as string[]).filter((id) => id !== modelId) : [];
  const setOthers = (ids: string[]) => setParams((p) => ({ ...p, [OTHER_MODELS]: ids.length ? ids : undefined }));
  const blocked = dataset?.report.messages.some((m) => m.level === "error") ?? false;
  const canNext = [
    Boolean(datasetId.trim()) && !blocked,
    Boolean(app),
    Boolean(modelId) && (!multi || others.length > 0),
    Object.keys(paramErrors).length === 0,
    true,
  ][step];

  const submit = async () => {
    if (app) await submitRun({ dataset_id: datasetId.trim(), model_id: modelId, application_id: app.id, params: multi ? { ...params, [OTHER_MODELS]: others } : params });
  };

  return (
    <>
      <Head />
      <ol className="steps" aria-label="Steps">
        {STEPS.map((s, i) => (
          <li key={s} aria-current={i === step ? "step" : undefined} className={i < step ? "done" : undefined}>
            {i + 1}. {s}
          </li>
        ))}
      </ol>

      {step === 0 && (
        <Card title="Which data?">
          {remote.status === "loading" && <Spinner label="Loading your datasets…" />}
          {remote.status === "error" && <Alert tone="warn" title="Could not list your datasets on the service">Showing the ones uploaded from this browser.</Alert>}
          {remote.status !== "loading" && datasets.length === 0 && !initialDataset ? (
            <Empty title="No uploaded data yet">
              <a className="btn btn-primary" href="#/upload">Upload a dataset</a>
              <p>or enter the id of a dataset uploaded elsewhere below.</p>
            </Empty>
          ) : (
            <fieldset>
              <legend className="small muted">Your datasets</legend>
              {datasets.map((d) => (
                <label className="choice" key={d.id}>
                  <input type="radio" name="dataset" value={d.id} checked={datasetId === d.id} onChange={() => setDatasetId(d.id)} />
                  <strong>{d.filename}</strong> · {count(d.n_cells)} cells × {count(d.n_genes)} genes
                  <span className="mono muted"> {d.id}</span>
                </label>
              ))}
            </fieldset>
          )}
          <Field label="Dataset id" htmlFor="dataset-id" help="Filled in when you pick a dataset above.">
            <input id="dataset-id" type="text" value={datasetId} onChange={(e) => setDatasetId(e.target.value)} />
          </Field>
          {blocked && <Alert tone="error" title="This dataset has blocking problems">Open the Upload page to see them and how to fix them.</Alert>}
        </Card>
      )}

      {step === 1 && (
        <Card title="What do you want to do?">
          {apps.status === "loading" && <Spinner label="Loading applications…" />}
          {apps.status === "error" && <ErrorView error={apps.error} onRetry={apps.reload} />}
          {apps.status === "ready" && (
            <fieldset>
              <legend className="small muted">Applications</legend>
              {apps.data.map((a) => (
                <label className="choice" key={a.id}>
                  <input type="radio" name="application" value={a.id} checked={appId === a.id} onChange={() => setAppId(a.id)} />
                  <strong>{a.name}</strong>
                  <div className="small muted">{a.description}</div>
                </label>
              ))}
            </fieldset>
          )}
        </Card>
      )}

      {step === 2 && (
        <Card title={`Which model${app ? ` for ${app.name.toLowerCase()}` : ""}?`}>
          {models.status === "loading" && <Spinner label="Loading models…" />}
          {models.status === "error" && <ErrorView error={models.error} onRetry={models.reload} />}
          {models.status === "ready" && models.data.length === 0 && (
            <Empty title="No model serves this application">Register one on the server (<code>cellfoundry models import</code>).</Empty>
          )}
          {models.status === "ready" && models.data.length > 0 && (
            <fieldset>
              <legend className="small muted">Only models that serve this application and can read this data can be chosen.</legend>
              {models.data.map((m) => {
                const why = modelBlocker(m, dataset);
                const cov = coverageFor(dataset?.report, m.id);
                return (
                  <label className={`choice ${why ? "disabled" : ""}`} key={m.id}>
                    <input type="radio" name="model" value={m.id} disabled={Boolean(why)} checked={modelId === m.id}
                      onChange={() => setModelId(m.id)} aria-describedby={`why-${m.id}`} />
                    <strong>{m.name}</strong> <Badge tone="info">{m.family}</Badge>{" "}
                    {cov && <span className="small">coverage {pct(cov.fraction_present)}</span>}
                    <div className="small muted" id={`why-${m.id}`}>{why ?? "Can run on this data."}</div>
                  </label>
                );
              })}
            </fieldset>
          )}
          {multi && models.status === "ready" && (
            <ConsensusModels models={models.data} modelId={modelId} chosen={others} onChange={setOthers}
              blocker={(m) => modelBlocker(m, dataset)} />
          )}
          {dataset && dataset.report.coverage.length > 0 && (<><h3>Gene coverage of this data</h3><CoverageBars report={dataset.report} models={models.data} /></>)}
        </Card>
      )}

      {step === 3 && app && (
        <Card title="Parameters">
          <ParamsForm specs={app.params.filter((p) => p.name !== OTHER_MODELS)} values={params} onChange={setParams} errors={paramErrors} obsColumns={dataset?.report.obs_columns} />
        </Card>
      )}

      {step === 4 && app && (
        <Card title="Review and submit">
          <dl className="kv">
            <dt>Data</dt><dd>{dataset ? `${dataset.filename} (${dataset.id})` : datasetId}</dd>
            <dt>Application</dt><dd>{app.name}</dd>
            <dt>Model</dt><dd>{models.data?.find((m) => m.id === modelId)?.name ?? modelId}</dd>
            {multi && <><dt>Combined with</dt><dd data-testid="review-others">{others.join(", ")}</dd></>}
            <dt>Parameters</dt><dd className="mono">{JSON.stringify(params)}</dd>
          </dl>
          {submitError != null && <ErrorView error={submitError} title="The service refused this run" />}
          <Button onClick={submit} disabled={submitting} data-testid="submit-run">{submitting ? "Submitting…" : "Submit run"}</Button>
        </Card>
      )}

      <div className="row gap">
        <Button variant="secondary" disabled={step === 0} onClick={() => setStep((s) => s - 1)}>Back</Button>
        {step < STEPS.length - 1 && (
          <Button disabled={!canNext} onClick={() => setStep((s) => s + 1)}>Next</Button>
        )}
      </div>
    </>
  );
}

function Head() {
  return (
    <div className="page-head">
      <h1>New run</h1>
      <p>Choose the data, what to do with it, the model and its parameters.</p>
    </div>
  );
}
