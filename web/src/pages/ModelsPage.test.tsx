import { render, screen, within } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { applications, brokenModel, demoModel } from "../test/fixtures";
import { stubFetch } from "../test/fetch";
import { ModelsPage } from "./ModelsPage";

describe("ModelsPage", () => {
  it("shows application and model cards without an API key, with metrics linked to their evaluation", async () => {
    const { calls } = stubFetch({
      "GET /applications": { body: applications },
      "GET /models": { body: [demoModel, brokenModel] },
    });
    render(<ModelsPage />);
    expect(screen.getByRole("status").textContent).toMatch(/Loading/);
    expect(await screen.findByRole("heading", { name: "Cell-type annotation" })).toBeTruthy();
    expect(screen.getByRole("heading", { name: "Evaluation" })).toBeTruthy();
    const card = screen.getByRole("heading", { name: "demo-logreg-pbmc68k" }).closest("section")!;
    expect(within(card).getByText("Ready")).toBeTruthy();
    expect(within(card).getByText(/log-normalised values/)).toBeTruthy();
    expect(within(card).getByText(/gene symbols/)).toBeTruthy();
    const link = within(card).getAllByRole("link", { name: /evaluation r_eval1/ })[0];
    expect(link.getAttribute("href")).toBe("#/evaluation/r_eval1");
    const broken = screen.getByRole("heading", { name: "scGPT human" }).closest("section")!;
    expect(within(broken).getByText("Not ready")).toBeTruthy();
    expect(within(broken).getByText(/weights file missing/)).toBeTruthy();
    expect(within(broken).getByText(/No stored evaluation yet/)).toBeTruthy();
    // public pages send no key
    expect(calls.every((c) => !new Headers(c.init?.headers).has("Authorization"))).toBe(true);
  });

  it("shows the service's error with its fix hint and a retry", async () => {
    stubFetch({
      "GET /applications": { status: 503, body: { error: { code: "db_down", message: "The database is unreachable.", hint: "Start PostgreSQL." } } },
      "GET /models": { body: [] },
    });
    render(<ModelsPage />);
    expect(await screen.findByText("The database is unreachable.")).toBeTruthy();
    expect(screen.getByText(/Start PostgreSQL/)).toBeTruthy();
    expect(screen.getByRole("button", { name: "Try again" })).toBeTruthy();
  });

  it("has an empty state when no model is registered", async () => {
    stubFetch({ "GET /applications": { body: applications }, "GET /models": { body: [] } });
    render(<ModelsPage />);
    expect(await screen.findByText("No models registered")).toBeTruthy();
  });
});
