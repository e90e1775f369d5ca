import { fireEvent, render, screen, waitFor } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { setApiKey } from "../api/client";
import { applications, brokenModel, demoModel, uploadBody } from "../test/fixtures";
import { stubFetch } from "../test/fetch";
import { NewRunPage } from "./NewRunPage";

describe("NewRunPage", () => {
  it("offers only usable models, shows params with defaults, and submits", async () => {
    setApiKey("k");
    const lowCoverage = { ...brokenModel, id: "scgpt-human", ready: true, status: "ready" };
    const { calls } = stubFetch({
      "GET /datasets": { body: [{ ...uploadBody(), id: "d_abc" }] },
      "GET /applications": { body: applications },
      "GET /applications/annotation/models": { body: [demoModel, lowCoverage] },
      "POST /submit": { status: 201, body: { run_id: "r_new", state: "queued" } },
    });
    render(<NewRunPage initialDataset="d_abc" />);
    fireEvent.click(await screen.findByRole("radio", { name: /Cell-type annotation/ }));
    fireEvent.click(screen.getByRole("button", { name: "Next" }));
    const ok = await screen.findByRole("radio", { name: /demo-logreg-pbmc68k/ });
    const low = screen.getByRole("radio", { name: /scGPT human/ });
    await waitFor(() => expect((ok as HTMLInputElement).checked).toBe(true));
    expect((low as HTMLInputElement).disabled).toBe(true);
    expect(screen.getByText(/Only 10.0% of its genes are in this data/)).toBeTruthy();
    fireEvent.click(screen.getByRole("button", { name: "Next" }));
    expect((screen.getByLabelText("min coverage") as HTMLInputElement).value).toBe("0.3");
    fireEvent.change(screen.getByLabelText("min coverage"), { target: { value: "2" } });
    expect(screen.getByText("Must be at most 1.")).toBeTruthy();
    expect(screen.getByRole("button", { name: "Next" }).hasAttribute("disabled")).toBe(true);
    fireEvent.change(screen.getByLabelText("min coverage"), { target: { value: "0.5" } });
    fireEvent.change(screen.getByLabelText("label key"), { target: { value: "cell_type" } });
    fireEvent.click(screen.getByRole("button", { name: "Next" }));
    fireEvent.click(screen.getByRole("button", { name: "Submit run" }));
    await waitFor(() => expect(window.location.hash).toBe("#/runs/r_new"));
    const sub = calls.find((c) => c.method === "POST")!;
    expect(JSON.parse(String(sub.init!.body))).toEqual({
      dataset_id: "d_abc", model_id: "demo-logreg-pbmc68k", application_id: "annotation",
      params: { min_coverage: 0.5, layout: "umap", label_key: "cell_type" },
    });
  });

  it("shows the service's refusal and stays on the page", async () => {
    setApiKey("k");
    stubFetch({
      "GET /datasets": { body: [{ ...uploadBody(), id: "d_abc" }] },
      "GET /applications": { body: applications },
      "GET /applications/annotation/models": { body: [demoModel] },
      "POST /submit": { status: 422, body: { error: { code: "invalid_params", message: "invalid params for application 'annotation'", hint: "see GET /applications" } } },
    });
    render(<NewRunPage initialDataset="d_abc" initialApp="annotation" />);
    const radio = (await screen.findByRole("radio", { name: /demo-logreg-pbmc68k/ })) as HTMLInputElement;
    await waitFor(() => expect(radio.checked).toBe(true));
    fireEvent.click(screen.getByRole("button", { name: "Next" }));
    fireEvent.click(await screen.findByRole("button", { name: "Next" }));
    fireEvent.click(await screen.findByRole("button", { name: "Submit run" }));
    expect(await screen.findByText("invalid params for application 'annotation'")).toBeTruthy();
    expect(screen.getByText("The service refused this run")).toBeTruthy();
  });
});
