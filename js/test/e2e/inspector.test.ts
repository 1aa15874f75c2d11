/**
 * The server's built-in web inspector in a real browser (the distribution's
 * Chromium via playwright-core) against the real sodp-server started with
 * `--inspector --inspector-writes` and JWT authentication whose admin claim
 * is `role:admin`:
 *  - an admin token logs in; a non-admin token is refused;
 *  - a write by a separate client shows in the key view and the delta
 *    stream within a second;
 *  - a separate client's session is listed, and Disconnect ends it;
 *  - a server without `--inspector` serves none of it (404).
 * With SODP_INSPECTOR_SCREENSHOTS=DIR it also saves a PNG of each view
 * there (the ones in docs/img/ were made this way).
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { BrowserContext, Page } from "playwright-core";
import WebSocket from "ws";
import { SodpClient } from "../../packages/client/src/index.ts";
import { launchChromium } from "../chromium.ts";
import { signJwt } from "../jwt.ts";
import { type Server, startServer } from "../server.ts";

const SHOTS = process.env.SODP_INSPECTOR_SCREENSHOTS;
const SECRET = "inspector-e2e-secret";
const WAIT = { timeout: 15_000 };
/** The bound: a write shows in the key view and the delta stream within this. */
const LIVE_MS = 1000;

const adminToken = signJwt(SECRET, { sub: "root", role: "admin", exp: Math.floor(Date.now() / 1000) + 3600 });
const userToken = (sub: string) => signJwt(SECRET, { sub, role: "viewer", exp: Math.floor(Date.now() / 1000) + 3600 });

let server: Server;
let context: BrowserContext;
let profile: string;
let writer: SodpClient;

before(async () => {
  server = await startServer(["--jwt-secret", SECRET, "--inspector", "--inspector-writes", "--inspector-admin-claim", "role:admin"]);
  ({ context, profile } = await launchChromium("inspector", { width: 1280, height: 760 }));
  writer = new SodpClient(server.url, { WebSocket, token: userToken("writer") });
  await writer.ready;
  await writer.set("game.board", { turn: "alice", cells: ["x", "", "o", "", "x", "", "", "", ""], score: { alice: 2, bob: 1 } });
  await writer.set("game.players.alice", { hp: 10, pos: { x: 3, y: 4 } });
  await writer.set("game.players.bob", { hp: 7, pos: { x: 1, y: 1 } });
  await writer.set("chat.lobby", { messages: [{ from: "bob", text: "gg" }] });
  await writer.patch("game.board", { turn: "bob", score: { bob: 2 } });
});

