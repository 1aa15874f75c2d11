/**
 * The server extensions through @sodp/client against the real sodp-server:
 * transactions, exactly-once writes (idempotency), TTL, one-shot reads, and
 * what happens when the server does not advertise an extension. The
 * frame-reading proxy (`../frame-proxy.ts`) loses a RESULT after the server
 * applied the write, and plays a server without some capabilities.
 */
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";
import WebSocket from "ws";
import {
  CallError,
  ConnectionLost,
  SodpClient,
  type SodpClientOptions,
  type SodpError,
  UnsupportedError,
  type WatchMeta,
} from "../../packages/client/src/index.ts";
import { until } from "../../packages/client/test/fake.ts";
import { type FrameProxy, startFrameProxy } from "../frame-proxy.ts";
import { type Server, startServer } from "../server.ts";

let server: Server;
const clients: SodpClient[] = [];
const proxies: FrameProxy[] = [];
let n = 0;
const uniq = (p: string) => `${p}.t${process.pid}-${++n}`;

function connect(url = server.url, opts: SodpClientOptions = {}) {
  const errors: SodpError[] = [];
  const c = new SodpClient(url, { WebSocket, reconnectDelay: 20, maxReconnectDelay: 100, onError: (e) => errors.push(e), ...opts });
  clients.push(c);
  return { c, errors };
}

async function proxy(): Promise<FrameProxy> {
  const p = await startFrameProxy(server.port);
  proxies.push(p);
  return p;
}

function recorder<T = unknown>(c: SodpClient, key: string) {
  const seen: Array<[T | null, WatchMeta]> = [];
  c.watch<T>(key, (v, m) => seen.push([v, m]));
  return { seen, last: () => seen[seen.length - 1] };
}

before(async () => {
  server = await startServer();
});
after(async () => {
  await server.stop();
});
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const p of proxies.splice(0)) await p.close();
});

function isCallError(code: number, check: (e: CallError) => boolean = () => true) {
  return (e: unknown) => e instanceof CallError && e.code === code && check(e);
}

// ── transaction ────────────────────────────────────────────────────────────

test("transaction: several keys at one version, one DELTA per touched key, seen by key and pattern watchers", async () => {
  const fam = uniq("bank");
  const { c } = connect();
  const a = recorder<{ balance: number }>(c, `${fam}.alice`);
  const pat = recorder<Record<string, unknown>>(c, `${fam}.*`);
  await until(() => a.seen.length === 1 && pat.seen.length === 1);
  const va = (await c.set(`${fam}.alice`, { balance: 100 })).version as number;
  const vb = (await c.set(`${fam}.bob`, { balance: 100 })).version as number;
  await until(() => pat.seen.length === 3);
  const done = await c.transaction([
    { method: "state.patch", args: { state: `${fam}.alice`, patch: { balance: 90 }, if_version: va } },
    { method: "state.set_in", args: { state: `${fam}.bob`, path: "/balance", value: 110, if_version: vb } },
    { method: "state.set", args: { state: `${fam}.carol`, value: { balance: 0 } } },
  ]);
  const v = done.version as number;
  assert.ok(v > vb);
  await until(() => pat.seen.length === 6, 5000, "one pattern DELTA per touched key");
  assert.deepEqual(
    pat.seen.slice(3).map(([, m]) => m.version),
    [v, v, v],
  );
  assert.deepEqual(pat.last()?.[0], {
    [`${fam}.alice`]: { balance: 90 },
    [`${fam}.bob`]: { balance: 110 },
    [`${fam}.carol`]: { balance: 0 },
  });
  await until(() => a.seen.length === 3);
  assert.deepEqual(a.last(), [{ balance: 90 }, { version: v, initialized: true, source: "delta", key: `${fam}.alice` }]);
});

