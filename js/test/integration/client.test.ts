/** @sodp/client in Node (with the `ws` package) against the real sodp-server. */
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";
import WebSocket from "ws";
import {
  AuthError,
  CallError,
  ConnectionLost,
  type ConnectionStatus,
  ServerError,
  SodpClient,
  type SodpClientOptions,
  type SodpError,
  type WatchMeta,
} from "../../packages/client/src/index.ts";
import { until } from "../../packages/client/test/fake.ts";
import { signJwt } from "../jwt.ts";
import { startProxy } from "../proxy.ts";
import { type Server, startServer } from "../server.ts";

let server: Server;
const clients: SodpClient[] = [];
let n = 0;
const uniq = (p: string) => `${p}.${process.pid}-${++n}`;

function connect(url = server.url, opts: SodpClientOptions = {}) {
  const errors: SodpError[] = [];
  const c = new SodpClient(url, { WebSocket, reconnectDelay: 50, maxReconnectDelay: 200, onError: (e) => errors.push(e), ...opts });
  clients.push(c);
  return { c, errors };
}

type Seen = Array<[unknown, WatchMeta]>;
function recorder<T = unknown>(c: SodpClient, key: string) {
  const seen: Seen = [];
  const off = c.watch<T>(key, (v, m) => seen.push([v, m]));
  return { seen, off, lastValue: () => seen[seen.length - 1]?.[0] };
}

before(async () => {
  server = await startServer();
});
after(async () => {
  await server.stop();
});
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

test("HELLO capabilities and ready", async () => {
  const { c } = connect();
  await c.ready;
  assert.equal(c.status, "connected");
  assert.equal(c.capabilities.multi_watch, true);
  assert.equal(c.capabilities.resume, true);
});

test("every method: set, patch, setIn, presence, delete — watchers see each as STATE_INIT then DELTAs", async () => {
  const key = uniq("room");
  const { c } = connect();
  const w = recorder(c, key);
  await until(() => w.seen.length === 1, 5000, "STATE_INIT");
  assert.deepStrictEqual(w.seen[0], [null, { version: 0, initialized: false, source: "init", key }]);
  const r1 = await c.set(key, { name: "lobby", players: { a: { score: 1 } }, tags: ["x"] });
  assert.equal(typeof r1.version, "number");
  await until(() => w.seen.length === 2);
  assert.deepStrictEqual(w.lastValue(), { name: "lobby", players: { a: { score: 1 } }, tags: ["x"] });
  assert.equal(w.seen[1]?.[1].version, r1.version);
  assert.equal(w.seen[1]?.[1].source, "delta");
  const r2 = await c.patch(key, { players: { b: { score: 2 } } });
  assert.ok((r2.version ?? 0) > (r1.version ?? 0));
  await until(() => w.seen.length === 3);
  const v2 = w.lastValue() as { players: Record<string, unknown>; tags: unknown };
  const v1 = w.seen[1]?.[0] as { players: { a: unknown }; tags: unknown };
  assert.deepStrictEqual(v2.players, { a: { score: 1 }, b: { score: 2 } });
  assert.equal(v2.tags, v1.tags, "structural sharing: untouched subtree keeps identity");
  assert.equal(v2.players.a, v1.players.a);
  await c.setIn(key, "/tags/-", "y");
  await until(() => w.seen.length === 4);
  assert.deepStrictEqual((w.lastValue() as { tags: string[] }).tags, ["x", "y"]);
  await c.setIn(key, "/a~1b", 1);
  await until(() => w.seen.length === 5);
  assert.equal((w.lastValue() as Record<string, unknown>)["a/b"], 1, "RFC 6901 escape");
  await c.presence(key, "/online/me", true);
  await until(() => w.seen.length === 6);
  assert.deepStrictEqual((w.lastValue() as { online: unknown }).online, { me: true });
  const same = await c.set(key, w.lastValue());
  assert.equal(same.version, w.seen[5]?.[1].version, "a write that changes nothing takes no version");
  await c.delete(key);
  await until(() => w.seen.length === 7);
  assert.deepStrictEqual(w.seen[6], [null, { version: w.seen[6]?.[1].version, initialized: false, source: "delta", key }]);
  // the client's snapshot agrees with a fresh watcher's STATE_INIT
  await c.set(key, { final: [1, 2, 3] });
  const { c: c2 } = connect();
  const fresh = recorder(c2, key);
  await until(() => fresh.seen.length === 1 && w.seen.length === 8);
  assert.deepStrictEqual(fresh.lastValue(), w.lastValue());
  assert.equal(fresh.seen[0]?.[1].source, "init");
});

