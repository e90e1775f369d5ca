// A consensus run's figures: how much its models agree, with each other and with the consensus.
import type { ResultSummary } from "../api/types";
import { agreementRows, perModelRows } from "../lib/evidence";
import { count, pct } from "../lib/format";
import { Card, Stat } from "./ui";

export function ConsensusSummary({ summary }: { summary: ResultSummary }) {
  const c = summary.consensus;
  if (!c) return null;
  const dist = agreementRows(summary);
  const most = Math.max(0, ...dist.map((d) => d.share));
  const models = perModelRows(summary);
  return (
    <Card title={`Consensus of ${models.length || c.model_ids?.length || 0} models`}>
      <div className="stats" data-testid="consensus-stats">
        <Stat label="Mean agreement" value={pct(c.mean_agreement)} hint="share of the models agreeing with each cell's consensus call, averaged" />
        <Stat label="All models agree" value={pct(c.share_full_agreement)} />
        <Stat label="Broader term" value={pct(c.share_broader_term)} hint="called a term broader than every model's classes" />
        <Stat label="Unknown" value={pct(c.share_unknown)} />
      </div>
      <div className="grid grid-2">
        <div className="table-wrap">
          <table aria-label="Agreement distribution" data-testid="agreement-distribution">
            <thead><tr><th>Models agreeing</th><th className="num">Cells</th><th>Share</th></tr></thead>
            <tbody>
              {dist.map((d) => (
                <tr key={d.agreement}>
                  <td>{pct(d.agreement, 0)}</td>
                  <td className="num">{count(d.n_cells)}</td>
                  <td>
                    <span className="bar" style={{ display: "inline-block", height: 8, background: "var(--primary)", width: `${most ? (d.share / most) * 120 : 0}px`, marginRight: 6 }} />
                    {pct(d.share)}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
        <div className="table-wrap">
          <table aria-label="Agreement of each model with the consensus" data-testid="per-model-agreement">
            <thead><tr><th>Model</th><th className="num">Agrees (same lineage)</th><th className="num">Same call</th><th className="num">Weight</th></tr></thead>
            <tbody>
              {models.map((m) => (
                <tr key={m.id}>
                  <td className="mono">{m.id}</td>
                  <td className="num">{pct(m.agreement)}</td>
                  <td className="num">{pct(m.same_call)}</td>
                  <td className="num">{m.weight == null ? "—" : m.weight.toFixed(2)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </div>
      <p className="small muted">
        A model agrees with a cell's consensus call when its own call is the same Cell Ontology term or one above or below it.
        {c.rule ? ` Rule: ${c.rule}` : ""}{c.min_support != null ? `, minimum support ${pct(c.min_support, 0)}.` : ""}
      </p>
    </Card>
  );
}
