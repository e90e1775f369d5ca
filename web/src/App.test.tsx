import { act, render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { App } from "./App";
import { applications, demoModel } from "./test/fixtures";
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
