import { render, screen, waitFor } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { setApiKey } from "../api/client";
import { num, pct } from "../lib/format";
import { stubFetch } from "../test/fetch";
import { consensusBroad, consensusCell, consensusResults, recordedResults } from "../test/fixtures";
import { EvidencePanel } from "./EvidencePanel";

describe("EvidencePanel", () => {
  it("asks to pick a cell until one is selected", () => {
    render(<EvidencePanel runId="r" index={null} level={null} summary={recordedResults.summary} explained={false} />);
    expect(screen.getByText("No cell selected")).toBeTruthy();
  });

  it("fetches a consensus cell and shows its call, term, agreement and each model's genes strongest first", async () => {
    setApiKey("k");
    const id = consensusResults.run.id;
    const { calls } = stubFetch({ [`GET /results/${id}/cells/${consensusCell.index}`]: { body: consensusCell } });
    render(<EvidencePanel runId={id} index={consensusCell.index!} level={null} summary={consensusResults.summary} explained />);
    const call = await screen.findByTestId("evidence-call");
    expect(calls[0].url.pathname).toBe(`/results/${id}/cells/${consensusCell.index}`);
    expect(call.textContent).toContain(consensusCell.label);
    expect(call.textContent).toContain(consensusCell.ontology_term_id!);
    expect(call.textContent).toContain(pct(consensusCell.confidence));
    expect(call.textContent).toContain(pct(consensusCell.agreement, 0));
    expect(call.textContent).toContain(num(consensusCell.reference_distance, 2));
    const top = screen.getByTestId("evidence-top").querySelectorAll("li");
    expect([...top].map((li) => li.textContent)).toEqual(consensusCell.top3.map((t) => `${t.label} ${pct(t.probability)}`));
    for (const [m, own] of Object.entries(consensusCell.models!)) {
      const rows = [...screen.getByTestId(`evidence-genes-${m}`).querySelectorAll<HTMLTableRowElement>("tbody tr")];
      expect(rows.map((r) => r.cells[1].textContent)).toEqual(own.top_genes!.map((g) => g.gene));
      expect(rows[0].cells[2].textContent).toBe(num(own.top_genes![0].contribution, 3));
    }
    const models = screen.getByTestId("evidence-models").querySelectorAll<HTMLTableRowElement>("tbody tr");
    expect([...models].map((r) => r.cells[1].textContent)).toEqual(Object.values(consensusCell.models!).map((m) => m.label));
  });

  it("says how to get genes when the run was not explained, instead of an empty box", async () => {
    setApiKey("k");
    const id = recordedResults.run.id;
    const cell = recordedResults.cells.items[0];
    stubFetch({ [`GET /results/${id}/cells/0`]: { body: cell } });
    render(<EvidencePanel runId={id} index={0} level={null} summary={recordedResults.summary} explained={false} />);
    const hint = await screen.findByTestId("evidence-no-explain");
    expect(hint.textContent).toMatch(/explain/);
    const term = recordedResults.summary.ontology!.terms![cell.predicted];
    expect(screen.getByTestId("evidence-call").textContent).toContain(`${term.name} ${term.id}`);
    expect(screen.queryByTestId("evidence-genes")).toBeNull();
  });

  it("asks for the cell at the chosen level and shows its rolled-up call", async () => {
    setApiKey("k");
    const id = consensusResults.run.id;
    const rolled = consensusBroad.cells.items.find((c) => c.index === consensusCell.index)!; // recorded at level=broad
    const { calls } = stubFetch({ [`GET /results/${id}/cells/${consensusCell.index}`]: (url) => ({ body: url.searchParams.get("level") === "broad" ? rolled : consensusCell }) });
    render(<EvidencePanel runId={id} index={consensusCell.index!} level="broad" summary={consensusResults.summary} explained />);
    await waitFor(() => expect(screen.getByTestId("evidence-level").textContent).toBe(`${rolled.rolled_up_label} ${rolled.rolled_up_ontology_term_id}`));
    expect(rolled.rolled_up_label).not.toBe(rolled.label);
    expect(calls[0].url.searchParams.get("level")).toBe("broad");
  });

  it("names the level in words when it is a Cell Ontology term", async () => {
    setApiKey("k");
    const id = consensusResults.run.id;
    const term = consensusResults.levels!.find((o) => o.term)!;
    const rolled = consensusBroad.cells.items.find((c) => c.index === consensusCell.index)!;
    stubFetch({ [`GET /results/${id}/cells/${consensusCell.index}`]: { body: rolled } });
    render(<EvidencePanel runId={id} index={consensusCell.index!} level={term.level} levelLabel={`${term.name} (${term.level})`} summary={consensusResults.summary} explained />);
    await screen.findByTestId("evidence-level");
    expect(screen.getByTestId("evidence-call").textContent).toContain(`At level “${term.name} (${term.level})”`);
  });
});
