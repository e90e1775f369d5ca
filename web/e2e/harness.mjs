// Shared by the e2e runner and the screenshot script: start the real `cellfoundry serve` on a free
// port with a temporary CELLFOUNDRY_HOME, create an API key, and launch Debian's headless Chromium.
import { spawn, execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const WEB = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const REPO = resolve(WEB, "..");
export const CELLFOUNDRY = process.env.CELLFOUNDRY_BIN ?? join(REPO, ".venv", "bin", "cellfoundry");
export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const SHARED = resolve(process.env.CELLFOUNDRY_SHARED ?? join(REPO, "..", "shared"));
export const PBMC3K = join(SHARED, "data", "pbmc3k_labeled_counts.h5ad");
export const DIST = join(WEB, "dist");
export const N_CELLS = 2638; // cells in pbmc3k_labeled_counts.h5ad
export const RUN_TIMEOUT = Number(process.env.E2E_RUN_TIMEOUT_S ?? 480) * 1000;
export const log = (m) => console.log(`# ${m}`);

/** Reasons the environment cannot run the browser tests (empty when it can). */
export function missing({ needData = true } = {}) {
  const out = [];
  if (!existsSync(CELLFOUNDRY)) out.push(`cellfoundry executable not found at ${CELLFOUNDRY} (set CELLFOUNDRY_BIN)`);
  if (!existsSync(CHROMIUM)) out.push(`Chromium not found at ${CHROMIUM} (apt-get install -y chromium, or set CHROMIUM_PATH)`);
  if (!existsSync(join(DIST, "index.html"))) out.push(`web/dist is not built (run: cd web && npm ci && npm run build)`);
  if (needData && !existsSync(PBMC3K)) out.push(`real data ${PBMC3K} is absent (set CELLFOUNDRY_SHARED)`);
  return out;
}

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Start `cellfoundry serve`; resolves when /health answers ok. */
export async function startService({ log = () => {}, startTimeoutMs = 240_000 } = {}) {
  const home = mkdtempSync(join(tmpdir(), "cellfoundry-e2e-"));
  const port = await freePort();
  const env = { ...process.env, CELLFOUNDRY_HOME: home, CELLFOUNDRY_WEB_DIR: DIST };
  delete env.CELLFOUNDRY_DATABASE_URL;
  delete env.CELLFOUNDRY_QUEUE_BACKEND;
  const proc = spawn(CELLFOUNDRY, ["serve", "--host", "127.0.0.1", "--port", String(port)], {
    env, stdio: ["ignore", "pipe", "pipe"], detached: true,
  });
  let output = "";
  proc.stdout.on("data", (d) => { output += d; });
  proc.stderr.on("data", (d) => { output += d; });
  const url = `http://127.0.0.1:${port}`;
  const t0 = Date.now();
  let exited = null;
  proc.on("exit", (code) => { exited = code; });
  for (;;) {
    if (exited !== null) throw new Error(`cellfoundry serve exited with ${exited}:\n${output}`);
    try {
      const r = await fetch(`${url}/health`);
      if (r.ok) break;
    } catch { /* not up yet */ }
    if (Date.now() - t0 > startTimeoutMs) {
      stop();
      throw new Error(`cellfoundry serve did not answer /health within ${startTimeoutMs / 1000} s:\n${output}`);
    }
    await sleep(500);
  }
  log(`service up at ${url} after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const key = execFileSync(CELLFOUNDRY, ["keys", "create", "e2e"], { env, encoding: "utf8" }).trim().split("\n").pop().trim();
  function stop() {
    try { process.kill(-proc.pid, "SIGTERM"); } catch { /* gone */ }
  }
  async function shutdown() {
    stop();
    for (let i = 0; i < 40 && exited === null; i++) await sleep(250);
    if (exited === null) try { process.kill(-proc.pid, "SIGKILL"); } catch { /* gone */ }
    rmSync(home, { recursive: true, force: true });
  }
  /** Call the API directly (test set-up), with the key. */
  async function apiCall(method, path, body) {
    const r = await fetch(`${url}${path}`, {
      method, headers: { Authorization: `Bearer ${key}`, ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await r.text();
    let json = null;
    try { json = JSON.parse(text); } catch { /* not json */ }
    return { status: r.status, json, text };
  }
  return { url, key, home, proc, output: () => output, shutdown, api: apiCall };
}

export const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

/** Debian's Chromium with a new, empty profile; never a downloaded browser. */
export async function launchBrowser({ width = 1280, height = 900 } = {}) {
  const { chromium } = await import("playwright-core");
  const profile = mkdtempSync(join(tmpdir(), "cellfoundry-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width, height },
    acceptDownloads: true,
  });
  // the service's Content-Security-Policy must not block anything the UI does: every violation
  // is reported on the page's console and fails the run (finish)
  const cspViolations = [];
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) =>
      console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || "inline"}`));
  });
  context.on("console", (m) => {
    if (/CSP violation|Content Security Policy/.test(m.text())) cspViolations.push(m.text());
  });
  return {
    context,
    cspViolations,
    async close() {
      await context.close().catch(() => {});
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Wait until `fn()` is truthy (polling), or throw with `what`. */
export async function until(fn, what, timeoutMs = 30_000, everyMs = 250) {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** A test runner's checks: `check(name, fn)` prints "ok - name (s)" or "not ok - name: reason" (with
 * a screenshot of `page()` under `artifacts`), `finish(svc, browser)` closes both, prints the service
 * output when a check failed and the "N passed, N failed" line, and returns the exit code. */
export function checks({ artifacts, page = () => null }) {
  const results = [];
  async function check(name, fn) {
    const t0 = Date.now();
    try {
      await fn();
      results.push([name, true]);
      console.log(`ok - ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    } catch (e) {
      results.push([name, false]);
      console.log(`not ok - ${name}: ${e.message.split("\n").slice(0, 6).join("\n    ")}`);
      try {
        mkdirSync(artifacts, { recursive: true });
        const file = join(artifacts, `${name.replace(/[^a-z0-9]+/gi, "-")}.png`);
        await page()?.screenshot({ path: file, fullPage: true });
        console.log(`    screenshot: ${file}`);
      } catch { /* no page */ }
    }
  }
  function fail(e) {
    results.push(["harness", false]);
    console.log(`not ok - harness: ${e.stack ?? e}`);
  }
  async function finish(svc, browser) {
    if (browser?.cspViolations?.length) {
      results.push(["content security policy", false]);
      console.log(`not ok - content security policy: ${browser.cspViolations.slice(0, 5).join(" | ")}`);
    }
    await browser?.close();
    if (svc) {
      if (results.some(([, ok]) => !ok)) console.log(`# service output (tail):\n${svc.output().split("\n").slice(-30).join("\n")}`);
      await svc.shutdown();
    }
    const passed = results.filter(([, ok]) => ok).length;
    const failed = results.length - passed;
    console.log(`${passed} passed, ${failed} failed`);
    return failed ? 1 : 0;
  }
  return { check, fail, finish };
}

/** Exit 77 (the runners' "skipped") with the reasons when the environment cannot run the tests. */
export function exitUnlessReady() {
  const reasons = missing();
  if (reasons.length) {
    console.log(`SKIP: ${reasons.join("; ")}`);
    process.exit(77);
  }
}
