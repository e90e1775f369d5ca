import { act, render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { App } from "./App";
import { applications, demoModel, recordedResults, recordedStatus } from "./test/fixtures";
import { stubFetch } from "./test/fetch";

describe("App shell", () => {
  it("routes by hash, marks the current page in the navigation, and has a not-found page", async () => {
    stubFetch({ "GET /applications": { body: applications }, "GET /models": { body: [demoModel] } });
    render(<App />);
    expect(await screen.findByRole("heading", { level: 1, name: "Models & applications" })).toBeTruthy();
    expect(screen.getByRole("link", { name: "Models & applications" }).getAttribute("aria-current")).toBe("page");
    expect(screen.getByRole("link", { name: /No API key/ })).toBeTruthy();
    await act(async () => {
      window.location.hash = "#/settings";
      window.dispatchEvent(new HashChangeEvent("hashchange"));
    });
    expect(screen.getByRole("heading", { level: 1, name: "Settings" })).toBeTruthy();
    expect(screen.getByRole("link", { name: "Settings" }).getAttribute("aria-current")).toBe("page");
    await act(async () => {
      window.location.hash = "#/nowhere";
      window.dispatchEvent(new HashChangeEvent("hashchange"));
    });
    expect(screen.getByText("Page not found")).toBeTruthy();
  });
});

describe("App routing between runs", () => {
  it("never shows the previous run's state for a newly opened run", async () => {
    const { setApiKey } = await import("./api/client");
    const { vi } = await import("vitest");
    setApiKey("k");
    const done = recordedStatus;
    vi.stubGlobal("fetch", vi.fn(async (input: RequestInfo | URL) => {
      const path = new URL(String(input), "http://localhost").pathname;
      if (path === `/status/${done.id}`) return new Response(JSON.stringify(done), { status: 200 });
      if (path === `/results/${done.id}`) return new Response(JSON.stringify(recordedResults), { status: 200 });
      return new Promise<Response>(() => {}); // the new run's status is still on its way
    }));
    await act(async () => {
      window.location.hash = `#/runs/${done.id}`;
    });
    render(<App />);
    expect((await screen.findAllByTestId("run-state"))[0].textContent).toBe("succeeded");
    await act(async () => {
      window.location.hash = "#/runs/r_new";
      window.dispatchEvent(new HashChangeEvent("hashchange"));
    });
    expect(screen.queryAllByTestId("run-state").map((e) => e.textContent)).not.toContain("succeeded");
    expect(screen.getByText("Loading the run…")).toBeTruthy();
  });
});