test("transaction: a failed condition is 409 with the op index and that key's version; nothing applied, no DELTA", async () => {
  const fam = uniq("tx");
  const { c } = connect();
  const v1 = (await c.set(`${fam}.a`, 1)).version as number;
  const v2 = (await c.set(`${fam}.b`, 2)).version as number;
  const w = recorder(c, `${fam}.*`);
  await until(() => w.seen.length === 1);
  await assert.rejects(
    c.transaction([
      { method: "state.set", args: { state: `${fam}.a`, value: 10, if_version: v1 } },
      { method: "state.set", args: { state: `${fam}.b`, value: 20, if_version: v1 } }, // stale
      { method: "state.delete", args: { state: `${fam}.a` } },
    ]),
    isCallError(409, (e) => e.result.op === 1 && e.result.version === v2),
  );
  await assert.rejects(c.transaction([]), isCallError(400));
  const presenceOp = { method: "state.presence", args: { state: `${fam}.a`, path: "/p", value: 1 } };
  await assert.rejects(c.call("state.transaction", { ops: [presenceOp] }), isCallError(400));
  const barrier = (await c.set(`${fam}.z`, 0)).version as number;
  await until(() => w.last()?.[1].version === barrier);
  assert.equal(w.seen.length, 2, "the refused transaction sent no DELTA");
  assert.deepEqual((await c.get(`${fam}.a`)).value, 1);
  assert.deepEqual((await c.get(`${fam}.b`)).value, 2);
});

// ── idempotency ────────────────────────────────────────────────────────────

test("idempotency: a repeated key returns the original result and changes nothing; reused for other args is 409", async () => {
  const key = uniq("order");
  const { c } = connect();
  await c.ready;
  assert.equal(c.supports("idempotency"), true);
  const first = await c.set(key, { total: 42 }, { idempotencyKey: `${key}-k` });
  const again = await c.set(key, { total: 42 }, { idempotencyKey: `${key}-k` });
  assert.deepEqual(again, first);
  const other = await c.patch(key, { total: 43 }); // a generated key: applies
  assert.ok((other.version as number) > (first.version as number));
  const replay = await c.set(key, { total: 42 }, { idempotencyKey: `${key}-k` });
  assert.deepEqual(replay, first, "still the original result, even after later writes");
  assert.deepEqual((await c.get(key)).value, { total: 43 }, "the repeat changed nothing");
  await assert.rejects(c.set(key, { total: 99 }, { idempotencyKey: `${key}-k` }), isCallError(409));
  await assert.rejects(c.set(key, 1, { idempotencyKey: "" }), isCallError(400));
  const h = await c.history(key);
  assert.deepEqual(
    h.entries.map((e) => e.version),
    [first.version, other.version],
  );
});

for (const [name, method, write] of [
  ["patch", "state.patch", (c: SodpClient, k: string, v: number) => c.patch(k, { n: 1 }, { ifVersion: v })],
  ["setIn", "state.set_in", (c: SodpClient, k: string, v: number) => c.setIn(k, "/n", 1, { ifVersion: v })],
  [
    "transaction",
    "state.transaction",
    (c: SodpClient, k: string, v: number) => c.transaction([{ method: "state.set", args: { state: k, value: { n: 1 }, if_version: v } }]),
  ],
  ["explicit key", "state.set", (c: SodpClient, k: string, v: number) => c.set(k, { n: 1 }, { ifVersion: v, idempotencyKey: `${k}-mine` })],
] as const) {
  test(`exactly once (${name}): the connection is cut after the server applied the write, before its RESULT`, async () => {
    const key = uniq("acct");
    const p = await proxy();
    const { c } = connect(p.url);
    const { c: observer } = connect();
    const v0 = (await c.set(key, { n: 0 })).version as number;
    const before = p.calls.length;
    p.dropResultOf((call) => call.method === method);
    // if_version v0: a second application would be a 409 for the caller
    const result = await write(c, key, v0);
    assert.equal(p.dropped.length, 1);
    assert.equal(p.dropped[0]?.success, true);
    assert.deepEqual(result, p.dropped[0]?.data, "the caller got the original RESULT");
    assert.equal(p.accepted(), 2, "via a second connection");
    const [first, resend] = p.calls.slice(before);
    assert.equal(typeof first?.idempotency_key, "string");
    assert.deepEqual(resend, first, "the same CALL again, key included");
    const h = await observer.history(key, { sinceVersion: v0 });
    assert.deepEqual(
      h.entries.map((e) => e.version),
      [result.version],
      "applied once",
    );
    assert.deepEqual((await observer.get(key)).value, { n: 1 });
  });
}

