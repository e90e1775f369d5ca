import { render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { count, pct } from "../lib/format";
import { consensusResults, recordedResults } from "../test/fixtures";
import { ConsensusSummary } from "./ConsensusSummary";

describe("ConsensusSummary", () => {
  it("shows the recorded consensus's agreement figures, distribution and per-model agreement", () => {
    const c = consensusResults.summary.consensus!;
    render(<ConsensusSummary summary={consensusResults.summary} />);
    const stats = screen.getByTestId("consensus-stats").textContent!;
    for (const v of [c.mean_agreement, c.share_full_agreement, c.share_broader_term, c.share_unknown]) expect(stats).toContain(pct(v));
    const dist = screen.getByTestId("agreement-distribution").querySelectorAll<HTMLTableRowElement>("tbody tr");
    expect(dist).toHaveLength(c.agreement_distribution!.length);
    const lowest = [...c.agreement_distribution!].sort((a, b) => a.agreement - b.agreement)[0];
    expect(dist[0].textContent).toContain(count(lowest.n_cells));
    const rows = [...screen.getByTestId("per-model-agreement").querySelectorAll<HTMLTableRowElement>("tbody tr")];
    expect(rows.map((r) => r.cells[0].textContent)).toEqual(c.model_ids);
    rows.forEach((r, i) => expect(r.cells[1].textContent).toBe(pct(c.per_model![c.model_ids![i]].agreement)));
  });

  it("shows nothing for a single model's run", () => {
    const { container } = render(<ConsensusSummary summary={recordedResults.summary} />);
    expect(container.textContent).toBe("");
  });
});
