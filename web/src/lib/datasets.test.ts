import { describe, expect, it } from "vitest";
import { demoModel, labelledUpload, upload } from "../test/fixtures";
import { MIN_COVERAGE, coverageFor, coverageModelId, coverageOk, rememberDataset, recentDatasets } from "./datasets";

describe("coverage of a model", () => {
  it("finds a model's coverage entry by its id", () => {
    const c = coverageFor(upload.report, demoModel.id)!;
    expect(c.target).toBe(`model ${demoModel.id}`);
    expect(coverageModelId(c)).toBe(demoModel.id);
    expect(coverageOk(c)).toBe(c.fraction_present >= MIN_COVERAGE);
    expect(coverageFor(upload.report, "no-such-model")).toBeUndefined();
    expect(coverageFor(null, demoModel.id)).toBeUndefined();
  });
});

describe("recentDatasets", () => {
  it("keeps the newest first, once each, and ignores what is not a dataset", () => {
    rememberDataset(upload);
    rememberDataset(labelledUpload);
    rememberDataset(upload);
    expect(recentDatasets().map((d) => d.id)).toEqual([upload.id, labelledUpload.id]);
    window.localStorage.setItem("cellfoundry.datasets", JSON.stringify([{ id: 3 }, upload]));
    expect(recentDatasets().map((d) => d.id)).toEqual([upload.id]);
  });
});
