#!/usr/bin/env node
// Screenshots of every page with real data, into docs/screenshots/ (1280 px wide).
// Starts the real `cellfoundry serve` (temporary CELLFOUNDRY_HOME) and Debian's headless Chromium,
// uploads the real PBMC 3k file, runs an annotation, an evaluation and a failing run.
// Usage: node scripts/screenshots.mjs   (env: CELLFOUNDRY_BIN, CHROMIUM_PATH, CELLFOUNDRY_SHARED, SCREENSHOTS_DIR)
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { PBMC3K, REPO, launchBrowser, missing, startService, until } from "../e2e/harness.mjs";

const OUT = process.env.SCREENSHOTS_DIR ?? join(REPO, "docs", "screenshots");
const reasons = missing();
if (reasons.length) {
  console.error(`cannot take screenshots: ${reasons.join("; ")}`);
  process.exit(77);
}
mkdirSync(OUT, { recursive: true });
const log = (m) => console.log(m);

const svc = await startService({ log });
const browser = await launchBrowser({ width: 1280, height: 860 });
let code = 0;
try {
  const page = await browser.context.newPage();
  const shot = async (name) => {
    await page.waitForTimeout(400);
    await page.screenshot({ path: join(OUT, `${name}.png`), fullPage: true });
    log(`wrote ${join(OUT, `${name}.png`)}`);
  };
  const waitState = async (want, timeout = 600_000) =>
    until(async () => ((await page.getByTestId("run-state").count()) ? (await page.getByTestId("run-state").innerText()).trim() === want : false), `state ${want}`, timeout, 500);
  const plotsReady = async () =>
    until(async () => {
      const states = await page.locator("figure.plot").evaluateAll((els) => els.map((e) => e.getAttribute("data-ready")));
      return states.length > 0 && states.every((s) => s === "true");
    }, "plots drawn", 60_000);

  await page.goto(`${svc.url}/#/models`);
  await page.getByRole("heading", { name: "demo-logreg-pbmc68k" }).waitFor({ timeout: 60_000 });
  await shot("01-models");

  await page.goto(`${svc.url}/#/settings`);
  await page.getByLabel("API key", { exact: true }).fill(svc.key);
  await page.getByRole("button", { name: "Save key" }).click();
  await page.getByText("Key saved and accepted by the service.").waitFor();
  await shot("08-settings");

  await page.goto(`${svc.url}/#/upload`);
  await page.getByTestId("file-input").setInputFiles(PBMC3K);
  await page.getByTestId("validation-report").waitFor({ timeout: 120_000 });
  const datasetId = (await page.getByTestId("dataset-id").innerText()).trim();
  await shot("02-upload-report");

  await page.goto(`${svc.url}/#/new?dataset=${datasetId}`);
  await page.getByRole("radio", { name: /Cell-type annotation/ }).check();
  await page.getByRole("button", { name: "Next" }).click();
  await page.getByRole("radio", { name: /demo-logreg-pbmc68k/ }).waitFor();
  await shot("03-new-run-model");
  await page.getByRole("button", { name: "Next" }).click();
  await page.getByLabel("label key").selectOption("cell_type");
  await shot("04-new-run-parameters");
  await page.getByRole("button", { name: "Next" }).click();
  await page.getByTestId("submit-run").click();
  await page.waitForURL(/#\/runs\/r_/);
  await page.waitForTimeout(1500);
  await shot("05-run-in-progress");
  await waitState("succeeded");
  await plotsReady();
  await shot("06-run-results");
  // by predicted type the layout is WebGL (no SVG markers): hover a point of the confidence view
  await page.getByRole("button", { name: "Confidence" }).click();
  await plotsReady();
  await page.getByTestId("umap").locator(".scatterlayer .point").nth(100).hover({ force: true });
  await page.waitForTimeout(500);
  await page.getByTestId("umap").screenshot({ path: join(OUT, "06b-umap-hover.png") });
  await page.getByLabel("Your obs column").selectOption("cell_type");
  await plotsReady();
  await page.mouse.move(5, 5);
  await page.getByTestId("umap").screenshot({ path: join(OUT, "06c-umap-by-obs-column.png") });

  const failing = await svc.api("POST", "/submit", { dataset_id: datasetId, model_id: "demo-logreg-pbmc68k", application_id: "evaluation", params: { label_key: "no_such_column" } });
  await page.goto(`${svc.url}/#/runs/${failing.json.run_id}`);
  await waitState("failed", 180_000);
  await shot("07-run-failed");

  await page.goto(`${svc.url}/#/evaluation`);
  await page.getByLabel("Application").selectOption({ label: "Evaluation" });
  await page.getByLabel("Labelled dataset").selectOption(datasetId);
  await page.getByLabel("label key *").selectOption("cell_type");
  await shot("09-evaluation-launch");
  await page.getByRole("button", { name: "Launch comparison" }).click();
  await page.getByTestId("evaluation-report").waitFor({ timeout: 600_000 });
  await plotsReady();
  await shot("10-evaluation-report");

  await page.goto(`${svc.url}/#/runs`);
  await page.getByTestId("runs-table").waitFor();
  await shot("11-runs");
} catch (e) {
  console.error(e);
  code = 1;
} finally {
  await browser.close();
  await svc.shutdown();
}
process.exit(code);
