import { cleanup } from "@testing-library/react";
import { afterEach, vi } from "vitest";
import "../components/Plot";

// Plotly needs a real browser (canvas, WebGL); component tests check the data handed to it.
window.Plotly = { react: vi.fn(() => Promise.resolve()), purge: vi.fn() };

afterEach(() => {
  cleanup();
  window.localStorage.clear();
  window.location.hash = "";
});
