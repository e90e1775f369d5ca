import { useMemo, useRef, useState } from "react";
import { api, downloadResult } from "../api/client";
import type { CellPage, Results, Run } from "../api/types";
import { TERMINAL_STATES } from "../api/types";
import { LayoutPlot } from "../components/LayoutPlot";
import { ConsensusSummary } from "../components/ConsensusSummary";
import { EvidencePanel } from "../components/EvidencePanel";
import { LevelToggle } from "../components/LevelToggle";
import { Plot } from "../components/Plot";
import { ReferenceFit } from "../components/ReferenceFit";
import { countsFigure, histogramFigure, umapTraces, type ColorMode } from "../components/charts";
import { Alert, Badge, Button, Card, Empty, ErrorView, NeedKey, Pager, Progress, Spinner, Stat } from "../components/ui";
import { count, duration, num, pct, when } from "../lib/format";
import { isEvaluation } from "../lib/evaluation";
import { cellLabel, explained, labelSources, shownCounts, termOf, withLabelsOf } from "../lib/evidence";
import { useApiKey, useAsync, useInterval } from "../lib/hooks";
import { runProgress } from "../lib/runs";

export function stateTone(state: string): "ok" | "error" | "warn" | "info" | "neutral" {
  return state === "succeeded" ? "ok" : state === "failed" ? "error" : state === "cancelled" ? "warn" : state === "running" ? "info" : "neutral";
}

const PAGE = 25;

/** The figures shown for an annotation with true labels (``label_key``). */
const LABEL_METRICS = ["accuracy", "macro_f1", "coverage"] as const;

export function RunPage({ runId }: { runId: string }) {
  const key = useApiKey();
  const [status, setStatus] = useState<Run | null>(null);
  const [pollError, setPollError] = useState<unknown>(null);
  const [misses, setMisses] = useState(0);
  const first = useAsync(async (s) => {
    if (!key) return null;
    const st = await api.status(runId, s);
    setStatus(st);
    return st;
  }, [runId, key]);
  const terminal = status ? TERMINAL_STATES.includes(status.state) : false;
  useInterval(
    () => {
      api.status(runId).then(
        (st) => { setStatus(st); setPollError(null); setMisses(0); },
        (e) => { setPollError(e); setMisses((m) => m + 1); },
      );
    },
    1000,
    Boolean(key) && first.status === "ready" && !terminal && misses < 30,
  );

  if (!key) return (<><Head runId={runId} /><NeedKey what="Runs" /></>);
  if (first.status === "loading" && !status) return (<><Head runId={runId} /><Spinner label="Loading the run…" /></>);
  if (first.status === "error") return (<><Head runId={runId} /><ErrorView error={first.error} onRetry={first.reload} title="Could not load this run" /></>);
  if (!status) return null;

  const cancel = () => api.cancel(runId).then(setStatus, setPollError);
  return (
    <>
      <Head runId={runId} status={status} />
      <Card title="Status" actions={!terminal && <Button variant="secondary" onClick={cancel}>Cancel run</Button>}>
        <div className="row gap" style={{ marginBottom: 8 }}>
          <Badge tone={stateTone(status.state)}><span data-testid="run-state">{status.state}</span></Badge>
          <span>{status.stage ? `Stage: ${status.stage}` : ""}</span>
          <span className="muted small">{Math.round(runProgress(status))}%</span>
        </div>
        <Progress value={runProgress(status)} label="Run progress" tone={status.state === "failed" ? "error" : status.state === "succeeded" ? "ok" : "info"} />
        <dl className="kv" style={{ marginTop: 10 }}>
          <dt>Application</dt><dd>{status.application_id}</dd>
          <dt>Model</dt><dd>{status.model_id}</dd>
          <dt>Dataset</dt><dd className="mono">{status.dataset_id}</dd>
          <dt>Created</dt><dd>{when(status.created_at)}</dd>
          <dt>Started</dt><dd>{when(status.started_at)}</dd>
          <dt>Finished</dt><dd>{when(status.finished_at)}</dd>
          <dt>Duration</dt><dd>{duration(status.started_at, status.finished_at)}</dd>
        </dl>
        {pollError != null && misses >= 30 && <ErrorView error={pollError} title="Lost contact with the service" onRetry={() => setMisses(0)} />}
        {pollError != null && misses > 0 && misses < 30 && <p className="small muted">Retrying… ({misses})</p>}
      </Card>
      {status.state === "failed" && (
        <Alert tone="error" title="This run failed">
          <p data-testid="run-error">{status.error?.message ?? "The service gave no reason."}</p>
          {status.error?.hint && <p className="hint"><strong>Fix:</strong> {status.error.hint}</p>}
        </Alert>
      )}
      {status.state === "cancelled" && <Alert tone="warn" title="This run was cancelled." />}
      {(status.state === "queued" || status.state === "running") && (
        <p className="muted small" aria-live="polite">The page updates every second; results appear here when the run finishes.</p>
      )}
      {status.state === "succeeded" && <ResultsView runId={runId} />}
    </>
  );
}

