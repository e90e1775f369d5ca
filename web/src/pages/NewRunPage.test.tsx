import { fireEvent, render, screen, waitFor } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { setApiKey } from "../api/client";
import { coverageFor } from "../lib/datasets";
import { pct } from "../lib/format";
import { applications, brokenModel, demoModel, labelledUpload, models, pbmc3kModel, submitted, submitRefused, upload } from "../test/fixtures";
import { stubFetch } from "../test/fetch";
import { NewRunPage, modelBlocker } from "./NewRunPage";

const annotation = applications.find((a) => a.id === "annotation")!;
const minCoverage = annotation.params.find((p) => p.name === "min_coverage")!;

describe("modelBlocker", () => {
  it("says why a model cannot run a dataset: not ready, too few of its genes, no raw counts", () => {
    expect(modelBlocker(brokenModel, upload)).toBe(`Not ready: ${brokenModel.status}`);
    expect(modelBlocker(demoModel, upload)).toBeNull();
    for (const m of [demoModel, pbmc3kModel]) {
      const cov = coverageFor(labelledUpload.report, m.id);
      if (cov && cov.fraction_present < 0.3) expect(modelBlocker(m, labelledUpload)).toBe(`Only ${pct(cov.fraction_present)} of its genes are in this data.`);
    }
  });
});

/** Render the page for `upload` and the annotation application and submit with the defaults. */
async function submitAnnotation() {
  render(<NewRunPage initialDataset={upload.id} initialApp="annotation" />);
  const radio = (await screen.findByRole("radio", { name: new RegExp(`^${demoModel.name} `) })) as HTMLInputElement;
  await waitFor(() => expect(radio.checked).toBe(true));
  fireEvent.click(screen.getByRole("button", { name: "Next" }));
  fireEvent.click(await screen.findByRole("button", { name: "Next" }));
  fireEvent.click(await screen.findByRole("button", { name: "Submit run" }));
}

