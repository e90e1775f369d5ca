import { fireEvent, render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { getApiKey } from "../api/client";
import { stubFetch } from "../test/fetch";
import { runs, unauthorized } from "../test/fixtures";
import { SettingsPage } from "./SettingsPage";

describe("SettingsPage", () => {
  it("keeps the key in localStorage and checks it with the service", async () => {
    const { calls } = stubFetch({ "GET /runs": { body: runs } });
    render(<SettingsPage />);
    const input = screen.getByLabelText("API key") as HTMLInputElement;
    expect(input.type).toBe("password");
    fireEvent.change(input, { target: { value: " cf_abc " } });
    fireEvent.click(screen.getByRole("button", { name: "Save key" }));
    expect(await screen.findByText("Key saved and accepted by the service.")).toBeTruthy();
    expect(getApiKey()).toBe("cf_abc");
    expect(new Headers(calls[0].init!.headers).get("Authorization")).toBe("Bearer cf_abc");
    fireEvent.click(screen.getByRole("button", { name: "Forget key" }));
    expect(getApiKey()).toBe("");
  });

  it("says when the service rejects the key", async () => {
    stubFetch({ "GET /runs": { status: 401, body: unauthorized } });
    render(<SettingsPage />);
    fireEvent.change(screen.getByLabelText("API key"), { target: { value: "nope" } });
    fireEvent.click(screen.getByRole("button", { name: "Save key" }));
    expect(await screen.findByText(unauthorized.error.message)).toBeTruthy();
  });
});
