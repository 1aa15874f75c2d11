/**
 * `npm run bench` — prints deltas/s for a 100-field object and a 10,000-entry
 * map, ours vs the reference's algorithm, in Node and then in Chromium
 * (the browser client's engine; skip with --node-only). Not a test: it only prints.
 */
import { rmSync } from "node:fs";
import { cpus } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { format, runBench } from "./workloads.ts";

const ms = Number(process.env.BENCH_MS ?? 1000);
const machine = `${cpus()[0]?.model ?? "?"} ×${cpus().length}`;
console.log(format(runBench(ms), `Node ${process.version}, ${machine}`));

if (!process.argv.includes("--node-only")) {
  const { launchChromium } = await import("../test/chromium.ts");
  const here = dirname(fileURLToPath(import.meta.url));
  const out = await build({
    entryPoints: [join(here, "browser-entry.ts")],
    bundle: true,
    format: "iife",
    write: false,
    platform: "browser",
    logLevel: "error",
  });
  const { context: ctx, profile } = await launchChromium("bench");
  try {
    const page = await ctx.newPage();
    await page.addScriptTag({ content: out.outputFiles[0]?.text ?? "" });
    const version = await page.evaluate(() => navigator.userAgent.match(/Chrome\/[\d.]+/)?.[0] ?? "Chromium");
    const text = await page.evaluate(`window.sodpBench(${ms}, ${JSON.stringify(`${version}, ${machine}`)})`);
    console.log(text);
  } finally {
    await ctx.close();
    rmSync(profile, { recursive: true, force: true });
  }
}
