// Size budget (a test: exits 1 when over). Sizes are min+gzip (level 9), in
// bytes; 1 kB = 1024 bytes.
//  - @sodp/client as an app bundler would ship it: ESM, minified, with
//    @msgpack/msgpack inlined; and the IIFE browser bundle as shipped.
//  - @sodp/react on top of that: (client + react package) − client, React external.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";
import { MANGLE } from "./build.config.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const CLIENT_BUDGET = 12 * 1024;
const REACT_BUDGET = 2 * 1024;

async function minGzip(contents, resolveDir) {
  const out = await build({
    stdin: { contents, resolveDir, loader: "ts" },
    bundle: true,
    minify: true,
    mangleProps: MANGLE,
    format: "esm",
    platform: "browser",
    target: "es2020",
    external: ["react", "react-dom", "react/jsx-runtime"],
    write: false,
    logLevel: "error",
    alias: { "@sodp/client": join(root, "packages/client/src/index.ts") },
  });
  return gzipSync(out.outputFiles[0].contents, { level: 9 }).length;
}

const src = join(root, "packages");
const client = await minGzip(`export * from "./client/src/index.ts";`, src);
const iife = gzipSync(readFileSync(join(src, "client/dist/sodp.iife.min.js")), { level: 9 }).length;
const both = await minGzip(`export * from "./client/src/index.ts"; export * from "./react/src/index.ts";`, src);
const react = both - client;

const rows = [
  ["@sodp/client (ESM, incl. @msgpack/msgpack)", client, CLIENT_BUDGET],
  ["@sodp/client browser bundle sodp.iife.min.js", iife, CLIENT_BUDGET],
  ["@sodp/react on top of the client", react, REACT_BUDGET],
];
let failed = 0;
for (const [name, size, budget] of rows) {
  const ok = size <= budget;
  if (!ok) failed++;
  console.log(`${ok ? "ok" : "OVER"}  ${name}: ${size} B (${(size / 1024).toFixed(2)} kB) min+gzip, budget ${budget / 1024} kB`);
}
console.log(`size: ${rows.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
