#!/usr/bin/env node
// The Run page's every-cell layout in Debian's headless Chromium against the real `cellfoundry serve`:
// drawn with WebGL, and a zoom (plotly relayout) fetches the viewport from GET /runs/{id}/layout.
// Usage: node e2e/layout.mjs   (env as e2e/run.mjs). Prints one line per check and "N passed, N failed".
import { readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { N_CELLS, PBMC3K, RUN_TIMEOUT, WEB, checks, exitUnlessReady, launchBrowser, log, startService, until } from "./harness.mjs";

exitUnlessReady();
let svc;
let browser;
let page;
const ARTIFACTS = process.env.E2E_ARTIFACTS ?? join(WEB, "e2e", "artifacts");
const { check, fail, finish } = checks({ artifacts: ARTIFACTS, page: () => page });

try {
  svc = await startService({ log });
  // set-up through the API: upload the real pbmc3k file, annotate it with a PCA layout of every cell
  const form = new FormData();
  form.append("file", new Blob([readFileSync(PBMC3K)]), basename(PBMC3K));
  const up = await fetch(`${svc.url}/upload`, { method: "POST", headers: { Authorization: `Bearer ${svc.key}` }, body: form });
  if (!up.ok) throw new Error(`upload answered ${up.status}: ${await up.text()}`);
  const dataset = await up.json();
  const sub = await svc.api("POST", "/submit", {
    dataset_id: dataset.id, model_id: "demo-logreg-pbmc68k", application_id: "annotation", params: { layout: "pca" },
  });
  if (sub.status >= 300) throw new Error(`submit answered ${sub.status}: ${sub.text}`);
  const runId = sub.json.run_id;
  await until(async () => {
    const s = (await svc.api("GET", `/status/${runId}`)).json;
    if (["failed", "cancelled"].includes(s.state)) throw new Error(`run ${s.state}: ${JSON.stringify(s.error)}`);
    return s.state === "succeeded";
  }, "the annotation", RUN_TIMEOUT, 1000);

  browser = await launchBrowser();
  page = await browser.context.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  const views = [];
  page.on("request", (r) => { if (r.url().includes(`/runs/${runId}/layout`)) views.push(new URL(r.url())); });
  await page.goto(`${svc.url}/`);
  await page.evaluate((k) => window.localStorage.setItem("cellfoundry.apiKey", k), svc.key);
  await page.goto(`${svc.url}/#/runs/${runId}`);
  const umap = page.getByTestId("umap");
  const view = page.getByTestId("layout-view");

  await check("the layout of every cell is drawn with WebGL from GET /runs/{id}/layout", async () => {
    await until(async () => (await umap.getAttribute("data-ready")) === "true" && (await view.getAttribute("data-mode")) === "points", "layout drawn", 60_000);
    if (views.length !== 1 || views[0].searchParams.has("x0")) throw new Error(`layout requests: ${views.map(String).join(", ")}`);
    const declared = Number(await umap.getAttribute("data-points"));
    if (declared !== N_CELLS) throw new Error(`points declared ${declared}, want ${N_CELLS}`);
    if ((await umap.getAttribute("data-webgl")) !== "true") throw new Error("the figure has no WebGL trace");
    // plotly's WebGL layer: canvases holding a live WebGL context, and no SVG markers
    const gl = await umap.evaluate((el) => [...el.querySelectorAll("canvas")].filter((c) => {
      const ctx = c.getContext("webgl") ?? c.getContext("experimental-webgl") ?? c.getContext("webgl2");
      return ctx && !ctx.isContextLost();
    }).length);
    if (gl < 1) throw new Error("no canvas with a WebGL context in the plot");
    const svgPoints = await umap.locator(".scatterlayer .point").count();
    if (svgPoints !== 0) throw new Error(`${svgPoints} SVG markers drawn`);
    const note = await page.getByTestId("umap-note").innerText();
    if (!note.includes(`all ${N_CELLS.toLocaleString("en-US")} cells`)) throw new Error(note);
  });

  await check("a zoom (plotly relayout) fetches the viewport and draws its cells", async () => {
    const ext = await page.evaluate(() => {
      const gd = document.querySelector('[data-testid="umap"] .js-plotly-plot');
      return { x: gd.layout.xaxis.range, y: gd.layout.yaxis.range };
    });
    // the right half, panned past the edge: outside what the first answer holds
    const w = ext.x[1] - ext.x[0];
    const box = { x0: ext.x[0] + w / 2, x1: ext.x[1] + w / 4, y0: ext.y[0], y1: ext.y[1] };
    const fetched = page.waitForRequest((r) => r.url().includes(`/runs/${runId}/layout?`) && new URL(r.url()).searchParams.has("x0"), { timeout: 30_000 });
    await page.evaluate((b) => {
      const gd = document.querySelector('[data-testid="umap"] .js-plotly-plot');
      return window.Plotly.relayout(gd, { "xaxis.range": [b.x0, b.x1], "yaxis.range": [b.y0, b.y1] });
    }, box);
    const req = new URL((await fetched).url());
    const x0 = Number(req.searchParams.get("x0"));
    if (Math.abs(x0 - box.x0) > 1e-6 * Math.max(1, Math.abs(box.x0))) throw new Error(`viewport x0 ${x0}, want ${box.x0}`);
    await until(async () => (await view.getAttribute("data-requests")) === "2" && (await view.getAttribute("data-loading")) === "false", "the viewport answer", 30_000);
    const n = Number(await umap.getAttribute("data-points"));
    if (!(n > 0 && n < N_CELLS)) throw new Error(`the viewport shows ${n} points, want some but fewer than ${N_CELLS}`);
    const note = await page.getByTestId("umap-note").innerText();
    if (!note.includes(`cells in view (of ${N_CELLS.toLocaleString("en-US")})`)) throw new Error(note);
    log(`zoomed: ${n} of ${N_CELLS} cells in view; request ${req.search}`);
    // double click's reset: the whole layout again
    await page.evaluate(() => {
      const gd = document.querySelector('[data-testid="umap"] .js-plotly-plot');
      return window.Plotly.relayout(gd, { "xaxis.autorange": true, "yaxis.autorange": true });
    });
    await until(async () => Number(await umap.getAttribute("data-points")) === N_CELLS, "every cell again", 30_000);
    if (views.at(-1).searchParams.has("x0")) throw new Error(`reset asked ${views.at(-1)}`);
  });

  await check("no page error happened", async () => {
    if (pageErrors.length) throw new Error(pageErrors.slice(0, 3).join(" | "));
  });
} catch (e) {
  fail(e);
}
process.exit(await finish(svc, browser));
