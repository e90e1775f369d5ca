import { useState } from "react";
import { api } from "../api/client";
import type { RunPage, RunState } from "../api/types";
import { RUN_STATES } from "../api/types";
import { Badge, Card, Empty, ErrorView, Field, NeedKey, Pager, Spinner } from "../components/ui";
import { duration, when } from "../lib/format";
import { useApiKey, useAsync, useInterval } from "../lib/hooks";
import { runProgress } from "../lib/runs";
import { stateTone } from "./RunPage";

const LIMIT = 20;

export function RunsPage() {
  const key = useApiKey();
  const [state, setState] = useState<RunState | "">("");
  const [offset, setOffset] = useState(0);
  const runs = useAsync<RunPage>((s) => api.runs({ state, offset, limit: LIMIT }, s), [state, offset, key]);
  const active = runs.status === "ready" && runs.data.items.some((r) => r.state === "queued" || r.state === "running");
  useInterval(runs.reload, 3000, Boolean(key) && active);
  return (
    <>
      <div className="page-head">
        <h1>Runs</h1>
        <p>Every run you submitted, newest first.</p>
      </div>
      {!key ? <NeedKey what="Runs" /> : (
        <Card>
          <div className="toolbar">
            <Field label="Status" htmlFor="state-filter">
              <select id="state-filter" value={state} onChange={(e) => { setState(e.target.value as RunState | ""); setOffset(0); }}>
                <option value="">All</option>
                {RUN_STATES.map((s) => <option key={s} value={s}>{s}</option>)}
              </select>
            </Field>
            <a className="btn btn-primary" href="#/new">New run</a>
          </div>
          {runs.status === "loading" && <Spinner label="Loading runs…" />}
          {runs.status === "error" && <ErrorView error={runs.error} onRetry={runs.reload} title="Could not load runs" />}
          {runs.status === "ready" && runs.data.items.length === 0 && (
            <Empty title={state ? `No ${state} runs` : "No runs yet"}>
              {state ? "Try another status filter." : <a href="#/upload">Upload data to start one.</a>}
            </Empty>
          )}
          {runs.status === "ready" && runs.data.items.length > 0 && (
            <>
              <div className="table-wrap">
                <table aria-label="Runs" data-testid="runs-table">
                  <thead><tr><th>Run</th><th>Status</th><th>Application</th><th>Model</th><th>Created</th><th>Duration</th><th>Progress / error</th></tr></thead>
                  <tbody>
                    {runs.data.items.map((r) => (
                      <tr key={r.id}>
                        <td className="mono"><a href={`#/runs/${encodeURIComponent(r.id)}`}>{r.id}</a></td>
                        <td><Badge tone={stateTone(r.state)}>{r.state}</Badge></td>
                        <td>{r.application_id ?? "—"}</td>
                        <td>{r.model_id ?? "—"}</td>
                        <td>{when(r.created_at)}</td>
                        <td>{duration(r.started_at, r.finished_at)}</td>
                        <td className="small">{r.state === "failed" ? r.error?.message ?? "failed" : `${Math.round(runProgress(r))}% ${r.stage}`}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
              <Pager offset={offset} limit={LIMIT} total={runs.data.total} onChange={setOffset} label="Pages of runs" />
            </>
          )}
        </Card>
      )}
    </>
  );
}
