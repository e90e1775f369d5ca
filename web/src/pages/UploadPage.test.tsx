import { act, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { setApiKey } from "../api/client";
import { ReportView } from "../components/ReportView";
import { brokenModel, demoModel, labelledUpload, pbmc3kModel, refusedUpload, upload } from "../test/fixtures";
import { coverageModelId } from "../lib/datasets";
import { count, pct } from "../lib/format";
import { stubFetch } from "../test/fetch";
import { recentDatasets } from "../lib/datasets";
import { UploadPage } from "./UploadPage";

class FakeXHR {
  static last: FakeXHR;
  upload: { onprogress: ((e: { lengthComputable: boolean; loaded: number; total: number }) => void) | null } = { onprogress: null };
  onload: (() => void) | null = null;
  onerror: (() => void) | null = null;
  onabort: (() => void) | null = null;
  status = 0;
  responseText = "";
  headers: Record<string, string> = {};
  method = "";
  url = "";
  sent: FormData | null = null;
  constructor() { FakeXHR.last = this; }
  open(m: string, u: string) { this.method = m; this.url = u; }
  setRequestHeader(k: string, v: string) { this.headers[k] = v; }
  send(body: FormData) { this.sent = body; }
  abort() { this.onabort?.(); }
  respond(status: number, body: unknown) { act(() => { this.status = status; this.responseText = JSON.stringify(body); this.onload?.(); }); }
}

describe("UploadPage", () => {
  it("asks for a key first", () => {
    stubFetch({ "GET /models": { body: [] } });
    render(<UploadPage />);
    expect(screen.getByText("An API key is needed")).toBeTruthy();
  });

  it("uploads with progress, then shows the report and remembers the dataset", async () => {
    setApiKey("cf_test");
    stubFetch({ "GET /models": { body: [demoModel, brokenModel] } });
    vi.stubGlobal("XMLHttpRequest", FakeXHR);
    render(<UploadPage />);
    const file = new File(["x".repeat(100)], "pbmc3k.h5ad");
    fireEvent.change(screen.getByLabelText("Or pick a file:"), { target: { files: [file] } });
    const xhr = FakeXHR.last;
    expect(xhr.method).toBe("POST");
    expect(xhr.url).toBe("/upload");
    expect(xhr.headers.Authorization).toBe("Bearer cf_test");
    expect((xhr.sent!.get("file") as File).name).toBe("pbmc3k.h5ad");
    act(() => xhr.upload.onprogress!({ lengthComputable: true, loaded: 40, total: 100 }));
    await waitFor(() => expect(screen.getByRole("progressbar", { name: "Upload progress" }).getAttribute("aria-valuenow")).toBe("40"));
    xhr.respond(200, upload);
    expect(await screen.findByTestId("validation-report")).toBeTruthy();
    expect(screen.getByTestId("dataset-id").textContent).toBe(upload.id);
    expect(screen.getByRole("button", { name: "Start a run with this data" }).hasAttribute("disabled")).toBe(false);
    expect(recentDatasets()[0].id).toBe(upload.id);
  });

  it("shows why the service refused a file, with its fix", async () => {
    setApiKey("cf_test");
    stubFetch({ "GET /models": { body: [] } });
    vi.stubGlobal("XMLHttpRequest", FakeXHR);
    render(<UploadPage />);
    fireEvent.change(screen.getByLabelText("Or pick a file:"), { target: { files: [new File(["a"], "scaled_only.h5ad")] } });
    // recorded: the pbmc68k cells with only their scaled matrix
    FakeXHR.last.respond(422, refusedUpload);
    expect(await screen.findByText(refusedUpload.error.message)).toBeTruthy();
    expect(screen.getByText(new RegExp(refusedUpload.error.hint!.slice(0, 40).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")))).toBeTruthy();
    expect(screen.queryByTestId("validation-report")).toBeNull();
    expect(recentDatasets()).toHaveLength(0);
  });
});

describe("ReportView", () => {
  it("says what was found in words: cells, matrices, the one used, gene names, obs columns, warnings", () => {
    const r = upload.report; // pbmc68k: scaled X, log-normalised raw/X, gene symbols
    render(<ReportView report={r} models={[demoModel]} />);
    expect(screen.getByText(`${count(r.n_cells)} cells × ${count(r.n_genes)} genes (${r.species}).`)).toBeTruthy();
    expect(screen.getByText("Matrices found: the main matrix (X) holding scaled (z-scored) values; the .raw matrix holding log-normalised values.")).toBeTruthy();
    expect(screen.getByText("Log-normalised values will be read from the .raw matrix.")).toBeTruthy();
    expect(screen.getByText(/No raw counts were found/)).toBeTruthy();
    expect(screen.getByText(/Genes are named by gene symbols/)).toBeTruthy();
    expect(screen.getByText(`Cell annotations (obs columns): ${r.obs_columns.join(", ")}.`)).toBeTruthy();
    for (const m of r.messages.filter((x) => x.level === "warning")) {
      expect(screen.getByText(m.message)).toBeTruthy();
      if (m.hint) expect(screen.getByText(m.hint)).toBeTruthy();
    }
    for (const m of r.messages.filter((x) => x.level === "info")) expect(screen.getByText(m.message)).toBeTruthy();
    expect(screen.getByText("The file is readable and ready to use.")).toBeTruthy();
  });

  it("draws a coverage bar per model, named by the model, and marks too-low coverage", () => {
    const r = labelledUpload.report; // pbmc3k: raw counts
    render(<ReportView report={r} models={[demoModel, pbmc3kModel, brokenModel]} />);
    expect(screen.getByText(/Raw counts will be read from the main matrix \(X\)/)).toBeTruthy();
    expect(r.coverage.length).toBeGreaterThan(0);
    for (const c of r.coverage) {
      const name = [demoModel, pbmc3kModel, brokenModel].find((m) => m.id === coverageModelId(c))?.name ?? coverageModelId(c);
      const bar = screen.getByRole("progressbar", { name: `Gene coverage for ${name}` });
      expect(Number(bar.getAttribute("aria-valuenow"))).toBeCloseTo(c.fraction_present * 100, 6);
      expect(screen.getByTestId(`coverage-${coverageModelId(c)}`).textContent).toContain(`(${pct(c.fraction_present)})`);
    }
    const low = r.coverage.filter((c) => c.fraction_present < 0.3).length;
    expect(screen.queryAllByText("too low to run")).toHaveLength(low);
  });
});
