// Switch the results between the model's own classes and a broader Cell Ontology level: the named
// sets and the broader terms the service offers for this run (GET /results' `levels`: the terms
// that merge two or more of its predicted types), or any CL term typed in (id or exact name).
import { useState } from "react";
import { ApiError } from "../api/client";
import type { Results } from "../api/types";
import { count } from "../lib/format";
import { Alert, Button } from "./ui";

export type LevelOption = NonNullable<Results["levels"]>[number];

/** Button text of a named set ("broad"), its own name for any other set. */
const SET_LABELS: Record<string, string> = { broad: "Broad types" };

function optionTitle(o: LevelOption): string {
  const under = o.labels.length ? `: ${o.labels.join(", ")}` : "";
  return o.term
    ? `${o.name} (${o.term}) merges ${o.labels.length} of this run's predicted types, ${count(o.n_cells)} cells${under}`
    : `every call rolled up the Cell Ontology to broad compartments (T cell, B cell, monocyte, ...)${under}`;
}

export function LevelToggle({ level, onChange, options = [], error = null, busy = false, disabled }: {
  level: string | null;
  onChange: (level: string | null) => void;
  /** the levels the service offers for this run (GET /results' `levels`) */
  options?: LevelOption[];
  /** the last level asked for was refused (an unknown term): shown under the entry */
  error?: unknown;
  /** the results at the asked level are being fetched */
  busy?: boolean;
  disabled?: boolean;
}) {
  const sets = options.filter((o) => !o.term);
  const terms = options.filter((o) => o.term);
  const offered = options.some((o) => o.level === level);
  const [text, setText] = useState("");
  const typed = text.trim();
  const apply = () => { if (typed) onChange(typed); };
  return (
    <div className="field" data-testid="level-toggle-field">
      <span className="small" id="level-label"><strong>Cell Ontology level</strong></span>
      <div className="row gap">
        <div className="segmented" role="group" aria-labelledby="level-label" data-testid="level-toggle">
          <button type="button" aria-pressed={level === null} title="each cell's call as the model made it" disabled={disabled}
            onClick={() => onChange(null)}>Model's classes</button>
          {sets.map((o) => (
            <button key={o.level} type="button" aria-pressed={level === o.level} title={optionTitle(o)} disabled={disabled}
              onClick={() => onChange(o.level)}>{SET_LABELS[o.level] ?? o.name}</button>
          ))}
        </div>
        {terms.length > 0 && (
          <>
            <label htmlFor="level-term" className="small">Broader term</label>
            <select id="level-term" data-testid="level-terms-select" disabled={disabled}
              value={terms.some((o) => o.level === level) ? level! : ""}
              onChange={(e) => onChange(e.target.value || null)}>
              <option value="">— choose a term —</option>
              {terms.map((o) => (
                <option key={o.level} value={o.level} title={optionTitle(o)}>
                  {`${o.name} (${o.labels.length} types, ${count(o.n_cells)} cells)`}
                </option>
              ))}
            </select>
          </>
        )}
        <form className="row gap" onSubmit={(e) => { e.preventDefault(); apply(); }}>
          <label htmlFor="level-any" className="small">Any CL term</label>
          <input id="level-any" type="text" data-testid="level-input" value={text} placeholder="CL:0000084 or T cell" maxLength={200}
            disabled={disabled} onChange={(e) => setText(e.target.value)} />
          <Button type="submit" variant="secondary" disabled={disabled || !typed}>Roll up</Button>
        </form>
        {busy && <span className="small muted" aria-live="polite">Loading…</span>}
      </div>
      {level && !offered && !error && (
        <p className="small muted" data-testid="level-custom">Showing the calls at “{level}”.</p>
      )}
      {error != null && <LevelError error={error} />}
    </div>
  );
}

function LevelError({ error }: { error: unknown }) {
  const e = error instanceof ApiError ? error : null;
  return (
    <div data-testid="level-error">
      <Alert tone="error" title={e?.code === "invalid_level" ? "Not a Cell Ontology level" : "Could not roll up the results"}>
        {e ? e.message : String((error as Error)?.message ?? error)}
        {e?.hint && <p className="hint"><strong>Fix:</strong> {e.hint}</p>}
      </Alert>
    </div>
  );
}
