/**
 * Start the real `sodp-server` on an ephemeral port (`--addr 127.0.0.1:0`; it
 * prints `listening ws://ADDR` first) and kill it when done. Every server is
 * also killed when the test process exits, and has a hard lifetime cap.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const SERVER_BIN = process.env.SODP_SERVER_BIN ?? resolve(here, "../../target/debug/sodp-server");

export interface Server {
  url: string;
  port: number;
  proc: ChildProcess;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const p of live) p.kill("SIGTERM");
});
for (const sig of ["SIGTERM", "SIGINT"] as const) process.once(sig, () => process.exit(128 + (sig === "SIGTERM" ? 15 : 2)));

export async function startServer(args: string[] = [], lifetimeMs = 120_000): Promise<Server> {
  if (!existsSync(SERVER_BIN)) throw new Error(`sodp-server not found at ${SERVER_BIN} (set SODP_SERVER_BIN)`);
  // Under coreutils `timeout`: the server has a hard lifetime even if this
  // process is killed before it can clean up (SIGTERM is forwarded to it).
  const secs = String(Math.ceil(lifetimeMs / 1000));
  const proc = spawn("timeout", ["-k", "5", secs, SERVER_BIN, "--addr", "127.0.0.1:0", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  live.add(proc);
  const cap = setTimeout(() => proc.kill("SIGKILL"), lifetimeMs + 10_000);
  cap.unref();
  proc.on("exit", () => {
    live.delete(proc);
    clearTimeout(cap);
  });
  let stderr = "";
  proc.stderr?.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const url = await new Promise<string>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`sodp-server did not announce its address in 10 s: ${stderr}`)), 10_000);
    const rl = createInterface({ input: proc.stdout as NodeJS.ReadableStream });
    rl.once("line", (line) => {
      clearTimeout(timer);
      const m = /listening (ws:\/\/\S+)/.exec(line);
      if (m?.[1]) ok(m[1]);
      else fail(new Error(`unexpected first line from sodp-server: ${line}`));
    });
    proc.once("exit", (code) => {
      clearTimeout(timer);
      fail(new Error(`sodp-server exited (${code}) before listening: ${stderr}`));
    });
  });
  proc.stdout?.resume();
  const port = Number(new URL(url).port);
  return {
    url,
    port,
    proc,
    stop: () =>
      new Promise<void>((done) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return done();
        const t = setTimeout(() => proc.kill("SIGKILL"), 3000);
        proc.once("exit", () => {
          clearTimeout(t);
          done();
        });
        proc.kill("SIGTERM");
      }),
  };
}