test("call(): raw method; unknown method and bad args reject with CallError codes, never an unrelated call", async () => {
  const { c } = connect();
  const key = uniq("k");
  const okCall = c.call<{ version: number }>("state.set", { state: key, value: 1 });
  const unknown = c.call("state.nope", { state: key });
  const bad = c.set("bad key!", 1);
  assert.equal(typeof (await okCall).version, "number");
  await assert.rejects(unknown, (e: unknown) => e instanceof CallError && e.code === 404 && e.message.startsWith("[SODP] call failed: "));
  await assert.rejects(bad, (e: unknown) => e instanceof CallError && e.code === 400);
});

test("shared subscription: several watchers of one key on one client, one delta each; UNWATCH stops updates", async () => {
  const key = uniq("shared");
  const { c } = connect();
  const { c: writer } = connect();
  const a = recorder(c, key);
  const b = recorder(c, key);
  await until(() => a.seen.length === 1 && b.seen.length === 1);
  await writer.set(key, 1);
  await writer.set(key, 2);
  await until(() => a.seen.length === 3 && b.seen.length === 3);
  assert.deepStrictEqual(
    a.seen.map(([v]) => v),
    [null, 1, 2],
  );
  a.off();
  b.off();
  await until(() => !c.isWatching(key));
  const late = recorder(c, key); // watched again later: updates flow again
  await until(() => late.seen.length === 1);
  assert.equal(late.lastValue(), 2);
  await writer.set(key, 3);
  await until(() => late.seen.length === 2);
  assert.equal(a.seen.length, 3, "a removed callback hears nothing");
});

test("watchMany: one callback, meta.key tells which", async () => {
  const k1 = uniq("m");
  const k2 = uniq("m");
  const { c } = connect();
  const seen: Array<[string, unknown]> = [];
  c.watchMany([k1, k2], (v, m) => seen.push([m.key, v]));
  await until(() => seen.length === 2);
  await c.set(k2, "two");
  await until(() => seen.length === 3);
  assert.deepStrictEqual(seen[2], [k2, "two"]);
});

test("presence: the other client sees it, and it is removed when the owner closes", async () => {
  const key = uniq("cursors");
  const { c: alice } = connect();
  const { c: bob } = connect();
  const w = recorder(bob, key);
  await until(() => w.seen.length === 1);
  await alice.presence(key, "/alice", { x: 1, y: 2 });
  await until(() => JSON.stringify(w.lastValue()) === JSON.stringify({ alice: { x: 1, y: 2 } }));
  alice.close();
  await until(() => JSON.stringify(w.lastValue()) === "{}", 5000, "presence removed");
});

test("RESUME after a cut connection: missed changes are replayed as source 'delta', then live", async () => {
  const key = uniq("resume");
  const proxy = await startProxy(server.port);
  try {
    const statuses: ConnectionStatus[] = [];
    const { c } = connect(proxy.url, { onStatusChange: (s) => statuses.push(s) });
    const { c: writer } = connect();
    await writer.set(key, { n: 0, big: { untouched: true } });
    const w = recorder(c, key);
    await until(() => w.seen.length === 1);
    const untouched = (w.lastValue() as { big: unknown }).big;
    proxy.cut(true); // network gone, and stays gone for a moment
    await until(() => c.status === "reconnecting", 5000);
    for (let i = 1; i <= 5; i++) await writer.set(key, { n: i, big: { untouched: true } });
    proxy.accept();
    await until(() => (w.lastValue() as { n: number }).n === 5, 10_000, "catch up");
    const after = w.seen.slice(1);
    assert.deepStrictEqual(
      after.map(([v, m]) => [(v as { n: number }).n, m.source]),
      [1, 2, 3, 4, 5].map((i) => [i, "delta"]),
      "each missed change replayed as a delta, in order, no re-init",
    );
    assert.equal((w.lastValue() as { big: unknown }).big, untouched, "identity kept across the replay");
    await writer.set(key, { n: 6, big: { untouched: true } });
    await until(() => (w.lastValue() as { n: number }).n === 6);
    assert.deepStrictEqual(statuses.slice(0, 3), ["connected", "reconnecting", "connected"]);
  } finally {
    await proxy.close();
  }
});

test("a call in flight when the connection is cut rejects with ConnectionLost; a queued one is sent after reconnect", async () => {
  const key = uniq("q");
  const proxy = await startProxy(server.port);
  try {
    const { c } = connect(proxy.url);
    await c.ready;
    proxy.cut(true);
    await until(() => c.status === "reconnecting");
    const queued = c.set(key, "later");
    proxy.accept();
    const r = await queued;
    assert.equal(typeof r.version, "number");
  } finally {
    await proxy.close();
  }
});

