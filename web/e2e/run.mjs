#!/usr/bin/env node
// End-to-end tests of the web UI in Debian's headless Chromium against the real `cellfoundry serve`.
// Usage: node e2e/run.mjs   (env: CELLFOUNDRY_BIN, CHROMIUM_PATH, CELLFOUNDRY_SHARED, E2E_ARTIFACTS)
// Prints one line per check and a closing "N passed, N failed" line; exit 0 only when all pass.
// Exit code 77 (with a reason) when the environment cannot run them (no Chromium, no build, no data).
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { N_CELLS, PBMC3K, RUN_TIMEOUT, WEB, checks, exitUnlessReady, launchBrowser, log, startService, until } from "./harness.mjs";

exitUnlessReady();

const ARTIFACTS = process.env.E2E_ARTIFACTS ?? join(WEB, "e2e", "artifacts");
let svc;
let browser;
let page;
const { check, fail, finish } = checks({ artifacts: ARTIFACTS, page: () => page });

const text = (sel) => page.locator(sel).first().innerText();

async function waitRunState(want, timeout = RUN_TIMEOUT) {
  await page.getByTestId("run-state").first().waitFor({ timeout: 30_000 });
  return until(async () => {
    const s = (await text('[data-testid="run-state"]')).trim();
    if (s === want) return s;
    if (["succeeded", "failed", "cancelled"].includes(s) && s !== want) {
      const err = (await page.getByTestId("run-error").count()) ? await text('[data-testid="run-error"]') : "";
      throw new Error(`run ended ${s} (wanted ${want}) ${err}`);
    }
    return null;
  }, `run state ${want}`, timeout, 500);
}

for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(sig, async () => {
    console.log(`# ${sig}: stopping the service and the browser`);
    await browser?.close();
    await svc?.shutdown();
    process.exit(130);
  });
}

