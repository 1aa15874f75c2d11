// Serve the example (and the browser bundle) on 127.0.0.1, and start a
// sodp-server for it unless `--server ws://…` is given.
//   node example/serve.mjs [--port 8080] [--server ws://127.0.0.1:7777]
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, extname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const FILES = {
  "/": join(here, "index.html"),
  "/index.html": join(here, "index.html"),
  "/plain.html": join(here, "plain.html"),
  "/dist/app.js": join(here, "dist/app.js"),
  "/sodp.iife.min.js": join(here, "../packages/client/dist/sodp.iife.min.js"),
};
const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8" };

/** Start the static server; resolves with its base URL and a close function. */
export function serveExample(port = 0) {
  const server = createServer(async (req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    const file = FILES[path];
    if (!file) {
      res.writeHead(404).end("not found");
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
      res.end(body);
    } catch {
      res.writeHead(500).end(`missing ${file}: run npm run build`);
    }
  });
  return new Promise((ok) => {
    server.listen(port, "127.0.0.1", () => {
      const addr = server.address();
      ok({ url: `http://127.0.0.1:${addr.port}`, close: () => new Promise((done) => server.close(() => done())) });
    });
  });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const arg = (name, dflt) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? process.argv[i + 1] : dflt;
  };
  let serverUrl = arg("--server");
  if (!serverUrl) {
    const bin = process.env.SODP_SERVER_BIN ?? resolve(here, "../../target/debug/sodp-server");
    if (!existsSync(bin)) {
      console.error(`sodp-server not found at ${bin}: build it (cargo build), set SODP_SERVER_BIN, or pass --server ws://…`);
      process.exit(1);
    }
    const proc = spawn(bin, ["--addr", "127.0.0.1:0"], { stdio: ["ignore", "pipe", "inherit"] });
    process.on("exit", () => proc.kill());
    process.on("SIGINT", () => process.exit(0));
    process.on("SIGTERM", () => process.exit(0));
    serverUrl = await new Promise((ok, fail) => {
      proc.once("error", fail);
      createInterface({ input: proc.stdout }).once("line", (line) => ok(/listening (\S+)/.exec(line)?.[1]));
    });
    proc.stdout.resume();
  }
  const { url } = await serveExample(Number(arg("--port", "8080")));
  console.log(`sodp-server at ${serverUrl}`);
  console.log(`example at   ${url}/?server=${encodeURIComponent(serverUrl)}   (open it in two windows)`);
}