test("exactly once: writes made while disconnected are sent in order after the reconnect", async () => {
  const key = uniq("offline");
  const p = await proxy();
  const { c } = connect(p.url);
  await c.ready;
  p.cut(true);
  await until(() => c.status === "reconnecting");
  const writes = [1, 2, 3, 4].map((i) => c.patch(key, { [`f${i}`]: i }));
  p.accept();
  const versions = (await Promise.all(writes)).map((r) => r.version as number);
  assert.deepEqual(
    [...versions].sort((x, y) => x - y),
    versions,
    "applied in call order",
  );
  assert.equal(new Set(versions).size, 4);
  assert.ok(p.calls.slice(-4).every((call) => typeof call.idempotency_key === "string"));
  assert.deepEqual((await c.get(key)).value, { f1: 1, f2: 2, f3: 3, f4: 4 });
});

test("exactly once: a presence whose RESULT was lost is bound again to the new session", async () => {
  const key = uniq("cursors");
  const p = await proxy();
  const { c } = connect(p.url);
  const { c: observer } = connect();
  const w = recorder<Record<string, unknown>>(observer, key);
  await c.ready;
  p.dropResultOf((call) => call.method === "state.presence");
  const r = await c.presence(key, "/me", 1);
  const [first, again] = p.calls.filter((call) => call.method === "state.presence");
  assert.notEqual(again?.idempotency_key, first?.idempotency_key, "a fresh key: the old binding died with its session");
  await until(() => w.last()?.[1].version === r.version, 5000, "the resend's change");
  assert.deepEqual(w.last()?.[0], { me: 1 });
  c.close();
  await until(() => JSON.stringify(w.last()?.[0]) === "{}", 5000, "removed when the new session ends");
});

test("exactly once: a resend that finds the server no longer advertising idempotency fails with ConnectionLost", async () => {
  const key = uniq("gone");
  const p = await proxy();
  const { c } = connect(p.url);
  const v0 = (await c.set(key, 0)).version as number;
  p.rewriteHello((h) => ({ ...h, capabilities: { ...(h.capabilities as object), idempotency: false } }));
  p.dropResultOf((call) => call.method === "state.set");
  await assert.rejects(c.set(key, 1, { ifVersion: v0 }), ConnectionLost);
  assert.equal(p.calls.filter((call) => call.method === "state.set").length, 2, "not sent again");
});

// ── ttl ────────────────────────────────────────────────────────────────────

test("ttl: expiresAt in STATE_INIT and DELTA; the key expires as a versioned delete seen by watchers", async () => {
  const key = uniq("typing");
  const { c } = connect();
  const { c: late } = connect();
  const w = recorder(c, key);
  await until(() => w.seen.length === 1);
  const t0 = Date.now();
  const r = await c.set(key, ["ann"], { ttlMs: 400 });
  await until(() => w.seen.length === 2);
  const at = w.last()?.[1].expiresAt as number;
  assert.ok(at >= t0 + 400 - 50 && at <= Date.now() + 400 + 50, `expiresAt ${at - t0} ms after the write`);
  const fresh = recorder(late, key);
  await until(() => fresh.seen.length === 1);
  assert.equal(fresh.last()?.[1].expiresAt, at, "STATE_INIT carries the deadline");
  await until(() => w.seen.length === 3, 3000, "expiry");
  const expiredAfter = Date.now() - t0;
  const [value, meta] = w.last() as [unknown, WatchMeta];
  assert.equal(value, null);
  assert.equal(meta.initialized, false);
  assert.ok(meta.version > (r.version as number), "expiry takes a version");
  assert.equal(meta.expiresAt, undefined);
  assert.ok(expiredAfter >= 400 - 50, `expired after ${expiredAfter} ms`);
  const h = await c.history(key);
  assert.deepEqual(h.entries.at(-1), { version: meta.version, ops: [{ op: "REMOVE", path: "/" }] });
});

test("ttl: ttlMs 0 removes the deadline (DELTA expires_at 0 → no expiresAt); a write without ttl keeps it", async () => {
  const key = uniq("ttl");
  const { c } = connect();
  const w = recorder(c, key);
  await until(() => w.seen.length === 1);
  await c.set(key, 1, { ttlMs: 60_000 });
  await until(() => w.seen.length === 2);
  const at = w.last()?.[1].expiresAt;
  assert.equal(typeof at, "number");
  await c.set(key, 2);
  await until(() => w.seen.length === 3);
  assert.equal(w.last()?.[1].expiresAt, at, "kept");
  await c.set(key, 3, { ttlMs: 0 });
  await until(() => w.seen.length === 4);
  assert.equal(w.last()?.[1].expiresAt, undefined, "removed");
  assert.ok(!("expiresAt" in (w.last()?.[1] ?? {})), "no expiresAt field at all");
  await assert.rejects(c.delete(key, { ttlMs: 5 }), isCallError(400));
  await c.set(key, 4, { ttlMs: 60_000 });
  await until(() => w.seen.length === 5);
  assert.equal(typeof w.last()?.[1].expiresAt, "number");
  await c.delete(key); // a delete removes the deadline too
  await until(() => w.seen.length === 6);
  assert.equal(w.last()?.[1].initialized, false);
  assert.equal(w.last()?.[1].expiresAt, undefined);
});

