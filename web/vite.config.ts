/// <reference types="vitest/config" />
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { defineConfig, type Plugin } from "vite";

const require = createRequire(import.meta.url);
const PLOTLY_FILE = "vendor/plotly.min.js";

/** Ship plotly.js-dist-min's prebuilt file as a local asset (no CDN, and no re-minifying 4.8 MB). */
function plotlyAsset(): Plugin {
  const path = require.resolve("plotly.js-dist-min/plotly.min.js");
  return {
    name: "cellfoundry-plotly-asset",
    configureServer(server) {
      server.middlewares.use(`/${PLOTLY_FILE}`, (_req, res) => {
        res.setHeader("Content-Type", "text/javascript");
        res.end(readFileSync(path));
      });
    },
    generateBundle() {
      this.emitFile({ type: "asset", fileName: PLOTLY_FILE, source: readFileSync(path) });
    },
  };
}

// No React plugin: esbuild's automatic JSX transform is enough (and installs offline).
export default defineConfig({
  base: "./",
  plugins: [plotlyAsset()],
  define: { __PLOTLY_SRC__: JSON.stringify(PLOTLY_FILE) },
  esbuild: { jsx: "automatic", jsxImportSource: "react" },
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false },
  server: {
    proxy: Object.fromEntries(
      ["/applications", "/models", "/upload", "/submit", "/status", "/runs", "/results",
        "/download", "/predict", "/health", "/datasets"].map((p) => [
        p,
        process.env.CELLFOUNDRY_API ?? "http://127.0.0.1:8000",
      ]),
    ),
  },
  test: {
    environment: "happy-dom",
    globals: true,
    include: ["src/**/*.test.{ts,tsx}"],
    setupFiles: ["src/test/setup.ts"],
    restoreMocks: true,
  },
});
