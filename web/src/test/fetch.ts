// A fetch stand-in for component tests: answers by "METHOD /path" with JSON, records calls.
import { vi } from "vitest";

export type Route = { status?: number; body: unknown } | ((url: URL, init?: RequestInit) => { status?: number; body: unknown });

export function stubFetch(routes: Record<string, Route>) {
  const calls: { method: string; url: URL; init?: RequestInit }[] = [];
  const fn = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = new URL(String(input), "http://localhost");
    const method = (init?.method ?? "GET").toUpperCase();
    calls.push({ method, url, init });
    const key = `${method} ${url.pathname}`;
    const r = routes[key];
    if (!r) return new Response(JSON.stringify({ error: { code: "not_found", message: `no route ${key}`, hint: null } }), { status: 404 });
    const { status = 200, body } = typeof r === "function" ? r(url, init) : r;
    return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
  });
  vi.stubGlobal("fetch", fn);
  return { fn, calls };
}