describe("NewRunPage", () => {
  it("offers only usable models, shows params with defaults and bounds, and submits", async () => {
    setApiKey("k");
    const { calls } = stubFetch({
      "GET /datasets": { body: [upload] },
      "GET /applications": { body: applications },
      "GET /applications/annotation/models": { body: models },
      "POST /submit": { status: 201, body: submitted },
    });
    render(<NewRunPage initialDataset={upload.id} />);
    fireEvent.click(await screen.findByRole("radio", { name: new RegExp(annotation.name) }));
    fireEvent.click(screen.getByRole("button", { name: "Next" }));
    const ok = await screen.findByRole("radio", { name: new RegExp(`^${demoModel.name} `) });
    await waitFor(() => expect((ok as HTMLInputElement).checked).toBe(true));
    const broken = screen.getByRole("radio", { name: new RegExp(`^${brokenModel.name} `) }) as HTMLInputElement;
    expect(broken.disabled).toBe(true);
    expect(screen.getByText(`Not ready: ${brokenModel.status}`)).toBeTruthy();
    fireEvent.click(screen.getByRole("button", { name: "Next" }));
    const input = screen.getByLabelText("min coverage") as HTMLInputElement;
    expect(input.value).toBe(String(minCoverage.default));
    fireEvent.change(input, { target: { value: String(minCoverage.maximum! + 1) } });
    expect(screen.getByText(`Must be at most ${minCoverage.maximum}.`)).toBeTruthy();
    expect(screen.getByRole("button", { name: "Next" }).hasAttribute("disabled")).toBe(true);
    fireEvent.change(input, { target: { value: "0.5" } });
    // label key: one of the dataset's obs columns
    const labelKey = screen.getByLabelText("label key") as HTMLSelectElement;
    expect([...labelKey.options].map((o) => o.value).slice(1)).toEqual(upload.report.obs_columns);
    fireEvent.change(labelKey, { target: { value: "bulk_labels" } });
    fireEvent.click(screen.getByRole("button", { name: "Next" }));
    fireEvent.click(screen.getByRole("button", { name: "Submit run" }));
    await waitFor(() => expect(window.location.hash).toBe(`#/runs/${submitted.run_id}`));
    const sub = calls.find((c) => c.method === "POST")!;
    const defaults = Object.fromEntries(annotation.params.filter((p) => p.default != null).map((p) => [p.name, p.default]));
    expect(JSON.parse(String(sub.init!.body))).toEqual({
      dataset_id: upload.id, model_id: demoModel.id, application_id: "annotation",
      params: { ...defaults, min_coverage: 0.5, label_key: "bulk_labels" },
    });
  });

  it("shows the service's refusal and stays on the page", async () => {
    setApiKey("k");
    stubFetch({
      "GET /datasets": { body: [upload] },
      "GET /applications": { body: applications },
      "GET /applications/annotation/models": { body: [demoModel] },
      "POST /submit": { status: 422, body: submitRefused },
    });
    await submitAnnotation();
    expect(await screen.findByText(submitRefused.error.message)).toBeTruthy();
    expect(screen.getByText(submitRefused.error.hint!)).toBeTruthy();
    expect(screen.getByText("The service refused this run")).toBeTruthy();
  });

  it("sends the same Idempotency-Key when the same run is submitted again after a failure", async () => {
    setApiKey("k");
    let answers = 0;
    const { calls } = stubFetch({
      "GET /datasets": { body: [upload] },
      "GET /applications": { body: applications },
      "GET /applications/annotation/models": { body: [demoModel] },
      // the first answer is lost behind a proxy (the run may well have been created)
      "POST /submit": () => (++answers === 1
        ? { status: 502, body: { error: { code: "bad_gateway", message: "proxy error", hint: null } } }
        : { status: 201, body: submitted }),
    });
    await submitAnnotation();
    expect(await screen.findByText("proxy error")).toBeTruthy();
    fireEvent.click(screen.getByRole("button", { name: "Submit run" }));
    await waitFor(() => expect(window.location.hash).toBe(`#/runs/${submitted.run_id}`));
    const keys = calls.filter((c) => c.method === "POST").map((c) => (c.init!.headers as Record<string, string>)["Idempotency-Key"]);
    expect(keys).toHaveLength(2);
    expect(keys[0]).toMatch(/^[0-9a-f]{32}$/);
    expect(keys[1]).toBe(keys[0]);
  });

  it("combines models for a consensus: model_id plus the ticked others in params.other_model_ids", async () => {
    setApiKey("k");
    const consensus = applications.find((a) => a.id === "consensus")!;
    const { calls } = stubFetch({
      "GET /datasets": { body: [labelledUpload] },
      "GET /applications": { body: applications },
      "GET /applications/consensus/models": { body: models },
      "POST /submit": { status: 201, body: { run_id: "r_cons", state: "queued" } },
    });
    render(<NewRunPage initialDataset={labelledUpload.id} initialApp="consensus" />);
    const first = (await screen.findByRole("radio", { name: new RegExp(`^${demoModel.name} `) })) as HTMLInputElement;
    await waitFor(() => expect(first.checked).toBe(true));
    // one model is not a consensus: Next waits for another model to be ticked
    expect(screen.getByRole("button", { name: "Next" }).hasAttribute("disabled")).toBe(true);
    const boxes = screen.getByTestId("consensus-models").querySelectorAll("input[type=checkbox]");
    expect([...boxes].map((b) => (b as HTMLInputElement).value)).toEqual(models.filter((m) => m.id !== demoModel.id).map((m) => m.id));
    const box = (id: string) => [...boxes].find((b) => (b as HTMLInputElement).value === id) as HTMLInputElement;
    expect(box(brokenModel.id).disabled).toBe(true);
    fireEvent.click(box(pbmc3kModel.id));
    fireEvent.click(screen.getByRole("button", { name: "Next" }));
    expect(screen.queryByLabelText("other model ids *")).toBeNull(); // chosen above, not typed
    fireEvent.click(screen.getByLabelText("explain"));
    fireEvent.click(screen.getByRole("button", { name: "Next" }));
    expect(screen.getByTestId("review-others").textContent).toBe(pbmc3kModel.id);
    fireEvent.click(screen.getByRole("button", { name: "Submit run" }));
    await waitFor(() => expect(window.location.hash).toBe("#/runs/r_cons"));
    const body = JSON.parse(String(calls.find((c) => c.method === "POST")!.init!.body));
    const defaults = Object.fromEntries(consensus.params.filter((p) => p.default != null).map((p) => [p.name, p.default]));
    expect(body).toEqual({
      dataset_id: labelledUpload.id, model_id: demoModel.id, application_id: "consensus",
      params: { ...defaults, explain: true, other_model_ids: [pbmc3kModel.id] },
    });
  });
});
