// The validation report of an uploaded dataset, in plain language.
import type { Model, ValidationReport } from "../api/types";
import { coverageModelId, coverageOk } from "../lib/datasets";
import { count, idKindName, kindName, matrixName, pct } from "../lib/format";
import { Alert, Badge, Progress } from "./ui";

export function CoverageBars({ report, models }: { report: ValidationReport; models?: Model[] }) {
  if (!report.coverage.length) return <p className="muted small">No per-model coverage was computed (no models registered).</p>;
  return (
    <div role="list" aria-label="Gene coverage per model">
      {report.coverage.map((c) => {
        const id = coverageModelId(c);
        const name = models?.find((m) => m.id === id)?.name ?? id;
        const ok = coverageOk(c);
        const tone = !ok ? "error" : c.fraction_present < 0.7 ? "warn" : "ok";
        return (
          <div className="coverage" role="listitem" key={c.target} data-testid={`coverage-${id}`}>
            <div>
              <div><strong>{name}</strong></div>
              {!ok && <Badge tone="error">too low to run</Badge>}
            </div>
            <Progress value={c.fraction_present * 100} tone={tone} label={`Gene coverage for ${name}`} />
            <div className="small">
              {count(c.n_present)} / {count(c.n_target)} genes ({pct(c.fraction_present)})
              {c.fraction_counts_mapped != null && <div className="muted">{pct(c.fraction_counts_mapped)} of counts mapped</div>}
            </div>
          </div>
        );
      })}
    </div>
  );
}

/** Sentences that say what was found, for people, not parsers. */
export function describeReport(r: ValidationReport): string[] {
  const out: string[] = [];
  out.push(`${count(r.n_cells)} cells × ${count(r.n_genes)} genes${r.species && r.species !== "unknown" ? ` (${r.species})` : ""}.`);
  if (r.matrices.length) {
    out.push(`Matrices found: ${r.matrices.map((m) => `${matrixName(m.source)} holding ${kindName(m.kind)}`).join("; ")}.`);
  } else out.push("No expression matrix was found.");
  const c = r.chosen?.counts;
  const l = r.chosen?.lognorm;
  if (c) out.push(`Raw counts will be read from ${matrixName(c)}.`);
  else out.push("No raw counts were found, so models that need counts cannot run on this file.");
  if (l) out.push(`Log-normalised values will be ${l === c ? "computed from the counts" : `read from ${matrixName(l)}`}.`);
  out.push(`Genes are named by ${idKindName(r.gene_id_kind)}.`);
  const o = r.orthology;
  if (o) {
    const counts = o.fraction_counts_mapped != null ? ` and ${pct(o.fraction_counts_mapped)} of counts` : "";
    out.push(
      `The genes are ${o.species} genes (${r.species_source ?? "detected"}); models see them as human orthologs ` +
        `(${o.table}): ${count(o.n_genes_mapped)} of ${count(o.n_genes)} genes (${pct(o.fraction_genes_mapped)})${counts} ` +
        `map to ${count(o.n_human_genes)} human genes.`,
    );
  }
  if (r.n_duplicate_genes) out.push(`${count(r.n_duplicate_genes)} gene names appear more than once.`);
  if (r.obs_columns.length) out.push(`Cell annotations (obs columns): ${r.obs_columns.join(", ")}.`);
  return out;
}

export function ReportView({ report, models }: { report: ValidationReport; models?: Model[] }) {
  const errors = report.messages.filter((m) => m.level === "error");
  const warnings = report.messages.filter((m) => m.level === "warning");
  const infos = report.messages.filter((m) => m.level === "info");
  return (
    <div className="report" data-testid="validation-report">
      {errors.length > 0 ? (
        <Alert tone="error" title={`This file cannot be used yet: ${errors.length} blocking problem${errors.length === 1 ? "" : "s"}`}>
          <ul>
            {errors.map((m) => (
              <li key={m.code + m.message}>{m.message}{m.hint && <div className="hint"><strong>Fix:</strong> {m.hint}</div>}</li>
            ))}
          </ul>
        </Alert>
      ) : (
        <Alert tone="ok" title="The file is readable and ready to use." />
      )}
      <h3>What we found</h3>
      <ul>{describeReport(report).map((s) => <li key={s}>{s}</li>)}</ul>
      {warnings.length > 0 && (
        <>
          <h3>Warnings</h3>
          {warnings.map((m) => (
            <Alert tone="warn" key={m.code + m.message} title={m.message}>
              {m.hint && <span><strong>Fix:</strong> {m.hint}</span>}
            </Alert>
          ))}
        </>
      )}
      {infos.length > 0 && (
        <ul className="small muted">{infos.map((m) => <li key={m.code + m.message}>{m.message}</li>)}</ul>
      )}
      <h3>Gene coverage per model</h3>
      <CoverageBars report={report} models={models} />
    </div>
  );
}
