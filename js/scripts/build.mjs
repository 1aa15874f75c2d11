// Build both packages and the example: esbuild for the JavaScript (ESM, CJS,
// minified IIFE), tsc for the declarations (.d.ts for import, .d.cts for require).
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { MANGLE } from "./build.config.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const tsc = join(root, "node_modules/typescript/bin/tsc");

async function library(dir, entry, external) {
  const pkg = join(root, "packages", dir);
  rmSync(join(pkg, "dist"), { recursive: true, force: true });
  const common = { mangleProps: MANGLE, entryPoints: [join(pkg, entry)], bundle: true, external, target: "es2020", logLevel: "warning" };
  await build({ ...common, format: "esm", outfile: join(pkg, "dist/index.js"), platform: "neutral" });
  await build({ ...common, format: "cjs", outfile: join(pkg, "dist/index.cjs"), platform: "neutral" });
  execFileSync(process.execPath, [tsc, "-p", join(pkg, "tsconfig.build.json")], { stdio: "inherit" });
  // Declarations: one tree as .d.ts (ESM) and a copy as .d.cts (CJS) whose
  // relative imports point at .cjs, so each module format gets its own types.
  const types = join(pkg, "dist/types");
  for (const f of readdirSync(types)) {
    if (!f.endsWith(".d.ts")) continue;
    const src = readFileSync(join(types, f), "utf8");
    writeFileSync(join(pkg, "dist", f), src);
    writeFileSync(join(pkg, "dist", f.replace(/\.d\.ts$/, ".d.cts")), src.replace(/(from\s+["']\.\/[^"']+)\.js(["'])/g, "$1.cjs$2"));
  }
  rmSync(types, { recursive: true, force: true });
  copyFileSync(join(root, "README.md"), join(pkg, "README.md"));
  return pkg;
}

const client = await library("client", "src/index.ts", ["@msgpack/msgpack"]);
// The browser bundle: everything inlined, a global `SODP`.
await build({
  entryPoints: [join(client, "src/index.ts")],
  bundle: true,
  minify: true,
  format: "iife",
  globalName: "SODP",
  mangleProps: MANGLE,
  target: "es2022",
  platform: "browser",
  outfile: join(client, "dist/sodp.iife.min.js"),
  logLevel: "warning",
});
await library("react", "src/index.ts", ["@msgpack/msgpack", "@sodp/client", "react", "react/jsx-runtime"]);

// The example app: React + @sodp/react + @sodp/client in one browser bundle.
mkdirSync(join(root, "example/dist"), { recursive: true });
await build({
  entryPoints: [join(root, "example/src/main.tsx")],
  bundle: true,
  minify: true,
  format: "iife",
  target: "es2020",
  platform: "browser",
  define: { "process.env.NODE_ENV": '"production"' },
  outfile: join(root, "example/dist/app.js"),
  logLevel: "warning",
});
console.log("built packages/client/dist, packages/react/dist, example/dist");
