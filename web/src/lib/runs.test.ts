import { describe, expect, it } from "vitest";
import { failedStatus, recordedStatus, runningStatus, runs } from "../test/fixtures";
import { pageOffset, runProgress } from "./runs";

describe("runProgress / pageOffset", () => {
  it("shows 100 once a run succeeded, else its own progress within 0-100", () => {
    expect(runProgress(recordedStatus)).toBe(100);
    expect(runProgress(runningStatus)).toBe(Math.max(0, Math.min(100, runningStatus.progress)));
    expect(runProgress(failedStatus)).toBe(failedStatus.progress);
    expect(runProgress(failedStatus)).toBeLessThan(100);
  });
  it("turns the service's 1-based page into an offset", () => {
    expect(pageOffset(runs)).toBe(0);
    expect(pageOffset({ page: 3, page_size: runs.page_size })).toBe(2 * runs.page_size);
  });
});
