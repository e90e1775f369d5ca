import { describe, expect, it } from "vitest";
import { consensusBroad, consensusCell, consensusResults, recordedResults } from "../test/fixtures";
import { agreementRows, cellLabel, explained, labelSources, markerRows, outOfReferenceRows, perModelRows, shownCounts, termOf, withLabelsOf } from "./evidence";

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

describe("consensus derivations", () => {
  it("offers the consensus, then each of the run's models, as label sources of the layout", () => {
    expect(labelSources(consensusResults.layout)).toEqual(["", ...consensusResults.run.model_ids!]);
    expect(labelSources(recordedResults.layout)).toEqual([""]);
  });

  it("recolours the layout with a model's own labels, which match that cell's evidence", () => {
    const lay = consensusResults.layout;
    expect(withLabelsOf(lay, "")).toBe(lay);
    for (const [m, call] of Object.entries(consensusCell.models!)) {
      const own = withLabelsOf(lay, m);
      expect(own.labels).toBe(lay.model_labels![m]);
      expect(own.labels![0]).toBe(call.label); // consensusCell is the layout's first point
    }
    expect(lay.labels![0]).toBe(consensusCell.label);
  });

  it("lists the agreement distribution from lowest agreement, covering every cell once", () => {
    const rows = agreementRows(consensusResults.summary);
    expect(rows.map((r) => r.agreement)).toEqual([...rows.map((r) => r.agreement)].sort((a, b) => a - b));
    expect(sum(rows.map((r) => r.n_cells))).toBe(consensusResults.summary.n_cells);
    expect(sum(rows.map((r) => r.share))).toBeCloseTo(1, 6);
    expect(agreementRows(recordedResults.summary)).toEqual([]);
  });

  it("gives each model's agreement in the run's model order", () => {
    const rows = perModelRows(consensusResults.summary);
    expect(rows.map((r) => r.id)).toEqual(consensusResults.run.model_ids);
    for (const r of rows) expect(r.same_call).toBeLessThanOrEqual(r.agreement); // same term is one way to agree
  });
});

describe("reference fit", () => {
  it("sorts the out-of-reference share per type, largest first, consistent with the overall share", () => {
    const s = recordedResults.summary;
    const rows = outOfReferenceRows(s);
    expect(rows.length).toBeGreaterThan(0);
    for (let i = 1; i < rows.length; i++) expect(rows[i - 1].share).toBeGreaterThanOrEqual(rows[i].share);
    const far = sum(rows.map((r) => Math.round(r.share * r.n_cells)));
    expect(far).toBe(s.out_of_reference!.n_cells);
  });

  it("sorts marker overlap per type, largest first", () => {
    const rows = markerRows(recordedResults.summary);
    expect(rows.length).toBe(Object.keys(recordedResults.summary.marker_overlap!.by_predicted_type!).length);
    for (let i = 1; i < rows.length; i++) expect(rows[i - 1].overlap ?? -1).toBeGreaterThanOrEqual(rows[i].overlap ?? -1);
  });
});

describe("ontology level", () => {
  it("shows rolled-up counts at a level (every cell counted once), else the model's own", () => {
    expect(shownCounts(consensusResults)).toEqual(consensusResults.summary.label_counts);
    const broad = shownCounts(consensusBroad);
    expect(broad).toEqual(consensusBroad.summary.ontology!.rolled_up_counts);
    expect(sum(Object.values(broad))).toBe(consensusBroad.summary.n_cells);
    expect(Object.keys(broad).length).toBeLessThan(Object.keys(consensusResults.summary.label_counts!).length);
  });

  it("names a label's Cell Ontology term at the level and for the model's classes", () => {
    const s = consensusBroad.summary;
    for (const [name, id] of Object.entries(s.ontology!.rolled_up_terms!)) expect(termOf(s, name, true)).toEqual({ name, id });
    const [cls, t] = Object.entries(recordedResults.summary.ontology!.terms!).find(([, t]) => t.id)!;
    expect(termOf(recordedResults.summary, cls, false)).toEqual({ name: t.name, id: t.id });
  });

  it("labels a cell at the level when asked, and knows whether the run was explained", () => {
    const c = consensusBroad.cells.items[0];
    expect(cellLabel(c, true)).toBe(c.rolled_up_label);
    expect(cellLabel(c, false)).toBe(c.label);
    expect(explained(consensusResults.run)).toBe(true);
    expect(explained(recordedResults.run)).toBe(false);
  });
});
