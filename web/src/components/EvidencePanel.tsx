// The evidence for one selected cell: its call, Cell Ontology term, top labels, the genes behind
// the call (runs submitted with explain), its distance to the reference and each model's call.
import { api } from "../api/client";
import type { Api, CellPrediction, ResultSummary } from "../api/types";
import { maxContribution } from "../lib/evidence";
import { num, pct } from "../lib/format";
import { useAsync } from "../lib/hooks";
import { Badge, Card, Empty, ErrorView, Spinner } from "./ui";

export function EvidencePanel({ runId, index, level, levelLabel = null, summary, explained, onClose }: {
  runId: string;
  index: number | null;
  level: string | null;
  /** the level in words ("T cell (CL:0000084)"); the level itself when not given */
  levelLabel?: string | null;
  summary: ResultSummary;
  explained: boolean;
  onClose?: () => void;
}) {
  const cell = useAsync<CellPrediction | null>(
    (s) => (index == null ? Promise.resolve(null) : api.cell(runId, index, level, s)),
    [runId, index, level],
  );
  return (
    <Card title="Evidence for a cell" id="evidence" actions={index != null && onClose && <button type="button" className="btn btn-secondary" onClick={onClose}>Clear</button>}>
      <div data-testid="evidence">
        {index == null && <Empty title="No cell selected">Click a point in the layout or a row of the cell table to see why the cell got its label.</Empty>}
        {index != null && cell.status === "loading" && <Spinner label="Loading the cell's evidence…" />}
        {cell.status === "error" && <ErrorView error={cell.error} onRetry={cell.reload} title="Could not load this cell" />}
        {cell.status === "ready" && cell.data && <CellEvidence c={cell.data} summary={summary} explained={explained} level={level && (levelLabel || level)} />}
      </div>
    </Card>
  );
}

function CellEvidence({ c, summary, explained, level }: { c: CellPrediction; summary: ResultSummary; explained: boolean; level: string | null }) {
  const term = summary.ontology?.terms?.[c.predicted];
  const models = Object.entries(c.models ?? {});
  return (
    <>
      <dl className="kv" data-testid="evidence-call">
        <dt>Cell</dt><dd className="mono">{c.cell}{c.index != null ? ` (row ${c.index})` : ""}</dd>
        <dt>Predicted</dt><dd>{c.unknown ? <Badge tone="warn">{c.label}</Badge> : c.label}{c.unknown ? ` (most probable: ${c.predicted})` : ""}</dd>
        <dt>Cell Ontology term</dt>
        <dd>{term?.name || c.predicted} <span className="mono">{c.ontology_term_id || "not mapped"}</span></dd>
        {level && c.rolled_up_label != null && (
          <><dt>At level “{level}”</dt><dd data-testid="evidence-level">{c.rolled_up_label} <span className="mono">{c.rolled_up_ontology_term_id || "not mapped"}</span></dd></>
        )}
        <dt>Confidence</dt><dd>{pct(c.confidence)}</dd>
        {c.agreement != null && (<><dt>Models agreeing</dt><dd>{pct(c.agreement, 0)}</dd></>)}
        {c.true_label != null && (<><dt>True label</dt><dd>{c.true_label}</dd></>)}
        {c.reference_distance != null && (
          <><dt>Distance to the reference</dt><dd>{num(c.reference_distance, 2)} (1 = typical of the training cells){c.out_of_reference ? <> <Badge tone="warn">out of reference</Badge></> : ""}</dd></>
        )}
      </dl>
      <h3>Top labels</h3>
      <ol className="small" data-testid="evidence-top">
        {c.top3.map((t) => <li key={t.label}>{t.label} {pct(t.probability)}</li>)}
      </ol>
      <h3>Genes behind the call</h3>
      {c.top_genes?.length ? <Genes genes={c.top_genes} label={`Genes contributing most to ${c.predicted}`} testId="evidence-genes" />
        : models.some(([, m]) => m.top_genes?.length) ? (
          <div className="grid grid-2">
            {models.filter(([, m]) => m.top_genes?.length).map(([id, m]) => (
              <div key={id}>
                <p className="small"><strong className="mono">{id}</strong>: {m.predicted}</p>
                <Genes genes={m.top_genes!} label={`Genes contributing most to ${id}'s call`} testId={`evidence-genes-${id}`} />
              </div>
            ))}
          </div>
        )
        : explained ? <p className="small muted">No genes were stored for this cell.</p>
        : (
          <p className="small" data-testid="evidence-no-explain">
            This run was submitted without <code>explain</code>, so no genes were stored. Submit it again with the
            <strong> explain</strong> parameter ticked (logreg and knn models) to see the genes contributing most to each call.
          </p>
        )}
      {models.length > 0 && (
        <>
          <h3>Each model's call</h3>
          <div className="table-wrap">
            <table aria-label="Each model's call of this cell" data-testid="evidence-models">
              <thead><tr><th>Model</th><th>Label</th><th>Term</th><th className="num">Confidence</th></tr></thead>
              <tbody>
                {models.map(([id, m]) => (
                  <tr key={id}>
                    <td className="mono">{id}</td>
                    <td>{m.unknown ? <Badge tone="warn">{m.label}</Badge> : m.label}</td>
                    <td className="mono small">{m.ontology_term_id || "—"}</td>
                    <td className="num">{pct(m.confidence)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </>
      )}
    </>
  );
}

function Genes({ genes, label, testId }: { genes: Api["GeneContribution"][]; label: string; testId: string }) {
  const top = maxContribution(genes);
  return (
    <table aria-label={label} data-testid={testId} className="small">
      <thead><tr><th>#</th><th>Gene</th><th className="num">Contribution</th></tr></thead>
      <tbody>
        {genes.map((g, i) => (
          <tr key={g.gene}>
            <td>{i + 1}</td>
            <td className="mono">{g.gene}</td>
            <td className="num">
              {g.contribution == null ? "—" : (
                <>
                  <span style={{ display: "inline-block", height: 8, marginRight: 6, background: g.contribution >= 0 ? "var(--primary)" : "var(--error)", width: `${top ? (Math.abs(g.contribution) / top) * 80 : 0}px` }} />
                  {num(g.contribution, 3)}
                </>
              )}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
