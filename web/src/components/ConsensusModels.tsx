// The consensus application's other models (params.other_model_ids), ticked beside model_id.
import type { Model } from "../api/types";

/** The param that lists a consensus's other models (see GET /applications). */
export const OTHER_MODELS = "other_model_ids";

export function ConsensusModels({ models, modelId, chosen, blocker, onChange, max }: {
  models: Model[];
  modelId: string;
  chosen: string[];
  blocker: (m: Model) => string | null;
  onChange: (ids: string[]) => void;
  max?: number | null;
}) {
  const others = models.filter((m) => m.id !== modelId);
  return (
    <fieldset data-testid="consensus-models">
      <legend><strong>Combine with</strong> <span className="small muted">(the consensus needs at least one other model{max ? `, at most ${max}` : ""})</span></legend>
      {others.length === 0 && <p className="small muted">No other model serves this application.</p>}
      {others.map((m) => {
        const why = blocker(m);
        const on = chosen.includes(m.id);
        return (
          <label className={`choice ${why ? "disabled" : ""}`} key={m.id}>
            <input type="checkbox" name="other-model" value={m.id} disabled={Boolean(why) || (!on && max != null && chosen.length >= max)} checked={on}
              onChange={(e) => onChange(e.target.checked ? [...chosen, m.id] : chosen.filter((x) => x !== m.id))} />
            <strong>{m.name}</strong> <span className="small muted">{m.family}</span>
            {why && <div className="small muted">{why}</div>}
          </label>
        );
      })}
    </fieldset>
  );
}
