// Package checks on the built packages (a test: exits 1 on any problem):
//  1. publint --strict on each package;
//  2. @arethetypeswrong/cli on each packed tarball (ESM, CJS, node10, bundler);
//  3. `npm pack` both, install the tarballs into a scratch project, and use
//     them from ESM and CommonJS there (the install line of the README).
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const bin = (name) => join(root, "node_modules/.bin", name);
let failed = 0;
let passed = 0;
function step(name, cmd, args, opts = {}) {
  try {
    const out = execFileSync(cmd, args, { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 180_000, ...opts });
    console.log(`ok  ${name}`);
    if (process.env.VERBOSE) console.log(out);
    passed++;
    return out;
  } catch (err) {
    console.log(`FAIL ${name}\n${err.stdout ?? ""}${err.stderr ?? ""}`);
    failed++;
    return "";
  }
}

for (const pkg of ["client", "react"]) {
  step(`publint @sodp/${pkg}`, bin("publint"), ["--strict", `packages/${pkg}`]);
  step(`attw @sodp/${pkg}`, bin("attw"), ["--pack", `packages/${pkg}`, "--format", "ascii"]);
}

const scratch = mkdtempSync(join(tmpdir(), "sodp-pack-"));
try {
  for (const pkg of ["client", "react"])
    step(`npm pack @sodp/${pkg}`, "npm", ["pack", "--silent", "--pack-destination", scratch, `./packages/${pkg}`]);
  const tarballs = readdirSync(scratch).filter((f) => f.endsWith(".tgz"));
  writeFileSync(join(scratch, "package.json"), JSON.stringify({ name: "scratch", private: true, type: "module" }));
  step(
    "install the tarballs (+ react, ws)",
    "npm",
    [
      "install",
      "--prefer-offline",
      "--no-audit",
      "--no-fund",
      "--ignore-scripts",
      ...tarballs.map((t) => `./${t}`),
      "react@19.3.1",
      "ws@8.23.0",
    ],
    { cwd: scratch },
  );
  writeFileSync(
    join(scratch, "esm.mjs"),
    `import { SodpClient, applyOps } from "@sodp/client";
import { SODPProvider, useSodpState, SodpClient as Again } from "@sodp/react";
if (SodpClient !== Again) throw new Error("@sodp/react must re-export the client API");
if (typeof SODPProvider !== "function" || typeof useSodpState !== "function") throw new Error("react exports");
if (applyOps({a: 1}, [{op: "ADD", path: "/b", value: 2}]).b !== 2) throw new Error("applyOps");
console.log("esm ok");`,
  );
  writeFileSync(
    join(scratch, "cjs.cjs"),
    `const { SodpClient } = require("@sodp/client");
const { useSodpState } = require("@sodp/react");
if (typeof SodpClient !== "function" || typeof useSodpState !== "function") throw new Error("cjs exports");
console.log("cjs ok");`,
  );
  step("use from ESM", process.execPath, ["esm.mjs"], { cwd: scratch });
  step("use from CommonJS", process.execPath, ["cjs.cjs"], { cwd: scratch });
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
console.log(`package checks: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