function Head({ runId, status }: { runId: string; status?: Run }) {
  return (
    <div className="page-head">
      <h1>Run <span className="mono">{runId}</span></h1>
      <p>{status ? `${status.application_id} with ${status.model_id}` : "Status, results and downloads of one run."} · <a href="#/runs">All runs</a></p>
    </div>
  );
}

function ResultsView({ runId }: { runId: string }) {
  const [level, setLevel] = useState<string | null>(null);
  const res = useAsync(
    // the layout block carries confidence, top 3 and the obs columns per point: no join needed
    (s) => api.results(runId, { offset: 0, limit: PAGE, level }, s),
    [runId, level],
  );
  // the results last shown stay while another level loads, and when a level is refused (a term
  // that is not in the Cell Ontology: said beside the level entry)
  const shown = useRef<Results | null>(null);
  if (res.status === "ready") shown.current = res.data;
  const last = shown.current?.run.id === runId ? shown.current : null;
  if (res.status === "loading" && !last) return <Spinner label="Loading results…" />;
  if (res.status === "error" && !(last && level !== null)) return <ErrorView error={res.error} onRetry={res.reload} title="Could not load the results" />;
  return (
    <ResultsBody runId={runId} results={res.status === "ready" ? res.data : last!} onLevel={setLevel}
      levelError={res.status === "error" ? res.error : null} levelBusy={res.status === "loading"} />
  );
}

