import { fireEvent, render, screen, within } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { parseError } from "../api/client";
import { count } from "../lib/format";
import { consensusResults, invalidLevel } from "../test/fixtures";
import { LevelToggle } from "./LevelToggle";

const levels = consensusResults.levels!;
const terms = levels.filter((o) => o.term);

function toggle(props: Partial<Parameters<typeof LevelToggle>[0]> = {}) {
  const asked: (string | null)[] = [];
  const view = render(<LevelToggle level={null} onChange={(l) => asked.push(l)} options={levels} {...props} />);
  return { asked, ...view };
}

describe("LevelToggle", () => {
  it("offers the named sets and the broader terms the service computed for the run", () => {
    const { asked } = toggle();
    // the recorded consensus offers "broad" and the terms that merge two or more of its types
    expect(levels[0].level).toBe("broad");
    expect(terms.map((o) => o.name)).toEqual(expect.arrayContaining(["T cell", "lymphocyte", "monocyte"]));
    const group = screen.getByTestId("level-toggle");
    expect(within(group).getAllByRole("button").map((b) => b.textContent)).toEqual(["Model's classes", "Broad types"]);
    expect(screen.getByRole("button", { name: "Model's classes" }).getAttribute("aria-pressed")).toBe("true");

    const select = screen.getByLabelText("Broader term") as HTMLSelectElement;
    const options = [...select.options].slice(1);
    expect(options.map((o) => o.value)).toEqual(terms.map((o) => o.level));
    const t = terms.find((o) => o.name === "T cell")!;
    const tOption = options.find((o) => o.value === t.level)!;
    expect(tOption.textContent).toBe(`T cell (${t.labels.length} types, ${count(t.n_cells)} cells)`);
    for (const label of t.labels) expect(tOption.title).toContain(label);

    fireEvent.change(select, { target: { value: t.level } });
    fireEvent.click(screen.getByRole("button", { name: "Broad types" }));
    fireEvent.change(select, { target: { value: "" } });
    expect(asked).toEqual([t.level, "broad", null]);
  });

  it("marks the level shown, and takes any Cell Ontology id or name typed in", () => {
    const t = terms.find((o) => o.name === "T cell")!;
    const { asked, rerender } = toggle({ level: t.level });
    expect((screen.getByLabelText("Broader term") as HTMLSelectElement).value).toBe(t.level);
    expect(screen.getByRole("button", { name: "Model's classes" }).getAttribute("aria-pressed")).toBe("false");
    const apply = screen.getByRole("button", { name: "Roll up" }) as HTMLButtonElement;
    expect(apply.disabled).toBe(true); // nothing typed
    fireEvent.change(screen.getByLabelText("Any CL term"), { target: { value: "  myeloid leukocyte " } });
    fireEvent.click(apply);
    expect(asked).toEqual(["myeloid leukocyte"]);
    // a level that is none of the offered ones is said in words
    rerender(<LevelToggle level="myeloid leukocyte" onChange={() => {}} options={levels} />);
    expect(screen.getByTestId("level-custom").textContent).toContain("myeloid leukocyte");
    expect((screen.getByLabelText("Broader term") as HTMLSelectElement).value).toBe("");
  });

  it("says why a level was refused and what to give instead", () => {
    const error = parseError(422, invalidLevel);
    toggle({ error, level: null });
    const alert = within(screen.getByTestId("level-error")).getByRole("alert");
    expect(alert.textContent).toContain("Not a Cell Ontology level");
    expect(alert.textContent).toContain(invalidLevel.error.message);
    expect(alert.textContent).toContain(invalidLevel.error.hint!);
    expect(invalidLevel.error.code).toBe("invalid_level");
    expect(invalidLevel.error.message).toContain("T-cells please");
  });
});
