import { act, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { setApiKey } from "../api/client";
import { ReportView } from "../components/ReportView";
import { normModel, normReport } from "../api/normalize";
import { brokenModel, demoModel, report, uploadBody } from "../test/fixtures";
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
    xhr.respond(200, uploadBody());
    expect(await screen.findByTestId("validation-report")).toBeTruthy();
    expect(screen.getByTestId("dataset-id").textContent).toBe("d_abc");
    expect(screen.getByRole("button", { name: "Start a run with this data" }).hasAttribute("disabled")).toBe(false);
    expect(recentDatasets()[0].id).toBe("d_abc");
  });

  it("shows an unreadable file's reason and fix from the service", async () => {
    setApiKey("cf_test");
    stubFetch({ "GET /models": { body: [] } });
    vi.stubGlobal("XMLHttpRequest", FakeXHR);
    render(<UploadPage />);
    fireEvent.change(screen.getByLabelText("Or pick a file:"), { target: { files: [new File(["junk"], "x.h5ad")] } });
    FakeXHR.last.respond(422, { error: { code: "unreadable", message: "x.h5ad is not an HDF5 file", hint: "Upload the .h5ad written by anndata." } });
    expect(await screen.findByText("x.h5ad is not an HDF5 file")).toBeTruthy();
    expect(screen.getByText(/Upload the .h5ad written by anndata/)).toBeTruthy();
  });

  it("blocks submission when the report has errors and says why", async () => {
    setApiKey("cf_test");
    stubFetch({ "GET /models": { body: [] } });
    vi.stubGlobal("XMLHttpRequest", FakeXHR);
    render(<UploadPage />);
    fireEvent.change(screen.getByLabelText("Or pick a file:"), { target: { files: [new File(["a"], "bad.h5ad")] } });
    const bad = { ...report, ok: false, messages: [{ level: "error", code: "no_matrix", message: "No expression matrix found.", hint: "Store counts in X." }] };
    FakeXHR.last.respond(200, uploadBody({ report: bad }));
    expect(await screen.findByText("Submission is blocked")).toBeTruthy();
    expect(screen.getByRole("button", { name: "Start a run with this data" }).hasAttribute("disabled")).toBe(true);
    expect(screen.getByText(/Store counts in X/)).toBeTruthy();
  });
});

describe("ReportView", () => {
  it("says what was found in words and draws per-model coverage bars", () => {
    render(<ReportView report={normReport(report)} models={[normModel(demoModel), normModel(brokenModel)]} />);
    expect(screen.getByText(/2,638 cells × 32,738 genes/)).toBeTruthy();
    expect(screen.getByText(/Raw counts will be read from the main matrix \(X\)/)).toBeTruthy();
    expect(screen.getByText(/Genes are named by Ensembl gene IDs/)).toBeTruthy();
    expect(screen.getByText("Only 15 cells are labelled Megakaryocytes.")).toBeTruthy();
    expect(screen.getByText(/Merge rare types/)).toBeTruthy();
    const bar = screen.getByRole("progressbar", { name: "Gene coverage for scGPT human" });
    expect(bar.getAttribute("aria-valuenow")).toBe("10");
    expect(screen.getByText("too low to run")).toBeTruthy();
  });

  it("says when mouse genes are mapped to human orthologs", () => {
    const orthology = {
      species: "mouse", table: "Ensembl 105 human-mouse orthologs", n_genes: 15026, n_genes_mapped: 14990,
      n_human_genes: 14980, n_human_summed: 10, fraction_genes_mapped: 0.9976, fraction_counts_mapped: 0.991,
    };
    render(<ReportView report={normReport({ ...report, species: "mouse", species_source: "detected", orthology })} />);
    expect(screen.getByText(/The genes are mouse genes \(detected\); models see them as human orthologs/)).toBeTruthy();
    expect(screen.getByText(/14,990 of 15,026 genes \(99.8%\) and 99.1% of counts map to 14,980 human genes/)).toBeTruthy();
  });
});