export function ResultsBody({ runId, results, onLevel, levelError = null, levelBusy = false }: {
  runId: string;
  results: Results;
  onLevel?: (level: string | null) => void;
  /** the last level asked for was refused */
  levelError?: unknown;
  levelBusy?: boolean;
}) {
  const s = results.summary;
  const level = results.level ?? null;
  const [selected, setSelected] = useState<number | null>(null);
  const [dlError, setDlError] = useState<unknown>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const dl = (format: "h5ad" | "csv" | "parquet") => {
    setBusy(format);
    setDlError(null);
    downloadResult(runId, format).catch(setDlError).finally(() => setBusy(null));
  };
  const labelCounts = shownCounts(results);
  const annotated = Object.keys(labelCounts).length > 0;
  const evaluation = isEvaluation(s);
  const downloads = (
    <Card title="Downloads">
      <div className="row gap">
        <Button variant="secondary" onClick={() => dl("h5ad")} disabled={busy !== null} data-testid="download-h5ad">
          {busy === "h5ad" ? "Preparing…" : "Download annotated .h5ad"}
        </Button>
        <Button variant="secondary" onClick={() => dl("csv")} disabled={busy !== null} data-testid="download-csv">
          {busy === "csv" ? "Preparing…" : "Download predictions .csv"}
        </Button>
        <Button variant="secondary" onClick={() => dl("parquet")} disabled={busy !== null}>
          {busy === "parquet" ? "Preparing…" : "Download .parquet"}
        </Button>
      </div>
      {dlError != null && <ErrorView error={dlError} title="The download failed" />}
    </Card>
  );
  if (!results.layout && !evaluation && !annotated)
    return (
      <Card title="Result">
        {s.new_model_id && (
          <Alert tone="ok" title={`A new model was registered: ${s.new_model_id}`}>
            <a href="#/models">See it on the Models page</a>; it can be chosen for new runs now.
          </Alert>
        )}
        <dl className="kv" data-testid="result-summary">
          {Object.entries(s).filter(([, v]) => v === null || typeof v !== "object").map(([k, v]) => (
            <div key={k} style={{ display: "contents" }}><dt>{k.replace(/_/g, " ")}</dt><dd>{v === null ? "—" : String(v)}</dd></div>
          ))}
        </dl>
      </Card>
    );
  if (results.layout && !results.cells && !annotated)
    return (
      <>
        <div className="stats">
          <Stat label="Cells" value={count(s.n_cells)} />
          {s.embedding_dim != null && <Stat label="Embedding size" value={count(s.embedding_dim)} />}
        </div>
        <UmapCard results={results} />
      </>
    );
  if (evaluation && !annotated)
    return (
      <>
        <Alert tone="info" title="This is an evaluation run">
          <a href={`#/evaluation/${encodeURIComponent(runId)}`}>Open its evaluation report</a> (summary, confusion matrix, most-confused pairs, reliability, verdict).
        </Alert>
        {downloads}
        <CellsTable runId={runId} initial={results.cells ?? null} />
      </>
    );
  return (
    <>
      <div className="stats">
        <Stat label="Cells" value={count(s.n_cells)} />
        <Stat label="Cell types predicted" value={count(Object.keys(labelCounts).filter((k) => k !== "Unknown").length)} />
        <Stat label="Mean confidence" value={pct(s.mean_confidence)} />
        <Stat label="Unknown" value={pct(s.unknown_share)} hint={s.unknown_threshold != null ? `confidence below ${num(s.unknown_threshold, 2)}` : undefined} />
        {s.metrics && LABEL_METRICS.map((k) => (
          <Stat key={k} label={`${k.replace(/_/g, " ")}${s.label_key ? ` vs ${s.label_key}` : ""}`} value={num(s.metrics?.[k])} />
        ))}
      </div>
      {onLevel && (
        <div className="toolbar" data-testid="level-bar">
          <LevelToggle level={level} onChange={onLevel} options={results.levels ?? []} error={levelError} busy={levelBusy} />
          {level && <span className="small muted">Counts, layout colours and cell labels are rolled up the Cell Ontology to “{levelName(results)}”.</span>}
        </div>
      )}
      <RunFacts results={results} />
      <ConsensusSummary summary={s} />
      <ReferenceFit summary={s} />
      {s.species_mapping && (
        <Alert tone="info" title={`The data's genes are ${s.species} genes`}>
          <span data-testid="species-mapping">{s.species_mapping}; the model saw these human orthologs.</span>
        </Alert>
      )}
      {evaluation && (
        <Alert tone="info" title="This run has an evaluation report">
          <a href={`#/evaluation/${encodeURIComponent(runId)}`}>Open the evaluation report</a>
        </Alert>
      )}
      {downloads}
      {results.layout ? <UmapCard results={results} onSelect={setSelected} /> : <Card title="UMAP"><Empty title="No UMAP for this run">This application does not compute an embedding.</Empty></Card>}
      <div className="grid grid-2">
        <Card title="Confidence">
          {results.layout?.confidence?.length ? (
            <Plot label="Histogram of prediction confidence with the Unknown threshold" testId="confidence-histogram"
              {...histogramFigure(results.layout.confidence, s.unknown_threshold)} height={320} />
          ) : <Empty title="No per-cell confidences" />}
          {results.layout?.sampled && <p className="small muted">From the same sample of cells as the UMAP.</p>}
        </Card>
        <Card title={level ? `Cells per type at “${levelName(results)}”` : "Cells per predicted type"}>
          {annotated ? (
            <Plot label="Number of cells per predicted type" testId="counts-bar" {...countsFigure(labelCounts)} height={320} />
          ) : <Empty title="No predictions" />}
          {level && <LevelTerms results={results} />}
        </Card>
      </div>
      <EvidencePanel runId={runId} index={selected} level={level} levelLabel={level ? levelName(results) : null} summary={s} explained={explained(results.run)} onClose={() => setSelected(null)} />
      <CellsTable runId={runId} initial={results.cells ?? null} level={level} summary={s} selected={selected} onSelect={setSelected} />
    </>
  );
}

/** The results' level in words: an offered term by its name and id ("T cell (CL:0000084)"). */
function levelName(results: Results): string {
  const level = results.level ?? "";
  const offered = results.levels?.find((o) => o.level === level && o.term);
  return offered ? `${offered.name} (${level})` : level;
}

const PANEL_MODES: Record<string, string> = {
  all_genes: "all of the model's genes are in the data",
  unobserved: "the model's genes missing from the data were treated as unobserved",
  refit: "the model was refitted on the genes the data has",
  family_default: "the model family's own handling of missing genes",
};

