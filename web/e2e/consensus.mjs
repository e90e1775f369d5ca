#!/usr/bin/env node
// Consensus, per-cell evidence and the ontology level in Debian's headless Chromium against the real
// `cellfoundry serve`: a second model is fine-tuned on pbmc3k through the API, then the New Run
// wizard combines it with the demo model (explain on); the Run page shows the agreement, a clicked
// cell's genes, the Broad types toggle rolls the labels up, the layout shows every cell by one
// model's calls at that level, a broader term the service offers (T cell) is chosen, and a typed
// term that is not in the Cell Ontology is refused with a hint.
// Usage: node e2e/consensus.mjs   (env as e2e/run.mjs). Prints one line per check and "N passed, N failed".
import { readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { PBMC3K, RUN_TIMEOUT, WEB, checks, exitUnlessReady, launchBrowser, log, startService, until } from "./harness.mjs";

exitUnlessReady();
let svc;
let browser;
let page;
const ARTIFACTS = process.env.E2E_ARTIFACTS ?? join(WEB, "e2e", "artifacts");
const { check, fail, finish } = checks({ artifacts: ARTIFACTS, page: () => page });
const DEMO = "demo-logreg-pbmc68k";

async function finished(runId) {
  let last;
  await until(async () => {
    last = (await svc.api("GET", `/status/${runId}`)).json;
    if (["failed", "cancelled"].includes(last.state)) throw new Error(`run ${last.state}: ${JSON.stringify(last.error)}`);
    return last.state === "succeeded";
  }, `run ${runId}`, RUN_TIMEOUT, 1000);
  return last;
}

const tableLabels = async () => page.getByTestId("cells-table").locator("tbody tr td:nth-child(2)").allInnerTexts();

try {
  svc = await startService({ log });
  // set-up through the API: upload pbmc3k, fine-tune a second model on its cell_type labels
  const form = new FormData();
  form.append("file", new Blob([readFileSync(PBMC3K)]), basename(PBMC3K));
  const up = await fetch(`${svc.url}/upload`, { method: "POST", headers: { Authorization: `Bearer ${svc.key}` }, body: form });
  if (!up.ok) throw new Error(`upload answered ${up.status}: ${await up.text()}`);
  const dataset = await up.json();
  const tune = await svc.api("POST", "/submit", {
    dataset_id: dataset.id, model_id: DEMO, application_id: "finetune", params: { label_key: "cell_type", name: "pbmc3k-cell-type" },
  });
  if (tune.status >= 300) throw new Error(`fine-tune submit answered ${tune.status}: ${tune.text}`);
  await finished(tune.json.run_id);
  const other = (await svc.api("GET", `/results/${tune.json.run_id}`)).json.summary.new_model_id;
  if (!other) throw new Error("the fine-tune registered no model");
  log(`second model: ${other}`);

  browser = await launchBrowser();
  page = await browser.context.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  await page.goto(`${svc.url}/`);
  await page.evaluate((k) => window.localStorage.setItem("cellfoundry.apiKey", k), svc.key);

  await check("the wizard submits a consensus of two models with explain, and the Run page shows their agreement", async () => {
    await page.goto(`${svc.url}/#/new?dataset=${dataset.id}`);
    await page.getByRole("radio", { name: /Consensus of models/ }).check();
    await page.getByRole("button", { name: "Next" }).click();
    await page.locator(`input[name="model"][value="${DEMO}"]`).check();
    const next = page.getByRole("button", { name: "Next" });
    if (await next.isEnabled()) throw new Error("Next is enabled with one model: a consensus needs two");
    await page.locator(`input[name="other-model"][value="${other}"]`).check();
    await next.click();
    await page.getByLabel("explain").check();
    await page.getByRole("button", { name: "Next" }).click();
    if ((await page.getByTestId("review-others").innerText()).trim() !== other) throw new Error("review does not list the second model");
    await page.getByTestId("submit-run").click();
    await page.waitForURL(/#\/runs\/r_/, { timeout: 30_000 });
    await until(async () => {
      const s = (await page.getByTestId("run-state").first().innerText().catch(() => "")).trim();
      if (["failed", "cancelled"].includes(s)) throw new Error(`the consensus ${s}: ${await page.getByTestId("run-error").innerText().catch(() => "")}`);
      return s === "succeeded";
    }, "the consensus run", RUN_TIMEOUT, 500);
    const dist = page.getByTestId("agreement-distribution");
    await dist.waitFor({ timeout: 60_000 });
    const rows = await dist.locator("tbody tr").count();
    if (rows < 2) throw new Error(`agreement distribution has ${rows} rows`);
    const per = await page.getByTestId("per-model-agreement").locator("tbody tr td:first-child").allInnerTexts();
    if (per.join(",") !== [DEMO, other].join(",")) throw new Error(`per-model agreement rows: ${per}`);
    const stats = await page.getByTestId("consensus-stats").innerText();
    if (!/Mean agreement\s*\n?\s*\d/.test(stats)) throw new Error(`consensus stats: ${stats}`);
    const head = await page.getByTestId("cells-table").locator("thead th").allInnerTexts();
    for (const want of ["Agreement", DEMO, other]) if (!head.includes(want)) throw new Error(`cell table columns ${head} lack ${want}`);
    log(`agreement: ${stats.replace(/\s+/g, " ")}`);
  });

  await check("a model's own labels colour the layout", async () => {
    await page.getByLabel("Labels of").selectOption(other);
    const umap = page.getByTestId("umap");
    await until(async () => (await umap.getAttribute("data-ready")) === "true" && Number(await umap.getAttribute("data-points")) > 0, "layout by the model's labels", 30_000);
  });

  await check("clicking a cell shows its evidence with each model's genes", async () => {
    await page.getByTestId("cells-table").locator("tbody tr").first().click();
    for (const m of [DEMO, other]) {
      const genes = page.getByTestId(`evidence-genes-${m}`);
      await genes.waitFor({ timeout: 30_000 });
      const rows = await genes.locator("tbody tr").allInnerTexts();
      if (rows.length < 3) throw new Error(`${m}: ${rows.length} genes`);
      if (!rows.every((r) => /\d\.\d{3}/.test(r))) throw new Error(`${m}: no contributions in ${rows.slice(0, 3)}`);
    }
    const call = await page.getByTestId("evidence-call").innerText();
    if (!/CL:\d{7}/.test(call) || !/Models agreeing/.test(call)) throw new Error(`evidence: ${call}`);
  });

  await check("the Broad types toggle rolls the counts and cell labels up the Cell Ontology", async () => {
    const before = await tableLabels();
    await page.getByRole("button", { name: "Broad types" }).click();
    const terms = page.getByTestId("level-terms");
    await terms.waitFor({ timeout: 60_000 });
    await page.getByTestId("cells-table").waitFor({ timeout: 30_000 });
    const after = await tableLabels();
    if (after.length !== before.length) throw new Error(`rows ${before.length} -> ${after.length}`);
    if (after.every((l, i) => l === before[i])) throw new Error(`labels did not change: ${after}`);
    const names = await terms.locator("tbody tr td:first-child").allInnerTexts();
    const missing = after.filter((l) => !names.includes(l));
    if (missing.length) throw new Error(`table labels ${missing} are not among the rolled-up types ${names}`);
    if (!(await terms.innerText()).includes("CL:0000084")) throw new Error("T cell (CL:0000084) not among the rolled-up terms");
    log(`labels ${[...new Set(before)].join(", ")} -> ${[...new Set(after)].join(", ")}`);
  });

  await check("the layout shows every cell by the chosen model's calls at the chosen level", async () => {
    const view = page.getByTestId("layout-view");
    await until(async () => (await view.getAttribute("data-level")) === "broad" && (await view.getAttribute("data-source")) === other
      && (await view.getAttribute("data-loading")) === "false", "the layout at broad by the model's calls", 30_000);
    const umap = page.getByTestId("umap");
    if (Number(await umap.getAttribute("data-points")) <= 0) throw new Error("the layout drew nothing");
  });

  await check("a broader term the service offers for the run (T cell) rolls the results and the layout up", async () => {
    const select = page.getByLabel("Broader term");
    const options = await select.locator("option").allInnerTexts();
    const t = options.find((o) => o.startsWith("T cell ("));
    if (!t) throw new Error(`no T cell among the offered terms: ${options}`);
    for (const want of ["lymphocyte (", "monocyte ("]) if (!options.some((o) => o.startsWith(want))) throw new Error(`${want} not offered: ${options}`);
    await select.selectOption({ label: t });
    await until(async () => (await page.getByTestId("level-bar").innerText()).includes("CL:0000084"), "results at T cell", 60_000);
    const view = page.getByTestId("layout-view");
    await until(async () => (await view.getAttribute("data-level")) === "CL:0000084" && (await view.getAttribute("data-loading")) === "false", "the layout at T cell", 30_000);
    const labels = await tableLabels();
    if (!labels.includes("T cell")) throw new Error(`no cell reads T cell: ${labels}`);
    log(`offered terms: ${options.slice(1).join("; ")}`);
  });

  await check("a term that is not in the Cell Ontology is refused with the service's hint, the results stay", async () => {
    await page.getByLabel("Any CL term").fill("T-cells please");
    await page.getByRole("button", { name: "Roll up" }).click();
    const error = page.getByTestId("level-error");
    await error.waitFor({ timeout: 30_000 });
    const text = await error.innerText();
    if (!text.includes("T-cells please") || !text.includes("CL:0000084")) throw new Error(`error: ${text}`);
    if (!(await page.getByTestId("cells-table").isVisible())) throw new Error("the results went away");
  });

  await check("no page error happened", async () => {
    if (pageErrors.length) throw new Error(pageErrors.slice(0, 3).join(" | "));
  });
} catch (e) {
  fail(e);
}
process.exit(await finish(svc, browser));
