// A form for an application's parameters, built from its schema (defaults and help shown).
import type { ParamSpec } from "../api/types";
import { Field } from "./ui";

export function paramKind(p: ParamSpec): "int" | "float" | "bool" | "choice" | "multi" | "str" | "list" | "json" {
  if (p.type === "multi") return "multi";
  if (p.choices && p.choices.length) return "choice";
  return ({ integer: "int", number: "float", boolean: "bool", array: "list", json: "json", choice: "choice", string: "str" } as const)[p.type];
}

export function defaultParams(specs: ParamSpec[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const p of specs) if (p.default !== undefined && p.default !== null) out[p.name] = p.default;
  return out;
}

/** Check values against the schema; returns {name: problem}. */
export function validateParams(specs: ParamSpec[], values: Record<string, unknown>): Record<string, string> {
  const errs: Record<string, string> = {};
  for (const p of specs) {
    const v = values[p.name];
    const kind = paramKind(p);
    if (v === undefined || v === null || v === "") {
      if (p.required) errs[p.name] = "Required.";
      continue;
    }
    if (kind === "json" && (typeof v !== "object" || Array.isArray(v))) {
      errs[p.name] = 'Enter a JSON object, e.g. {"epochs": 3}.';
      continue;
    }
    if (kind === "int" || kind === "float") {
      if (typeof v !== "number" || Number.isNaN(v)) errs[p.name] = "Enter a number.";
      else if (kind === "int" && !Number.isInteger(v)) errs[p.name] = "Enter a whole number.";
      else if (p.minimum != null && v < p.minimum) errs[p.name] = `Must be at least ${p.minimum}.`;
      else if (p.maximum != null && v > p.maximum) errs[p.name] = `Must be at most ${p.maximum}.`;
    }
  }
  return errs;
}

export function ParamsForm({ specs, values, onChange, errors, obsColumns }: {
  specs: ParamSpec[];
  values: Record<string, unknown>;
  onChange: (v: Record<string, unknown>) => void;
  errors: Record<string, string>;
  obsColumns?: string[];
}) {
  if (!specs.length) return <p className="muted">This application has no parameters.</p>;
  const set = (name: string, v: unknown) => onChange({ ...values, [name]: v });
  return (
    <div>
      {specs.map((p) => {
        const id = `param-${p.name}`;
        const kind = paramKind(p);
        const help = (
          <>
            {p.description ?? ""}
            {p.default !== undefined && p.default !== null && <> (default: <code>{String(p.default)}</code>)</>}
            {errors[p.name] && <div className="field-error" role="alert" style={{ color: "var(--error)" }}>{errors[p.name]}</div>}
          </>
        );
        const label = p.name.replace(/_/g, " ") + (p.required ? " *" : "");
        if (kind === "multi") {
          const cur = Array.isArray(values[p.name]) ? (values[p.name] as unknown[]) : [];
          return (
            <fieldset className="field" key={p.name} aria-describedby={`${id}-help`}>
              <legend style={{ fontWeight: 600, fontSize: "0.9rem" }}>{label}</legend>
              <div className="row gap">
                {(p.choices ?? []).map((c) => (
                  <label key={String(c)} className="row" style={{ gap: 4 }}>
                    <input type="checkbox" checked={cur.includes(c)}
                      onChange={(e) => {
                        const next = e.target.checked ? [...cur, c] : cur.filter((x) => x !== c);
                        set(p.name, next.length ? next : undefined); // none ticked: the service's default
                      }} />
                    {String(c)}
                  </label>
                ))}
              </div>
              <div className="field-help" id={`${id}-help`}>{help}{!cur.length && " (none ticked: the service's default)"}</div>
            </fieldset>
          );
        }
        const isObs = obsColumns && obsColumns.length > 0 && /label|obs|column|key/i.test(p.name) && kind === "str";
        if (kind === "bool")
          return (
            <div className="field" key={p.name}>
              <label className="row gap" htmlFor={id}>
                <input id={id} type="checkbox" checked={Boolean(values[p.name])} onChange={(e) => set(p.name, e.target.checked)} />
                {label}
              </label>
              <div className="field-help">{help}</div>
            </div>
          );
        return (
          <Field key={p.name} label={label} htmlFor={id} help={help}>
            {kind === "choice" || isObs ? (
              <select id={id} value={values[p.name] == null ? "" : String(values[p.name])}
                onChange={(e) => {
                  const raw = e.target.value;
                  const orig = (p.choices ?? []).find((c) => String(c) === raw);
                  set(p.name, raw === "" ? undefined : orig ?? raw);
                }}>
                <option value="">{p.required ? "— choose —" : "— none —"}</option>
                {(kind === "choice" ? p.choices ?? [] : obsColumns ?? []).map((c) => (
                  <option key={String(c)} value={String(c)}>{String(c)}</option>
                ))}
              </select>
            ) : kind === "int" || kind === "float" ? (
              <input id={id} type="number" step={kind === "int" ? 1 : "any"} value={values[p.name] == null ? "" : String(values[p.name])}
                min={p.minimum ?? undefined} max={p.maximum ?? undefined}
                onChange={(e) => set(p.name, e.target.value === "" ? undefined : Number(e.target.value))} />
            ) : kind === "json" ? (
              <input id={id} type="text" className="mono" placeholder="{}"
                defaultValue={values[p.name] && typeof values[p.name] === "object" ? JSON.stringify(values[p.name]) : ""}
                onChange={(e) => {
                  const raw = e.target.value.trim();
                  if (!raw) return set(p.name, undefined);
                  try {
                    set(p.name, JSON.parse(raw));
                  } catch {
                    set(p.name, raw);
                  }
                }} />
            ) : kind === "list" ? (
              <input id={id} type="text" value={Array.isArray(values[p.name]) ? (values[p.name] as unknown[]).join(", ") : String(values[p.name] ?? "")}
                onChange={(e) => set(p.name, e.target.value.split(",").map((s) => s.trim()).filter(Boolean).map((s) => (/^-?\d+(\.\d+)?$/.test(s) ? Number(s) : s)))} />
            ) : (
              <input id={id} type="text" value={String(values[p.name] ?? "")} onChange={(e) => set(p.name, e.target.value)} />
            )}
          </Field>
        );
      })}
    </div>
  );
}