test("ERROR frames (a bad key in WATCH) go to onError with code and key, never to calls", async () => {
  const { c, errors } = connect();
  c.watch("not a key!", () => {});
  const r = await c.set(uniq("fine"), 1);
  assert.equal(typeof r.version, "number");
  await until(() => errors.length > 0);
  assert.ok(errors[0] instanceof ServerError);
  assert.equal(errors[0]?.code, 400);
  assert.equal((errors[0] as ServerError).key, "not a key!");
});

test("prefix watch and conditional writes, now that the server advertises them", async () => {
  const { c, errors } = connect();
  await c.ready;
  assert.equal(c.capabilities.prefix_watch, true);
  assert.equal(c.capabilities.conditional, true);
  const family = uniq("fam");
  await c.set(`${family}.a`, 1);
  const watched = recorder<Record<string, unknown>>(c, `${family}.*`);
  const map = () => (watched.lastValue() ?? {}) as Record<string, unknown>;
  await until(() => watched.seen.length > 0);
  assert.deepEqual(watched.lastValue(), { [`${family}.a`]: 1 });
  await c.set(`${family}.b`, { hp: 2 });
  await until(() => `${family}.b` in map());
  assert.deepEqual(watched.lastValue(), { [`${family}.a`]: 1, [`${family}.b`]: { hp: 2 } });
  await c.delete(`${family}.a`);
  await until(() => !(`${family}.a` in map()));
  // Compare-and-set: 0 = "holds no value"; a second one conflicts (409).
  const key = uniq("cas");
  await c.set(key, 1, { ifVersion: 0 });
  await assert.rejects(c.set(key, 2, { ifVersion: 0 }), (e: unknown) => e instanceof CallError && e.code === 409);
  assert.deepEqual(errors, []);
});

test("close() rejects pending calls and ends the session", async () => {
  const { c } = connect();
  const p = c.set(uniq("x"), 1);
  c.close();
  await assert.rejects(p, ConnectionLost);
  assert.equal(c.status, "closed");
});

test("auth: tokenProvider on every connect; a refused token stops reconnecting and rejects ready", async () => {
  const secret = "test-secret-0123456789";
  const authServer = await startServer(["--jwt-secret", secret]);
  const proxy = await startProxy(authServer.port);
  try {
    let calls = 0;
    const provider = () => {
      calls++;
      return signJwt(secret, { sub: "alice", exp: Math.floor(Date.now() / 1000) + 600 });
    };
    const { c } = connect(proxy.url, { token: "ignored", tokenProvider: provider });
    await c.ready;
    assert.equal(c.sub, "alice");
    assert.equal(calls, 1);
    assert.equal(c.capabilities.token_refresh, true);
    proxy.cut();
    await until(() => c.status === "connected" && calls === 2, 10_000, "reconnect with a fresh token");

    const statuses: ConnectionStatus[] = [];
    const { c: bad, errors } = connect(authServer.url, {
      token: signJwt("wrong-secret", { sub: "eve" }),
      onStatusChange: (s) => statuses.push(s),
    });
    const queued = bad.set("k", 1);
    await assert.rejects(bad.ready, AuthError);
    await assert.rejects(queued, AuthError);
    assert.equal(bad.status, "disconnected");
    assert.ok(errors.some((e) => e.code === 401));
    await new Promise((r) => setTimeout(r, 300));
    assert.deepStrictEqual(statuses, ["disconnected"], "no reconnect loop after a 401");
  } finally {
    await proxy.close();
    await authServer.stop();
  }
});

test("auth: in-band refresh keeps the session past the first token's expiry", async () => {
  const secret = "test-secret-abcdefghij";
  const authServer = await startServer(["--jwt-secret", secret]);
  try {
    let issued = 0;
    let connects = 0;
    const provider = () => {
      issued++;
      return signJwt(secret, { sub: "bob", exp: Math.floor(Date.now() / 1000) + 7 });
    };
    const { c } = connect(authServer.url, { tokenProvider: provider, onConnect: () => connects++ });
    await c.ready;
    const key = uniq("refresh");
    await new Promise((r) => setTimeout(r, 8500)); // past the first token's exp
    assert.ok(issued >= 2, `refreshed (${issued} tokens issued)`);
    assert.equal(connects, 1, "never reconnected");
    assert.equal(c.status, "connected");
    assert.equal(typeof (await c.set(key, 1)).version, "number");
  } finally {
    await authServer.stop();
  }
});