after(async () => {
  writer?.close();
  await context?.close();
  await server?.stop();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

function inspectorUrl(s: Server): string {
  return `http://127.0.0.1:${s.port}/inspector`;
}

async function open(): Promise<Page> {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("[inspector] page error", e));
  return page;
}

async function login(page: Page, token: string): Promise<void> {
  await page.goto(inspectorUrl(server));
  await page.fill("#token", token);
  await page.click("#login-go");
}

async function tab(page: Page, name: string): Promise<void> {
  await page.click(`button.tab[data-view="${name}"]`);
}

async function shot(page: Page, name: string): Promise<void> {
  if (SHOTS) await page.screenshot({ path: join(SHOTS, `inspector-${name}.png`) });
}

test("an admin token logs in; keys, a live write in the key view and the delta stream within a second", async () => {
  const page = await open();
  await login(page, adminToken);
  await page.waitForSelector("#status.connected", WAIT);
  assert.match((await page.textContent("header")) ?? "", /as root/);

  // Keys: the search lists every key with its version and size.
  await page.waitForSelector('#keys-table tr[data-key="game.board"]', WAIT);
  const listed = await page.$$eval("#keys-table tbody tr", (rows) => rows.map((r) => r.getAttribute("data-key")));
  assert.deepEqual(listed, ["chat.lobby", "game.board", "game.players.alice", "game.players.bob"]);
  await page.click('#keys-table tr[data-key="game.board"]');
  await page.waitForFunction(() => document.querySelector("#key-tree")?.textContent?.includes('"bob"'), null, WAIT);

  // The delta stream of a pattern, in a second page.
  const stream = await open();
  await stream.goto(`${inspectorUrl(server)}#deltas`);
  await stream.fill("#token", adminToken);
  await stream.click("#login-go");
  await stream.waitForSelector("#deltas-key", WAIT);
  await stream.fill("#deltas-key", "game.*");
  await stream.click('#deltas-key ~ button:has-text("Watch")');
  await stream.waitForFunction(() => document.querySelector("#deltas-status")?.textContent?.startsWith("watching game.*"), null, WAIT);

  // A separate client writes: both pages show it within a second.
  const started = Date.now();
  const { version } = await writer.patch("game.board", { turn: "carol", score: { carol: 5 } });
  await page.waitForFunction(() => document.querySelector("#key-tree")?.textContent?.includes('"carol"'), null, { timeout: LIVE_MS });
  await stream.waitForFunction(
    (v) =>
      [...document.querySelectorAll("#deltas-list tr")].some(
        (r) => r.textContent?.includes(String(v)) && r.textContent.includes("/game.board/turn"),
      ),
    version,
    { timeout: LIVE_MS },
  );
  const took = Date.now() - started;
  assert.ok(took <= LIVE_MS, `shown after ${took} ms`);
  console.log(`[inspector] a write showed in the key view and the delta stream after ${took} ms`);
  // The key list follows too: the selected key's row shows the new version.
  await page.waitForFunction(
    (v) => document.querySelector('#keys-table tr[data-key="game.board"]')?.textContent?.includes(String(v)),
    version,
    WAIT,
  );
  // The change is highlighted, and its writer resolved (session and subject).
  assert.ok(await page.$('#key-tree [data-path="/turn"].changed'), "the changed location is highlighted");
  await page.waitForFunction(() => /#\d+ writer/.test(document.querySelector("#key-last-delta")?.textContent ?? ""), null, WAIT);
  await stream.waitForFunction(() => /#\d+ writer/.test(document.querySelector("#deltas-list")?.textContent ?? ""), null, WAIT);
  await writer.setIn("game.players.bob", "/hp", 6);
  await writer.setIn("game.players.alice", "/pos/x", 4);
  await stream.waitForFunction(() => document.querySelectorAll("#deltas-list tr").length >= 3, null, WAIT);

  // Pause: new deltas are counted, not shown, until Resume.
  await stream.click("#deltas-pause");
  const { version: pausedVersion } = await writer.setIn("game.players.bob", "/hp", 5);
  await stream.waitForFunction(() => document.querySelector("#deltas-status")?.textContent === "paused · 1 new", null, WAIT);
  assert.ok(!((await stream.textContent("#deltas-list")) ?? "").includes(String(pausedVersion)), "not shown while paused");
  await stream.click("#deltas-pause");
  await stream.waitForFunction((v) => document.querySelector("#deltas-list")?.textContent?.includes(String(v)), pausedVersion, WAIT);
  assert.match((await stream.textContent("#deltas-status")) ?? "", /^watching game\.\*/);

  // Filter by path.
  await stream.fill("#deltas-filter", "/game.players.bob");
  await stream.waitForFunction(() => document.querySelectorAll("#deltas-list tr").length === 2, null, WAIT);
  await stream.fill("#deltas-filter", "");
  await stream.waitForFunction(() => !document.querySelector("#deltas-list")?.textContent?.includes("…"), null, WAIT);
  await shot(page, "keys");
  await shot(stream, "deltas");

  // History of the key: step back and diff.
  await tab(page, "History");
  await page.fill("#history-key", "game.board");
  await page.click('#history-key ~ button:has-text("Load")');
  await page.waitForFunction(() => document.querySelector("#history-status")?.textContent?.includes("3 changes retained"), null, WAIT);
  await page.click("#history-back");
  await page.waitForFunction(() => document.querySelector("#history-detail h2")?.textContent?.startsWith("version"), null, WAIT);
  const stepped = (await page.textContent("#history-detail")) ?? "";
  assert.ok(stepped.includes('"bob"') && !stepped.includes('"carol"'), "one step back shows the previous value");
  await page.click("#diff-run");
  await page.waitForSelector("#diff-table", WAIT);
  const diffText = (await page.textContent("#diff-table")) ?? "";
  assert.ok(diffText.includes("/turn") && diffText.includes("/score/carol"), diffText);
  await shot(page, "history");

  // Server view.
  await tab(page, "Server");
  await page.waitForFunction(() => document.querySelector("#server-cards")?.textContent?.includes("single node"), null, WAIT);
  assert.match((await page.textContent("#server-cards")) ?? "", new RegExp(`127\\.0\\.0\\.1:${server.port} \\(this node\\)`));
  for (let i = 0; i < (SHOTS ? 30 : 6); i++) {
    await writer.setIn("chat.lobby", "/messages/-", { from: "alice", text: `msg ${i}` });
    await writer.setIn("game.board", "/moves", i); // watched by the key view: deliveries
    await new Promise((r) => setTimeout(r, 350));
  }
  await shot(page, "server");

  // Actions: the server's answers verbatim, a 409 included.
  await tab(page, "Actions");
  await page.fill("#action-key", "game.players.bob");
  await page.selectOption("#action-method", "state.patch");
  await page.fill("#action-value", '{"hp": 9}');
  await page.fill("#action-if-version", "1");
  await page.click("#action-send");
  await page.waitForFunction(() => document.querySelector("#action-log .answer")?.textContent?.includes('"code": 409'), null, WAIT);
  await page.fill("#action-if-version", "");
  await page.click("#action-send");
  await page.waitForFunction(() => document.querySelector("#action-log .answer.ok")?.textContent?.includes('"version"'), null, WAIT);
  await shot(page, "actions");
  await page.close();
  await stream.close();
});

test("a separate client's session is listed and Disconnect ends it", async () => {
  const alice = new SodpClient(server.url, { WebSocket, token: userToken("alice") });
  after(() => alice.close());
  await alice.ready;
  alice.watch("game.board", () => {});
  await alice.presence("game.cursors", "/alice", { x: 1 });
  const page = await open();
  await login(page, adminToken);
  await page.waitForSelector("#status.connected", WAIT);
  await tab(page, "Sessions");
  const row = await page.waitForSelector('#sessions-list tr:has-text("alice")', WAIT);
  const id = await row.getAttribute("data-session");
  assert.ok(id);
  await row.click();
  await page.waitForFunction(() => document.querySelector("#session-detail")?.textContent?.includes("game.cursors: /alice"), null, WAIT);
  assert.match((await page.textContent("#session-detail")) ?? "", /game\.board/);
  await shot(page, "sessions");

  let dropped = false;
  alice.onStatusChange((s) => {
    if (s === "reconnecting") dropped = true;
  });
  await page.click(`button[data-disconnect="${id}"]`);
  await page.click(`button[data-disconnect="${id}"]`); // confirm
  await page.waitForFunction((sid) => document.querySelector("#sessions-action")?.textContent === `session ${sid} disconnected`, id, WAIT);
  await page.waitForFunction((sid) => !document.querySelector(`#sessions-list tr[data-session="${sid}"]`), id, WAIT);
  const deadline = Date.now() + 5000;
  while (!dropped && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.ok(dropped, "the disconnected client lost its session");
  alice.close();
  await page.close();
});

test("a token without the admin claim is refused", async () => {
  const page = await open();
  await login(page, userToken("mallory"));
  await page.waitForSelector("#login-error", WAIT);
  assert.match((await page.textContent("#login-error")) ?? "", /not an administrator's \(403/);
  assert.equal(await page.$("button.tab"), null, "no view is shown");
  await shot(page, "refused");
  await page.close();
});

test("without authentication a loopback page logs in with no token; without --inspector-writes a write is a verbatim 403", async () => {
  const local = await startServer(["--inspector"]);
  try {
    const page = await open();
    await page.goto(inspectorUrl(local));
    await page.click("#login-go");
    await page.waitForSelector("#status.connected", WAIT);
    assert.match((await page.textContent("header")) ?? "", /no authentication/);
    await tab(page, "Actions");
    await page.fill("#action-key", "k");
    await page.fill("#action-value", "1");
    await page.click("#action-send");
    await page.waitForSelector("#action-log .answer.err", WAIT);
    const answer = JSON.parse(((await page.textContent("#action-log .answer-body")) ?? "").replace(/^← /, ""));
    assert.deepEqual(answer, {
      success: false,
      code: 403,
      data: "403 the inspector is read-only: start the server with --inspector-writes to write from it",
      extra: {},
    });
    const res = await fetch(`http://127.0.0.1:${local.port}/health`);
    assert.equal(((await res.json()) as { keys: number }).keys, 0, "nothing was written");
    await page.close();
  } finally {
    await local.stop();
  }
});

test("a server without --inspector serves none of it (404)", async () => {
  const plain = await startServer([]);
  try {
    for (const path of ["/inspector", "/inspector/", "/inspector/app.js"]) {
      const res = await fetch(`http://127.0.0.1:${plain.port}${path}`);
      assert.equal(res.status, 404, path);
      assert.doesNotMatch(await res.text(), /SODP inspector/);
    }
    const page = await open();
    const res = await page.goto(inspectorUrl(plain));
    assert.equal(res?.status(), 404);
    await page.close();
  } finally {
    await plain.stop();
  }
});
