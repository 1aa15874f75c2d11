/**
 * End to end in a real browser: the distribution's Chromium driven by
 * playwright-core, pages served on 127.0.0.1, the real sodp-server.
 *  1. the IIFE bundle (window.SODP) in two pages;
 *  2. the React example app (StrictMode, @sodp/react) in two pages.
 * One page of each pair goes through a TCP proxy so its WebSocket can be cut.
 */
import assert from "node:assert/strict";
import { mkdirSync, rmSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import type { BrowserContext, Page } from "playwright-core";
import WebSocket from "ws";
// @ts-expect-error: plain .mjs without types
import { serveExample } from "../../example/serve.mjs";
import { SodpClient } from "../../packages/client/src/index.ts";
import { launchChromium } from "../chromium.ts";
import { type CutProxy, startProxy } from "../proxy.ts";
import { type Server, startServer } from "../server.ts";

const here = dirname(fileURLToPath(import.meta.url));
const WAIT = { timeout: 15_000 };

let server: Server;
let proxy: CutProxy;
let site: { url: string; close(): Promise<void> };
let context: BrowserContext;
let profile: string;
let writer: SodpClient;

before(async () => {
  server = await startServer();
  proxy = await startProxy(server.port);
  site = await serveExample(0);
  ({ context, profile } = await launchChromium("chromium", { width: 900, height: 560 }));
  writer = new SodpClient(server.url, { WebSocket });
  await writer.ready;
});

after(async () => {
  writer?.close();
  await context?.close();
  await site?.close();
  await proxy?.close();
  await server?.stop();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

async function connections(): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${server.port}/health`);
  return ((await res.json()) as { connections: number }).connections;
}

async function openPlain(wsUrl: string, key: string, name: string, insecure = false): Promise<Page> {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[${name}] page error`, e));
  await page.goto(`${site.url}/plain.html${insecure ? "?insecure=1" : ""}`);
  if (insecure) assert.equal(await page.evaluate(() => (window as unknown as { __insecure: boolean }).__insecure), true);
  // A string, not a function: tsx's transform would add helpers (__name) the page lacks.
  await page.evaluate(`(async () => {
    const log = [];
    const statuses = [];
    const c = new SODP.SodpClient(${JSON.stringify(wsUrl)}, {
      reconnectDelay: 100, maxReconnectDelay: 500, onStatusChange: (s) => statuses.push(s),
    });
    Object.assign(window, { client: c, log, statuses });
    c.watch(${JSON.stringify(key)}, (v, m) => log.push({ v, source: m.source, version: m.version }));
    await c.ready;
    await c.presence(${JSON.stringify(key)}, ${JSON.stringify(`/presence/${name}`)}, { online: true });
  })()`);
  return page;
}

const lastValue = (page: Page) =>
  page.evaluate(() => {
    const log = (window as unknown as { log: Array<{ v: unknown }> }).log;
    return log[log.length - 1]?.v as Record<string, unknown> | null | undefined;
  });

test("IIFE bundle: two pages see each other's writes and presence; closing one removes its presence; a cut WebSocket reconnects and catches up", async () => {
  const key = `e2e.plain.${process.pid}`;
  const a = await openPlain(server.url, key, "alice");
  const b = await openPlain(proxy.url, key, "bob", true); // and without crypto.randomUUID
  try {
    await plainPagesCrossOver(key, a, b);
  } finally {
    // Also on failure: the next test counts the server's connections.
    await a.close();
    await b.close();
  }
});