/** Per-run facts the service stored: species, gene panel, coverage, out-of-reference cells, CL terms. */
function RunFacts({ results }: { results: Results }) {
  const s = results.summary;
  const terms = Object.entries(s.ontology?.terms ?? {});
  const oor = s.out_of_reference;
  if (!s.species && !s.gene_panel_mode && s.gene_coverage == null && !oor && !terms.length) return null;
  return (
    <Card title="About this run">
      <dl className="kv" data-testid="run-facts">
        {s.species && <><dt>Species of the data's genes</dt><dd>{s.species}</dd></>}
        {s.gene_coverage != null && <><dt>Model genes present in the data</dt><dd>{pct(s.gene_coverage)}</dd></>}
        {s.gene_panel_mode && (
          <><dt>Gene panel</dt><dd><span className="mono">{s.gene_panel_mode}</span>{PANEL_MODES[s.gene_panel_mode] ? `: ${PANEL_MODES[s.gene_panel_mode]}` : ""}</dd></>
        )}
        {oor && (
          <><dt>Out of reference</dt><dd>{pct(oor.share)} of cells ({count(oor.n_cells)}) are far from every training cell of the model</dd></>
        )}
      </dl>
      {terms.length > 0 && (
        <div className="table-wrap">
          <table aria-label="Cell Ontology term of each class" data-testid="ontology-terms">
            <thead><tr><th>Class</th><th>Cell Ontology term</th><th>Term id</th></tr></thead>
            <tbody>
              {terms.map(([cls, t]) => (
                <tr key={cls}><td>{cls}</td><td>{t.name || "—"}</td><td className="mono">{t.id || "not mapped"}</td></tr>
              ))}
            </tbody>
          </table>
          {s.ontology?.version && <p className="small muted">Cell Ontology {s.ontology.version}.</p>}
        </div>
      )}
    </Card>
  );
}

/** The rolled-up types with their Cell Ontology term name and id. */
function LevelTerms({ results }: { results: Results }) {
  const rows = Object.entries(shownCounts(results)).sort((a, b) => b[1] - a[1]);
  return (
    <div className="table-wrap">
      <table aria-label="Rolled-up types and their Cell Ontology terms" data-testid="level-terms" className="small">
        <thead><tr><th>Type</th><th>Term id</th><th className="num">Cells</th></tr></thead>
        <tbody>{rows.map(([name, n]) => {
          const t = termOf(results.summary, name, true);
          return <tr key={name}><td>{t.name}</td><td className="mono">{t.id || "—"}</td><td className="num">{count(n)}</td></tr>;
        })}</tbody>
      </table>
    </div>
  );
}

function UmapCard({ results, onSelect }: { results: Results; onSelect?: (index: number) => void }) {
  const full = results.layout!;
  const obsCols = Object.keys(full.obs);
  const sources = labelSources(full);
  const [source, setSource] = useState("");
  const u = useMemo(() => withLabelsOf(full, source), [full, source]);
  const [mode, setMode] = useState<ColorMode>({ kind: "predicted" });
  // labels (the run's or one model's, at the classes or the results' level): every cell from the
  // server (WebGL); confidence or an obs column: the sample in the layout block of GET /results
  const server = mode.kind === "predicted";
  const data = useMemo(() => (server ? [] : umapTraces(u, mode)), [u, mode, server]);
  const pick = (pos: unknown) => {
    const i = typeof pos === "number" ? u.indices?.[pos] : undefined;
    if (i != null && onSelect) onSelect(i);
  };
  const method = (u.method ?? "umap").toUpperCase();
  const layout = useMemo(() => ({
    xaxis: { title: { text: `${method} 1` }, zeroline: false, showticklabels: false },
    yaxis: { title: { text: `${method} 2` }, zeroline: false, showticklabels: false, scaleanchor: "x" },
    legend: { itemsizing: "constant" }, hovermode: "closest",
  }), [method]);
  return (
    <Card title={method === "PCA" ? "PCA (first two components)" : "UMAP"}>
      <div className="toolbar">
        <div className="field">
          <span className="small" id="color-by-label"><strong>Colour by</strong></span>
          <div className="segmented" role="group" aria-labelledby="color-by-label">
            <button type="button" aria-pressed={mode.kind === "predicted"} onClick={() => setMode({ kind: "predicted" })}>{sources.length > 1 ? "Labels" : "Predicted type"}</button>
            <button type="button" aria-pressed={mode.kind === "confidence"} disabled={!u.confidence?.length}
              title={u.confidence?.length ? undefined : "per-cell confidences are not available for this run's layout"}
              onClick={() => setMode({ kind: "confidence" })}>Confidence</button>
          </div>
        </div>
        {sources.length > 1 && (
          <div className="field">
            <label htmlFor="label-source" className="small">Labels of</label>
            <select id="label-source" value={source} onChange={(e) => { setSource(e.target.value); setMode({ kind: "predicted" }); }}>
              {sources.map((m) => <option key={m} value={m}>{m ? `model ${m}` : "the consensus"}</option>)}
            </select>
          </div>
        )}
        <div className="field">
          <label htmlFor="obs-column" className="small">Your obs column</label>
          <select id="obs-column" value={mode.kind === "obs" ? mode.column : ""} disabled={!obsCols.length}
            onChange={(e) => setMode(e.target.value ? { kind: "obs", column: e.target.value } : { kind: "predicted" })}>
            <option value="">{obsCols.length ? "— none —" : "no obs columns in this data"}</option>
            {obsCols.map((c) => <option key={c} value={c}>{c}</option>)}
          </select>
        </div>
      </div>
      {server ? (
        // every cell, drawn with WebGL from the server's per-viewport answers
        <LayoutPlot runId={results.run.id} method={method} onSelectCell={onSelect} level={results.level ?? null} source={source || null} />
      ) : (
        <>
          <Plot label={`${method} of the cells coloured by the chosen value`} testId="umap" data={data} layout={layout} height={520}
            onClick={u.indices ? (p) => pick(p.customdata) : undefined} />
          <p className="small muted" data-testid="umap-note">
            {u.sampled
              ? `Showing a stratified sample of ${count(u.x.length)} of ${count(results.summary.n_cells ?? u.n_points)} cells.`
              : `Showing all ${count(u.x.length)} cells.`} Hover a point for its label, confidence and top 3{u.indices ? "; click it for its evidence" : ""}.
          </p>
        </>
      )}
    </Card>
  );
}

function CellsTable({ runId, initial, level = null, summary, selected = null, onSelect }: {
  runId: string;
  initial: CellPage | null;
  level?: string | null;
  summary?: Results["summary"];
  selected?: number | null;
  onSelect?: (index: number) => void;
}) {
  const [offset, setOffset] = useState(0);
  const page = useAsync<CellPage | null>(
    (s) => (offset === 0 && initial ? Promise.resolve(initial) : api.results(runId, { offset, limit: PAGE, level }, s).then((r) => r.cells ?? null)),
    [runId, offset, initial],
  );
  const models = summary?.consensus?.model_ids ?? [];
  const consensus = Boolean(summary?.consensus);
  return (
    <Card title="Cells">
      {page.status === "loading" && <Spinner label="Loading cells…" />}
      {page.status === "error" && <ErrorView error={page.error} onRetry={page.reload} />}
      {page.status === "ready" && !page.data && <Empty title="No per-cell table for this run" />}
      {page.status === "ready" && page.data && (
        <>
          <div className="table-wrap">
            <table aria-label="Predictions per cell" data-testid="cells-table">
              <thead><tr>
                <th>Cell</th><th>{level ? `Type at “${level}”` : consensus ? "Consensus type" : "Predicted type"}</th><th>Cell Ontology term</th><th className="num">Confidence</th>
                {consensus && <th className="num">Agreement</th>}
                {models.map((m) => <th key={m}>{m}</th>)}
                <th>Top 3</th>
              </tr></thead>
              <tbody>
                {page.data.items.map((c) => {
                  const at = Boolean(level) && c.rolled_up_label != null;
                  const pickable = onSelect && c.index != null;
                  return (
                    <tr key={c.cell} className={pickable ? "clickable" : undefined} aria-selected={pickable ? c.index === selected : undefined}
                      tabIndex={pickable ? 0 : undefined} title={pickable ? "Show this cell's evidence" : undefined}
                      onClick={pickable ? () => onSelect(c.index!) : undefined}
                      onKeyDown={pickable ? (e) => { if (e.key === "Enter") onSelect(c.index!); } : undefined}>
                      <td className="mono">{c.cell}</td>
                      <td>{c.unknown ? <Badge tone="warn">{cellLabel(c, at)}</Badge> : cellLabel(c, at)}</td>
                      <td className="mono small">{(at ? c.rolled_up_ontology_term_id : c.ontology_term_id) || "—"}</td>
                      <td className="num">{pct(c.confidence)}</td>
                      {consensus && <td className="num">{c.agreement == null ? "—" : pct(c.agreement, 0)}</td>}
                      {models.map((m) => <td key={m} className="small">{c.models?.[m]?.label ?? "—"}</td>)}
                      <td className="small">{c.top3.map((t) => `${t.label} ${pct(t.probability, 0)}`).join(" · ")}</td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
          <Pager offset={offset} limit={PAGE} total={page.data.total} onChange={setOffset} label="Pages of cells" />
        </>
      )}
    </Card>
  );
}
