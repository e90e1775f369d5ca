#!/usr/bin/env node
// Fail when package-lock.json records a download address other than the npm registry
// (git, tarball URLs, other registries). Funding links are not download addresses.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const lock = JSON.parse(readFileSync(join(dirname(fileURLToPath(import.meta.url)), "..", "package-lock.json"), "utf8"));
const bad = [];
for (const [path, meta] of Object.entries(lock.packages ?? {})) {
  if (meta.resolved && !meta.resolved.startsWith("https://registry.npmjs.org/")) bad.push(`${path}: ${meta.resolved}`);
  if (path && !meta.link && !meta.integrity) bad.push(`${path}: no integrity hash`);
}
if (bad.length) {
  console.error(`package-lock.json has non-registry or unverified entries:\n${bad.join("\n")}`);
  process.exit(1);
}
console.log(`package-lock.json: ${Object.keys(lock.packages).length - 1} packages, all from the npm registry with integrity hashes`);