try {
  const t0 = Date.now();
  svc = await startService({ log });
  browser = await launchBrowser();
  page = await browser.context.newPage();
  const consoleErrors = [];
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  const external = [];
  page.on("request", (r) => { if (!r.url().startsWith(svc.url) && !r.url().startsWith("blob:") && !r.url().startsWith("data:")) external.push(r.url()); });

  let datasetId = "";
  let runId = "";

  await check("models and applications load without an API key", async () => {
    await page.goto(`${svc.url}/`);
    await page.getByRole("heading", { name: "Cell-type annotation" }).waitFor({ timeout: 30_000 });
    await page.getByRole("heading", { name: "demo-logreg-pbmc68k" }).waitFor();
    const card = page.locator("section.model-card").first();
    if (!/Ready/.test(await card.innerText())) throw new Error("demo model not shown as ready");
  });

  await check("pages that need a key say so", async () => {
    await page.goto(`${svc.url}/#/runs`);
    await page.getByText("An API key is needed").waitFor();
  });

  await check("settings stores the key and the service accepts it", async () => {
    await page.goto(`${svc.url}/#/settings`);
    await page.getByLabel("API key", { exact: true }).fill("cf_wrong_key");
    await page.getByRole("button", { name: "Save key" }).click();
    await page.getByText("Key saved, but the service did not accept it").waitFor();
    await page.getByLabel("API key", { exact: true }).fill(svc.key);
    await page.getByRole("button", { name: "Save key" }).press("Enter");
    await page.getByText("Key saved and accepted by the service.").waitFor();
  });

  await check("upload a real h5ad: progress, report in plain language, coverage per model", async () => {
    await page.goto(`${svc.url}/#/upload`);
    await page.getByTestId("file-input").setInputFiles(PBMC3K);
    await page.getByTestId("validation-report").waitFor({ timeout: 120_000 });
    const report = await text('[data-testid="validation-report"]');
    for (const want of ["2,638 cells × 32,738 genes", "Raw counts will be read from the main matrix (X)", "Ensembl gene IDs", "cell_type"]) {
      if (!report.includes(want)) throw new Error(`report lacks "${want}":\n${report}`);
    }
    const bar = page.getByRole("progressbar", { name: "Gene coverage for demo-logreg-pbmc68k" });
    if ((await bar.getAttribute("aria-valuenow")) !== "100") throw new Error("coverage bar is not 100%");
    datasetId = (await text('[data-testid="dataset-id"]')).trim();
    if (!/^d_/.test(datasetId)) throw new Error(`no dataset id: ${datasetId}`);
  });

  await check("an unreadable file is refused with the reason", async () => {
    await page.goto(`${svc.url}/#/upload`);
    await page.getByTestId("file-input").setInputFiles({ name: "broken.h5ad", mimeType: "application/octet-stream", buffer: Buffer.from("this is not HDF5") });
    await page.getByText("Could not use broken.h5ad").waitFor({ timeout: 60_000 });
    const msg = await page.locator(".alert-error").first().innerText();
    if (!/broken\.h5ad/.test(msg) || !/Fix:/.test(msg)) throw new Error(`no reason and fix shown: ${msg}`);
  });

  await check("new-run wizard submits an annotation (keyboard and mouse)", async () => {
    await page.goto(`${svc.url}/#/new?dataset=${datasetId}`);
    await page.getByRole("radio", { name: /Cell-type annotation/ }).check();
    await page.getByRole("button", { name: "Next" }).click();
    const model = page.getByRole("radio", { name: /demo-logreg-pbmc68k/ });
    await model.waitFor();
    if (!(await model.isChecked())) throw new Error("the usable model is not preselected");
    await page.getByRole("button", { name: "Next" }).click();
    await page.getByLabel("label key").selectOption("cell_type");
    await page.getByRole("button", { name: "Next" }).focus();
    await page.keyboard.press("Enter");
    await page.getByTestId("submit-run").click();
    await page.waitForURL(/#\/runs\/r_/, { timeout: 30_000 });
    runId = decodeURIComponent(page.url().split("#/runs/")[1]);
  });

  await check("run page follows the run to success and draws the UMAP with every cell", async () => {
    await waitRunState("succeeded");
    const umap = page.getByTestId("umap");
    // by predicted type: every cell from GET /runs/{id}/layout, drawn with WebGL (e2e/layout.mjs zooms)
    await until(async () => (await umap.getAttribute("data-ready")) === "true"
      && (await page.getByTestId("layout-view").getAttribute("data-mode")) === "points", "UMAP drawn", 60_000);
    const declared = Number(await umap.getAttribute("data-points"));
    if (declared !== N_CELLS) throw new Error(`UMAP points: declared ${declared}, want ${N_CELLS}`);
    if ((await umap.getAttribute("data-webgl")) !== "true") throw new Error("the UMAP is not drawn with WebGL");
    const note = await text('[data-testid="umap-note"]');
    if (!note.includes("all 2,638 cells")) throw new Error(note);
    // colour by confidence, then by the user's obs column
    await page.getByRole("button", { name: "Confidence" }).click();
    await until(async () => (await umap.locator(".scatterlayer .trace").count()) === 1, "one confidence trace", 20_000);
    await page.getByLabel("Your obs column").selectOption("cell_type");
    await until(async () => (await umap.locator(".scatterlayer .trace").count()) === 8, "8 traces for the 8 true types", 20_000);
    // the Unknown threshold line on the histogram, and one bar per predicted type
    await page.getByTestId("confidence-histogram").locator(".shapelayer path").first().waitFor({ state: "attached", timeout: 20_000 });
    await page.getByTestId("counts-bar").locator(".bars .point").first().waitFor({ state: "attached", timeout: 20_000 });
    const rows = await page.getByTestId("cells-table").locator("tbody tr").count();
    if (rows !== 25) throw new Error(`cell table shows ${rows} rows, want 25`);
    await page.getByRole("button", { name: "Next" }).click();
    await page.getByText("Page 2 of 106").waitFor();
  });

  await check("hovering a UMAP point shows label, confidence and top 3", async () => {
    const pt = page.getByTestId("umap").locator(".scatterlayer .point").first();
    await pt.hover({ force: true });
    const hover = page.getByTestId("umap").locator(".hoverlayer");
    await until(async () => /confidence/.test((await hover.textContent()) ?? ""), "hover label", 10_000);
    const t = (await hover.textContent()) ?? "";
    if (!/top 3/.test(t)) throw new Error(`hover text: ${t}`);
  });

  await check("downloads: annotated h5ad and predictions csv", async () => {
    const [h5] = await Promise.all([page.waitForEvent("download", { timeout: 180_000 }), page.getByTestId("download-h5ad").click()]);
    const h5path = await h5.path();
    const head = readFileSync(h5path).subarray(0, 8);
    if (!head.equals(Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]))) throw new Error("the .h5ad is not an HDF5 file");
    if (!h5.suggestedFilename().endsWith(".h5ad")) throw new Error(h5.suggestedFilename());
    log(`h5ad ${statSync(h5path).size} bytes`);
    const [csv] = await Promise.all([page.waitForEvent("download", { timeout: 60_000 }), page.getByTestId("download-csv").click()]);
    const lines = readFileSync(await csv.path(), "utf8").trim().split("\n");
    if (lines.length !== N_CELLS + 1) throw new Error(`csv has ${lines.length} lines, want ${N_CELLS + 1}`);
    if (!/predicted_cell_type/.test(lines[0])) throw new Error(`csv header: ${lines[0]}`);
  });

  await check("a failing run shows its error, not an endless spinner", async () => {
    const r = await svc.api("POST", "/submit", { dataset_id: datasetId, model_id: "demo-logreg-pbmc68k", application_id: "evaluation", params: { label_key: "no_such_column" } });
    if (r.status >= 300) throw new Error(`submit answered ${r.status}: ${r.text}`);
    await page.goto(`${svc.url}/#/runs/${r.json.run_id}`);
    await waitRunState("failed", 120_000);
    const err = await text('[data-testid="run-error"]');
    if (!/no_such_column/.test(err)) throw new Error(`error shown: ${err}`);
    await page.goto(`${svc.url}/#/runs`);
    await page.getByLabel("Status").selectOption("failed");
    await page.getByTestId("runs-table").getByText(r.json.run_id).waitFor();
  });

  await check("evaluation page launches an evaluation and renders the real report", async () => {
    await page.goto(`${svc.url}/#/evaluation`);
    await page.getByLabel("Application").selectOption({ label: "Evaluation" });
    await page.getByLabel("Labelled dataset").selectOption(datasetId);
    await page.getByLabel("label key *").selectOption("cell_type");
    await page.getByRole("button", { name: "Launch comparison" }).click();
    await page.waitForURL(/#\/evaluation\/r_/, { timeout: 30_000 });
    await page.getByTestId("evaluation-report").waitFor({ timeout: RUN_TIMEOUT });
    const verdict = await text('[data-testid="verdict"]');
    if (verdict.length < 40) throw new Error(`verdict: ${verdict}`);
    const rows = await page.getByTestId("summary-table").locator("tbody tr").count();
    if (rows < 2) throw new Error(`summary table has ${rows} rows`);
    const heat = page.locator('[data-testid^="confusion-"]').first();
    await until(async () => (await heat.getAttribute("data-ready")) === "true", "confusion heatmap", 30_000);
    await page.getByTestId("most-confused").waitFor();
    log(`verdict: ${verdict}`);
  });

  await check("no request left the machine and no page error happened", async () => {
    if (external.length) throw new Error(`external requests: ${external.slice(0, 5).join(", ")}`);
    if (consoleErrors.length) throw new Error(`page errors: ${consoleErrors.slice(0, 3).join(" | ")}`);
  });
  log(`total ${((Date.now() - t0) / 1000).toFixed(1)} s`);
} catch (e) {
  fail(e);
}
process.exit(await finish(svc, browser));