// ── read ───────────────────────────────────────────────────────────────────

test("read: get, keys by whole-segment prefix with paging, history with paging", async () => {
  const fam = uniq("shop");
  const { c } = connect();
  assert.deepEqual(await c.get(`${fam}.never`), { version: 0, value: null, initialized: false });
  for (const k of ["b", "a", "d", "c", "e"]) await c.set(`${fam}.${k}`, k);
  await c.set(`${fam}x.a`, "not below the prefix");
  await c.set(fam, "the prefix itself");
  const all: string[] = [];
  let page = await c.keys({ prefix: fam, limit: 2 });
  const sizes = [page.keys.length];
  all.push(...page.keys);
  while (page.next !== undefined) {
    page = await c.keys({ prefix: fam, limit: 2, after: page.next });
    sizes.push(page.keys.length);
    all.push(...page.keys);
  }
  assert.deepEqual(all, [fam, ...["a", "b", "c", "d", "e"].map((k) => `${fam}.${k}`)]);
  assert.ok(sizes.every((s) => s <= 2));
  await c.delete(`${fam}.c`);
  assert.deepEqual((await c.keys({ prefix: `${fam}.c` })).keys, [], "a deleted key is not listed");

  const key = `${fam}.log`;
  const versions: number[] = [];
  for (let i = 0; i < 5; i++) versions.push((await c.set(key, i)).version as number);
  const got = await c.get(key);
  assert.deepEqual(got, { version: versions[4], value: 4, initialized: true });
  const h1 = await c.history(key, { limit: 2 });
  assert.equal(h1.complete, true);
  assert.deepEqual(
    h1.entries.map((e) => e.version),
    versions.slice(0, 2),
  );
  assert.deepEqual(h1.entries[0]?.ops, [{ op: "ADD", path: "/", value: 0 }]);
  const h2 = await c.history(key, { sinceVersion: h1.entries.at(-1)?.version, limit: 100 });
  assert.deepEqual(
    h2.entries.map((e) => e.version),
    versions.slice(2),
  );
  assert.deepEqual(await c.history(`${fam}.never`), { entries: [], complete: true });
});

// ── without the capabilities ───────────────────────────────────────────────

test("a server without the extensions: UnsupportedError and nothing sent; writes carry no key and fail when cut in flight", async () => {
  const p = await proxy();
  p.rewriteHello((h) => ({ ...h, capabilities: { multi_watch: true, resume: true } }));
  const { c, errors } = connect(p.url);
  await c.ready;
  const key = uniq("plain");
  const refused = [
    [c.set(key, 1, { ifVersion: 0 }), "conditional"],
    [c.set(key, 1, { ttlMs: 100 }), "ttl"],
    [c.set(key, 1, { idempotencyKey: "k" }), "idempotency"],
    [c.transaction([{ method: "state.set", args: { state: key, value: 1 } }]), "transaction"],
    [c.get(key), "read"],
    [c.keys(), "read"],
    [c.history(key), "read"],
  ] as const;
  for (const [call, cap] of refused) {
    await assert.rejects(call, (e: unknown) => e instanceof UnsupportedError && e.capability === cap);
  }
  c.watch(`${key}.*`, () => {});
  await until(() => errors.some((e) => e instanceof UnsupportedError && e.capability === "prefix_watch"));
  assert.equal(p.calls.length, 0, "nothing was sent");
  const ok = await c.set(key, 1);
  assert.equal(typeof ok.version, "number");
  assert.equal(p.calls.length, 1);
  assert.equal(p.calls[0]?.idempotency_key, undefined, "no key without the capability");
  p.dropResultOf((call) => call.method === "state.set");
  await assert.rejects(c.set(key, 2), ConnectionLost);
});