async function plainPagesCrossOver(key: string, a: Page, b: Page): Promise<void> {
  const presenceOf = (p: Page) =>
    p.evaluate(() => {
      const log = (window as unknown as { log: Array<{ v: { presence?: object } | null }> }).log;
      return Object.keys(log[log.length - 1]?.v?.presence ?? {}).sort();
    });
  await a.waitForFunction(() => {
    const log = (window as unknown as { log: Array<{ v: { presence?: object } | null }> }).log;
    return Object.keys(log[log.length - 1]?.v?.presence ?? {}).length === 2;
  }, WAIT);
  assert.deepStrictEqual(await presenceOf(a), ["alice", "bob"]);
  assert.deepStrictEqual(await presenceOf(b), ["alice", "bob"]);

  // writes cross over
  await a.evaluate((key) => (window as unknown as { client: SodpClient }).client.setIn(key, "/msg", "hi from alice"), key);
  await b.waitForFunction(() => {
    const log = (window as unknown as { log: Array<{ v: { msg?: string } | null }> }).log;
    return log[log.length - 1]?.v?.msg === "hi from alice";
  }, WAIT);
  await b.evaluate((key) => (window as unknown as { client: SodpClient }).client.patch(key, { reply: "hi from bob" }), key);
  await a.waitForFunction(() => {
    const log = (window as unknown as { log: Array<{ v: { reply?: string } | null }> }).log;
    return log[log.length - 1]?.v?.reply === "hi from bob";
  }, WAIT);

  // closing a page removes its presence in the other
  await a.close();
  await b.waitForFunction(() => {
    const log = (window as unknown as { log: Array<{ v: { presence?: object } | null }> }).log;
    return !("alice" in (log[log.length - 1]?.v?.presence ?? {}));
  }, WAIT);
  assert.deepStrictEqual(await presenceOf(b), ["bob"]);

  // cut bob's WebSocket; changes made meanwhile arrive after the reconnect as deltas
  const before = await b.evaluate(() => (window as unknown as { log: unknown[] }).log.length);
  proxy.cut(true);
  await b.waitForFunction(() => (window as unknown as { client: SodpClient }).client.status === "reconnecting", WAIT);
  // The server has ended bob's session, so the removal of his presence is
  // ordered before the writes (a session releases its presence, then leaves
  // the count) and is not one of the counter deltas.
  await until(async () => (await connections()) === 1);
  for (let i = 1; i <= 3; i++) await writer.setIn(key, "/counter", i);
  proxy.accept();
  await b.waitForFunction(() => {
    const log = (window as unknown as { log: Array<{ v: { counter?: number } | null }> }).log;
    return log[log.length - 1]?.v?.counter === 3;
  }, WAIT);
  const caught = await b.evaluate(
    (n) => (window as unknown as { log: Array<{ v: { counter?: number }; source: string; version: number }> }).log.slice(n),
    before,
  );
  const versions = caught.map((e) => e.version);
  assert.ok(
    versions.every((v, i) => i === 0 || v > (versions[i - 1] ?? Infinity)),
    `each change once, in order: ${JSON.stringify(versions)}`,
  );
  assert.ok(
    caught.every((e) => e.source === "delta"),
    `caught up through deltas: ${JSON.stringify(caught.map((e) => e.source))}`,
  );
  assert.deepStrictEqual(
    caught.map((e) => e.v.counter).filter((n) => n !== undefined),
    [1, 2, 3],
  );
  const statuses = await b.evaluate(() => (window as unknown as { statuses: string[] }).statuses);
  assert.deepStrictEqual(statuses.slice(0, 3), ["connected", "reconnecting", "connected"]);
  const final = await lastValue(b);
  assert.equal(final?.msg, "hi from alice");
}

test("React example: StrictMode opens one socket per page; cursors, presence and scores cross over; a cut socket catches up", async () => {
  await until(async () => (await connections()) === 1); // only the Node writer
  const alice = await context.newPage();
  const bob = await context.newPage();
  for (const [p, n] of [
    [alice, "alice"],
    [bob, "bob"],
  ] as const) {
    p.on("pageerror", (e) => console.error(`[${n}] page error`, e));
  }
  await alice.goto(`${site.url}/?server=${encodeURIComponent(server.url)}&name=alice`);
  await bob.goto(`${site.url}/?server=${encodeURIComponent(proxy.url)}&name=bob`);
  await alice.waitForSelector('[data-testid="status"]:text("connected")', WAIT);
  await bob.waitForSelector('[data-testid="status"]:text("connected")', WAIT);
  await until(async () => (await connections()) === 3);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await connections(), 3, "the writer + one socket per StrictMode page");

  await alice.mouse.move(420, 300);
  await bob.mouse.move(200, 380);
  const aliceCursor = bob.locator('[data-cursor="alice"]');
  await aliceCursor.waitFor(WAIT);
  await bob.waitForFunction(() => {
    const el = document.querySelector<HTMLElement>('[data-cursor="alice"]');
    return el?.style.left === "420px" && el.style.top === "300px";
  }, WAIT);
  await alice.locator('[data-cursor="bob"]').waitFor(WAIT);
  assert.match((await bob.getByTestId("online").textContent()) ?? "", /bob, alice/);

  await bob.click('[data-bump="red"]');
  await bob.click('[data-bump="red"]');
  await alice.waitForSelector('[data-score="red"]:text("2")', WAIT);
  await alice.click('[data-bump="blue"]');
  await bob.waitForSelector('[data-score="blue"]:text("1")', WAIT);

  // The README's picture: docs/js-example.png when SODP_UPDATE_DOCS=1, else test-results/.
  const shot =
    process.env.SODP_UPDATE_DOCS === "1" ? join(here, "../../../docs/js-example.png") : join(here, "../../test-results/js-example.png");
  mkdirSync(dirname(shot), { recursive: true });
  await bob.screenshot({ path: shot });
  assert.ok(statSync(shot).size > 10_000, "a real screenshot");

  // bob's socket is cut; alice scores meanwhile; bob reconnects and catches up
  proxy.cut(true);
  await bob.waitForSelector('[data-testid="status"]:text("reconnecting")', WAIT);
  await alice.waitForFunction(() => !document.querySelector('[data-cursor="bob"]'), WAIT);
  await alice.click('[data-bump="blue"]');
  await alice.waitForSelector('[data-score="blue"]:text("2")', WAIT);
  proxy.accept();
  await bob.waitForSelector('[data-testid="status"]:text("connected")', WAIT);
  await bob.waitForSelector('[data-score="blue"]:text("2")', WAIT);
  await alice.locator('[data-cursor="bob"]').waitFor(WAIT); // presence re-published after the reconnect

  // closing alice's page removes her cursor and name from bob's
  await alice.close();
  await bob.waitForFunction(() => !document.querySelector('[data-cursor="alice"]'), WAIT);
  await bob.waitForFunction(() => !document.querySelector('[data-testid="online"]')?.textContent?.includes("alice"), WAIT);
  await bob.close();
});

async function until(pred: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 50));
  }
}
