// Switch the results between the model's own classes and a broader Cell Ontology level.
export const LEVELS: { value: string | null; label: string; title: string }[] = [
  { value: null, label: "Model's classes", title: "each cell's call as the model made it" },
  { value: "broad", label: "Broad types", title: "every call rolled up the Cell Ontology to broad compartments (T cell, B cell, monocyte, ...)" },
];

export function LevelToggle({ level, onChange, disabled }: { level: string | null; onChange: (level: string | null) => void; disabled?: boolean }) {
  return (
    <div className="field">
      <span className="small" id="level-label"><strong>Cell Ontology level</strong></span>
      <div className="segmented" role="group" aria-labelledby="level-label" data-testid="level-toggle">
        {LEVELS.map((l) => (
          <button key={l.label} type="button" aria-pressed={level === l.value} title={l.title} disabled={disabled}
            onClick={() => onChange(l.value)}>{l.label}</button>
        ))}
      </div>
    </div>
  );
}
