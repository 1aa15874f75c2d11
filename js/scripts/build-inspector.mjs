// Build the server's web inspector (js/packages/inspector) into the files
// the server embeds: crates/sodp-server/assets/inspector/{index.html,app.js}.
// They are committed, so `cargo build` needs no Node. With --check nothing
// is written: the build is compared byte for byte with the committed files
// and any difference fails (scripts/test-js.sh runs it), so the sources and
// the embedded assets cannot drift apart.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { MANGLE } from "./build.config.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const pkg = join(root, "packages/inspector");
const out = join(root, "../crates/sodp-server/assets/inspector");
const check = process.argv.includes("--check");

const result = await build({
  entryPoints: [join(pkg, "src/main.ts")],
  bundle: true,
  minify: true,
  format: "iife",
  mangleProps: MANGLE,
  target: "es2020",
  platform: "browser",
  legalComments: "none",
  write: false,
  logLevel: "warning",
  alias: { "@sodp/client": join(root, "packages/client/src/index.ts") },
});
const files = {
  "app.js": Buffer.from(result.outputFiles[0].contents),
  "index.html": readFileSync(join(pkg, "index.html")),
};

let drift = 0;
for (const [name, bytes] of Object.entries(files)) {
  const path = join(out, name);
  if (check) {
    let committed;
    try {
      committed = readFileSync(path);
    } catch {
      committed = Buffer.alloc(0);
    }
    if (!committed.equals(bytes)) {
      console.error(
        `DRIFT ${path}: committed ${committed.length} B, a fresh build gives ${bytes.length} B — run: node js/scripts/build-inspector.mjs`,
      );
      drift++;
    } else console.log(`ok  ${name} matches its sources (${bytes.length} B)`);
  } else {
    writeFileSync(path, bytes);
    console.log(`wrote ${path} (${bytes.length} B)`);
  }
}
const total = Object.values(files).reduce((n, b) => n + b.length, 0);
console.log(`inspector assets: ${total} B (${(total / 1024).toFixed(1)} kB) embedded in sodp-server`);
if (drift) process.exit(1);
