import { api } from "../api/client";
import type { Application, Model } from "../api/types";
import { Badge, Card, Empty, ErrorView, Spinner } from "../components/ui";
import { bytes, count, idKindName, num } from "../lib/format";
import { useAsync } from "../lib/hooks";
import { modelMetrics } from "../lib/models";

export function representationNeed(rep: string | null | undefined): string {
  if (rep === "counts") return "raw counts";
  if (rep === "lognorm") return "log-normalised values (raw counts also work)";
  return rep ?? "any expression matrix";
}

function ApplicationCard({ app, models }: { app: Application; models: Model[] }) {
  const serving = models.filter((m) => m.applications.includes(app.id));
  const ready = serving.filter((m) => m.ready);
  return (
    <Card title={app.name} className="app-card">
      <p>{app.description}</p>
      <p className="small muted">
        {serving.length === 0
          ? "No registered model serves this yet."
          : `${ready.length} of ${serving.length} model${serving.length === 1 ? "" : "s"} ready: ${serving.map((m) => m.name).join(", ")}`}
      </p>
      {app.params.length > 0 && (
        <p className="small muted">Parameters: {app.params.map((p) => p.name).join(", ")}</p>
      )}
      <a className="btn btn-secondary" href={`#/new?app=${encodeURIComponent(app.id)}`}>New run: {app.name}</a>
    </Card>
  );
}

function ModelCard({ model, apps }: { model: Model; apps: Application[] }) {
  const appNames = model.applications.map((id) => apps.find((a) => a.id === id)?.name ?? id);
  const req = model.requirements;
  const metrics = modelMetrics(model);
  return (
    <Card
      title={model.name}
      className="model-card"
      actions={model.ready ? <Badge tone="ok">Ready</Badge> : <Badge tone="warn">Not ready</Badge>}
    >
      <dl className="kv">
        <dt>Family</dt><dd><Badge tone="info">{model.family}</Badge></dd>
        <dt>Model id</dt><dd className="mono">{model.id}</dd>
        <dt>Serves</dt><dd>{appNames.length ? appNames.join(", ") : "—"}</dd>
        <dt>Parameters</dt><dd>{req.n_parameters ? count(req.n_parameters) : "—"}</dd>
        <dt>Embedding size</dt><dd>{req.embedding_dim ? count(req.embedding_dim) : "—"}</dd>
        <dt>Input</dt>
        <dd>
          {representationNeed(req.representation)}
          {req.gene_key_kind ? `; genes as ${idKindName(req.gene_key_kind)}` : ""}
          {` (${count(req.n_genes ?? model.n_genes)} genes)`}
        </dd>
        <dt>Size on disk</dt><dd>{bytes(model.size_bytes)}</dd>
        {model.classes && model.classes.length > 0 && (<><dt>Cell types</dt><dd>{model.classes.length}: {model.classes.slice(0, 6).join(", ")}{model.classes.length > 6 ? ", …" : ""}</dd></>)}
      </dl>
      {!model.ready && <p className="small"><strong>Why not ready:</strong> {model.status}</p>}
      <h3>Measured metrics</h3>
      {metrics.length === 0 ? (
        <p className="small muted">No stored evaluation yet. Run an evaluation to measure this model.</p>
      ) : (
        <table aria-label={`Metrics of ${model.name}`}>
          <thead><tr><th>Metric</th><th className="num">Value</th><th>Source</th></tr></thead>
          <tbody>
            {metrics.map((m, i) => (
              <tr key={`${m.name}-${i}`}>
                <td>{m.name.replace(/_/g, " ")}</td>
                <td className="num">{num(m.value)}</td>
                <td>
                  {m.evaluation_run_id ? (
                    <a href={`#/evaluation/${encodeURIComponent(m.evaluation_run_id)}`}>evaluation {m.evaluation_run_id}</a>
                  ) : (
                    <span className="muted">{m.source}</span>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Card>
  );
}

export function ModelsPage() {
  const state = useAsync((s) => Promise.all([api.applications(s), api.models(s)]), []);
  return (
    <>
      <div className="page-head">
        <h1>Models & applications</h1>
        <p>What this platform can do, and the models that do it. No API key needed here.</p>
      </div>
      {state.status === "loading" && <Spinner label="Loading applications and models…" />}
      {state.status === "error" && <ErrorView error={state.error} onRetry={state.reload} title="Could not load the catalogue" />}
      {state.status === "ready" && (
        <>
          <h2 className="section-title">Applications</h2>
          {state.data[0].length === 0 ? (
            <Empty title="No applications">The service lists no applications.</Empty>
          ) : (
            <div className="grid grid-auto" style={{ margin: "10px 0 24px" }}>
              {state.data[0].map((a) => <ApplicationCard key={a.id} app={a} models={state.data[1]} />)}
            </div>
          )}
          <h2 className="section-title">Models</h2>
          {state.data[1].length === 0 ? (
            <Empty title="No models registered">
              Register one with <code>cellfoundry models import</code>, or start <code>cellfoundry serve</code> once to get the demo model.
            </Empty>
          ) : (
            <div className="grid grid-wide" style={{ marginTop: 10 }}>
              {state.data[1].map((m) => <ModelCard key={m.id} model={m} apps={state.data[0]} />)}
            </div>
          )}
        </>
      )}
    </>
  );
}
