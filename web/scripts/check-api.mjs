#!/usr/bin/env node
// Fail when src/api/schema.d.ts is not what openapi-typescript makes of src/api/openapi.json
// (the service's OpenAPI document; tests/service/test_openapi_current.py keeps that one current).
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const web = join(dirname(fileURLToPath(import.meta.url)), "..");
const dir = mkdtempSync(join(tmpdir(), "cellfoundry-api-"));
try {
  const fresh = join(dir, "schema.d.ts");
  const cli = join(web, "node_modules", "openapi-typescript", "bin", "cli.js");
  execFileSync(process.execPath, [cli, join(web, "src/api/openapi.json"), "-o", fresh], { stdio: "ignore" });
  if (readFileSync(fresh, "utf8") !== readFileSync(join(web, "src/api/schema.d.ts"), "utf8")) {
    console.error("src/api/schema.d.ts is out of date with src/api/openapi.json: run `npm run gen:api` and commit it.");
    process.exit(1);
  }
  console.log("src/api/schema.d.ts matches src/api/openapi.json");
} finally {
  rmSync(dir, { recursive: true, force: true });
}
