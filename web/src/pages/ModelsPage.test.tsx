import { render, screen, within } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { applications, brokenModel, demoModel, models, notFound, pbmc3kModel } from "../test/fixtures";
import { num } from "../lib/format";
import { stubFetch } from "../test/fetch";
import { ModelsPage } from "./ModelsPage";

describe("ModelsPage", () => {
  it("shows application and model cards without an API key, with metrics linked to their evaluation", async () => {
    const { calls } = stubFetch({
      "GET /applications": { body: applications },
      "GET /models": { body: models },
    });
    render(<ModelsPage />);
    expect(screen.getByRole("status").textContent).toMatch(/Loading/);
    for (const a of applications) expect(await screen.findByRole("heading", { name: a.name })).toBeTruthy();
    const card = screen.getByRole("heading", { name: demoModel.name }).closest("section")!;
    expect(within(card).getByText("Ready")).toBeTruthy();
    expect(within(card).getByText(/log-normalised values/)).toBeTruthy();
    expect(within(card).getByText(/gene symbols/)).toBeTruthy();
    // the training hold-out's figures, with their source
    const held = demoModel.metrics.training_holdout;
    const table = within(card).getByRole("table", { name: `Metrics of ${demoModel.name}` });
    const row = (t: HTMLElement, metric: string, source = "held-out split at training") =>
      [...t.querySelectorAll("tbody tr")].find((tr) => tr.querySelector("td")!.textContent === metric && tr.textContent!.includes(source))!;
    expect(row(table, "macro f1").textContent).toContain(num(held.macro_f1));
    // the stored evaluation's figures link to the evaluation run
    const [ev] = pbmc3kModel.metrics.evaluations;
    const evCard = screen.getByRole("heading", { name: pbmc3kModel.name }).closest("section")!;
    const links = within(evCard).getAllByRole("link", { name: `evaluation ${ev.run_id}` });
    expect(links[0].getAttribute("href")).toBe(`#/evaluation/${ev.run_id}`);
    const evRow = row(within(evCard).getByRole("table"), "accuracy", `evaluation ${ev.run_id}`);
    expect(evRow.textContent).toContain(num(ev.metrics.accuracy));
    expect(evRow.textContent).toContain(`evaluation ${ev.run_id}`);
    const broken = screen.getByRole("heading", { name: brokenModel.name }).closest("section")!;
    expect(within(broken).getByText("Not ready")).toBeTruthy();
    expect(within(broken).getByText(brokenModel.status)).toBeTruthy();
    expect(brokenModel.metrics.evaluations).toHaveLength(0);
    // public pages send no key
    expect(calls.every((c) => !new Headers(c.init?.headers).has("Authorization"))).toBe(true);
  });

  it("shows the service's error with its fix hint and a retry", async () => {
    stubFetch({
      // a recorded error answer (another route's: the catalogue has no refusal to record)
      "GET /applications": { status: 404, body: notFound },
      "GET /models": { body: [] },
    });
    render(<ModelsPage />);
    expect(await screen.findByText(notFound.error.message)).toBeTruthy();
    expect(screen.getByText(notFound.error.hint!)).toBeTruthy();
    expect(screen.getByRole("button", { name: "Try again" })).toBeTruthy();
  });

  it("has an empty state when no model is registered", async () => {
    stubFetch({ "GET /applications": { body: applications }, "GET /models": { body: [] } });
    render(<ModelsPage />);
    expect(await screen.findByText("No models registered")).toBeTruthy();
  });
});
