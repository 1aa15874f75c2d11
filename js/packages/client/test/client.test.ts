import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";
import { type ConnectionStatus, SodpClient, type SodpClientOptions, type WatchMeta } from "../src/client.ts";
import type { SodpError } from "../src/errors.ts";
import { AuthError, CallError, ConnectionLost, DeltaError, ServerError, UnsupportedError } from "../src/errors.ts";
import { FrameType as T } from "../src/frames.ts";
import { FakeSocket, last, tick, until } from "./fake.ts";

const clients: SodpClient[] = [];
function make(opts: SodpClientOptions = {}): { c: SodpClient; errors: SodpError[]; statuses: ConnectionStatus[] } {
  const errors: SodpError[] = [];
  const statuses: ConnectionStatus[] = [];
  const c = new SodpClient("sodp://fake:7777", {
    WebSocket: FakeSocket,
    reconnectDelay: 5,
    maxReconnectDelay: 20,
    onError: (e) => errors.push(e),
    onStatusChange: (s) => statuses.push(s),
    ...opts,
  });
  clients.push(c);
  return { c, errors, statuses };
}

beforeEach(() => {
  FakeSocket.instances = [];
});
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

type Seen = Array<[unknown, WatchMeta]>;

test("connects at once to the normalised URL, becomes connected on HELLO, resolves ready", async () => {
  const { c, statuses } = make();
  assert.equal(last().url, "ws://fake:7777");
  assert.equal(c.status, "connecting");
  last().hello({ multi_watch: true, heartbeat_interval_ms: 30000 });
  await c.ready;
  assert.equal(c.status, "connected");
  assert.equal(c.connected, true);
  assert.equal(c.capabilities.heartbeat_interval_ms, 30000);
  assert.deepStrictEqual(statuses, ["connected"]);
  assert.equal(last().binaryType, "arraybuffer");
});

test("calls made before the connection is up are queued and sent in order", async () => {
  const { c } = make();
  const p1 = c.set("a", 1);
  const p2 = c.patch("b", { x: 1 });
  assert.equal(last().sent.length, 0);
  last().hello();
  const calls = last().ofType(T.CALL);
  assert.deepStrictEqual(
    calls.map((f) => last().body(f).method),
    ["state.set", "state.patch"],
  );
  const ids = calls.map((f) => last().body(f).call_id as string);
  assert.notEqual(ids[0], ids[1]);
  // answer out of order: each RESULT settles its own call
  last().push(T.RESULT, 0, { call_id: ids[1], success: true, data: { version: 8 } });
  last().push(T.RESULT, 0, { call_id: ids[0], success: false, data: "nope", code: 422 });
  assert.deepStrictEqual(await p2, { version: 8 });
  await assert.rejects(p1, (e: unknown) => {
    assert.ok(e instanceof CallError);
    assert.equal(e.code, 422);
    assert.ok(e.message.startsWith("[SODP] call failed: "));
    return true;
  });
});

test("an ERROR frame never rejects a pending call; it goes to onError with its code and key", async () => {
  const { c, errors } = make();
  last().hello();
  c.watch("secret", () => {});
  const watch = last().ofType(T.WATCH)[0];
  const p = c.set("x", 1);
  last().push(T.ERROR, watch?.streamId ?? 0, { code: 403, message: "denied" });
  assert.equal(errors.length, 1);
  assert.ok(errors[0] instanceof ServerError);
  assert.equal(errors[0]?.code, 403);
  assert.equal((errors[0] as ServerError).key, "secret");
  const id = last().body(last().ofType(T.CALL)[0]).call_id;
  last().push(T.RESULT, 0, { call_id: id, success: true, data: { version: 1 } });
  assert.deepStrictEqual(await p, { version: 1 });
});

test("watch: STATE_INIT then DELTAs; shared subscription; cache delivery; UNWATCH when the last callback leaves", async () => {
  const { c } = make();
  last().hello();
  const a: Seen = [];
  const b: Seen = [];
  const offA = c.watch("game", (v, m) => a.push([v, m]));
  assert.equal(last().ofType(T.WATCH).length, 1);
  assert.deepStrictEqual(last().body(last().ofType(T.WATCH)[0]), { state: "game" });
  last().push(T.STATE_INIT, 42, { state: "game", version: 5, value: { score: 1 }, initialized: true });
  assert.deepStrictEqual(a, [[{ score: 1 }, { version: 5, initialized: true, source: "init", key: "game" }]]);
  const offB = c.watch("game", (v, m) => b.push([v, m]));
  assert.equal(last().ofType(T.WATCH).length, 1, "second watch shares the subscription");
  assert.deepStrictEqual(b, [[{ score: 1 }, { version: 5, initialized: true, source: "cache", key: "game" }]]);
  last().push(T.DELTA, 42, { version: 6, state: "game", ops: [{ op: "UPDATE", path: "/score", value: 2 }] });
  assert.equal(a.length, 2);
  assert.equal(b.length, 2);
  assert.deepStrictEqual(a[1]?.[0], { score: 2 });
  assert.equal(a[1]?.[1].source, "delta");
  assert.equal(c.getSnapshot("game"), a[1]?.[0]);
  assert.equal(c.getSnapshot("other"), undefined);
  offA();
  await tick();
  assert.equal(last().ofType(T.UNWATCH).length, 0, "one callback left");
  offB();
  offB(); // idempotent
  await tick();
  assert.deepStrictEqual(
    last()
      .ofType(T.UNWATCH)
      .map((f) => last().body(f)),
    [{ state: "game" }],
  );
  assert.equal(c.isWatching("game"), false);
  // watched again later: a fresh WATCH, and updates flow
  const again: Seen = [];
  c.watch("game", (v, m) => again.push([v, m]));
  assert.equal(last().ofType(T.WATCH).length, 2);
  last().push(T.STATE_INIT, 42, { state: "game", version: 9, value: { score: 7 }, initialized: true });
  last().push(T.DELTA, 42, { version: 10, state: "game", ops: [{ op: "UPDATE", path: "/score", value: 8 }] });
  assert.deepStrictEqual(
    again.map(([v]) => v),
    [{ score: 7 }, { score: 8 }],
  );
});

test("unsubscribe then resubscribe in the same tick (StrictMode) keeps the subscription", async () => {
  const { c } = make();
  last().hello();
  const off = c.watch("k", () => {});
  off();
  c.watch("k", () => {});
  await tick();
  assert.equal(last().ofType(T.UNWATCH).length, 0);
  assert.equal(last().ofType(T.WATCH).length, 1);
});

test("DELTAs that arrive before their STATE_INIT are buffered and applied after it if newer", async () => {
  const { c } = make();
  last().hello();
  const seen: Seen = [];
  c.watch("k", (v, m) => seen.push([v, m]));
  last().push(T.DELTA, 11, { version: 3, state: "k", ops: [{ op: "UPDATE", path: "/n", value: 3 }] });
  last().push(T.DELTA, 11, { version: 4, state: "k", ops: [{ op: "UPDATE", path: "/n", value: 4 }] });
  assert.equal(seen.length, 0);
  last().push(T.STATE_INIT, 11, { state: "k", version: 3, value: { n: 3 }, initialized: true });
  assert.deepStrictEqual(
    seen.map(([v, m]) => [v, m.version, m.source]),
    [
      [{ n: 3 }, 3, "init"],
      [{ n: 4 }, 4, "delta"],
    ],
  );
});

test("watchMany: one multi-key WATCH for new keys only, no double delivery over already-watched keys", async () => {
  const { c } = make();
  last().hello();
  const single: Seen = [];
  c.watch("a", (v, m) => single.push([v, m]));
  last().push(T.STATE_INIT, 10, { state: "a", version: 1, value: 1, initialized: true });
  const many: Seen = [];
  const off = c.watchMany(["a", "b", "c"], (v, m) => many.push([v, m]));
  const watches = last().ofType(T.WATCH);
  assert.equal(watches.length, 2);
  assert.deepStrictEqual(last().body(watches[1]), { states: ["b", "c"] });
  assert.deepStrictEqual(
    many.map(([v, m]) => [m.key, v, m.source]),
    [["a", 1, "cache"]],
  );
  last().push(T.DELTA, 10, { version: 2, state: "a", ops: [{ op: "UPDATE", path: "/", value: 2 }] });
  assert.equal(many.length, 2);
  assert.equal(single.length, 2);
  off();
  await tick();
  assert.deepStrictEqual(
    last()
      .ofType(T.UNWATCH)
      .map((f) => last().body(f).state),
    ["b", "c"],
  );
});

test("reconnect: RESUME from the known version first, replays applied as source 'delta', STATE_INIT marker keeps identity, then queued calls", async () => {
  const { c, statuses } = make();
  last().hello();
  const seen: Seen = [];
  c.watch("k", (v, m) => seen.push([v, m]));
  c.watch("never", () => {});
  last().push(T.STATE_INIT, 10, { state: "k", version: 5, value: { n: 5, other: { x: 1 } }, initialized: true });
  last().push(T.STATE_INIT, 11, { state: "never", version: 0, value: null, initialized: false });
  const first = last();
  first.drop();
  assert.equal(c.status, "reconnecting");
  assert.equal(c.connected, false);
  const queued = c.set("k", { n: 99 });
  await until(() => FakeSocket.instances.length === 2, 2000, "reconnect");
  const second = last();
  second.hello();
  const order = second.sent.map((f) => f.type);
  assert.deepStrictEqual(order, [T.RESUME, T.WATCH, T.CALL], "RESUME/WATCH before queued calls");
  assert.deepStrictEqual(second.body(second.sent[0]), { state: "k", since_version: 5 });
  assert.deepStrictEqual(second.body(second.sent[1]), { state: "never" });
  // replay on a stream no STATE_INIT has announced yet: routed by `state`
  second.push(T.DELTA, 77, { version: 6, state: "k", ops: [{ op: "UPDATE", path: "/n", value: 6 }] });
  second.push(T.DELTA, 77, { version: 7, state: "k", ops: [{ op: "UPDATE", path: "/n", value: 7 }] });
  const before = c.getSnapshot<{ n: number; other: unknown }>("k");
  second.push(T.STATE_INIT, 77, { state: "k", version: 7, value: { n: 7, other: { x: 1 } }, initialized: true });
  assert.equal(c.getSnapshot("k"), before, "live marker at the same version keeps the value's identity");
  assert.deepStrictEqual(
    seen.map(([v, m]) => [(v as { n: number }).n, m.version, m.source]),
    [
      [5, 5, "init"],
      [6, 6, "delta"],
      [7, 7, "delta"],
    ],
  );
  // a replay overlapping what we have is ignored
  second.push(T.DELTA, 77, { version: 7, state: "k", ops: [{ op: "UPDATE", path: "/n", value: 0 }] });
  assert.equal(seen.length, 3);
  const id = second.body(second.ofType(T.CALL)[0]).call_id;
  second.push(T.RESULT, 0, { call_id: id, success: true, data: { version: 8 } });
  assert.deepStrictEqual(await queued, { version: 8 });
  assert.deepStrictEqual(statuses, ["connected", "reconnecting", "connected"]);
});

test("RESUME with trimmed history: STATE_INIT alone replaces the value (source 'init')", async () => {
  const { c } = make();
  last().hello();
  const seen: Seen = [];
  c.watch("k", (v, m) => seen.push([v, m]));
  last().push(T.STATE_INIT, 10, { state: "k", version: 5, value: 5, initialized: true });
  last().drop();
  await until(() => FakeSocket.instances.length === 2);
  last().hello();
  last().push(T.STATE_INIT, 10, { state: "k", version: 5000, value: 9, initialized: true });
  assert.deepStrictEqual(
    seen.map(([v, m]) => [v, m.source]),
    [
      [5, "init"],
      [9, "init"],
    ],
  );
});

test("a call in flight when the connection drops rejects with ConnectionLost", async () => {
  const { c } = make();
  last().hello();
  const p = c.set("a", 1);
  last().drop();
  await assert.rejects(p, ConnectionLost);
  assert.ok(c.status === "reconnecting");
});

test("calls waiting while disconnected are bounded by maxPendingCalls; the queued ones still go out", async () => {
  const { c } = make({ maxPendingCalls: 2 });
  const first = c.set("a", 1);
  const second = c.set("b", 2);
  await assert.rejects(c.set("c", 3), /too many calls pending/);
  last().hello();
  const sent = last().sent.map((f) => last().body(f) as { method?: string; args?: { state?: string } });
  assert.deepStrictEqual(
    sent.filter((b) => b.method === "state.set").map((b) => b.args?.state),
    ["a", "b"],
    "the two queued calls, not the refused one",
  );
  void first.catch(() => {});
  void second.catch(() => {});
});

test("401 at the handshake: stops reconnecting, rejects ready and queued calls, status disconnected", async () => {
  const { c, errors, statuses } = make({ token: "bad" });
  const queued = c.set("a", 1);
  last().hello({}, true);
  await until(() => last().ofType(T.AUTH).length === 1);
  assert.deepStrictEqual(last().body(last().ofType(T.AUTH)[0]), { token: "bad" });
  last().push(T.ERROR, 0, { code: 401, message: "invalid token" });
  await assert.rejects(c.ready, AuthError);
  await assert.rejects(queued, AuthError);
  assert.equal(c.status, "disconnected");
  assert.ok(errors.some((e) => e instanceof AuthError && e.code === 401));
  await tick(60);
  assert.equal(FakeSocket.instances.length, 1, "no reconnect after a refused token");
  assert.deepStrictEqual(statuses, ["disconnected"]);
  await assert.rejects(c.set("b", 2), AuthError);
});

test("auth: tokenProvider wins over token, is called on every connect; AUTH_OK gives sub", async () => {
  let n = 0;
  const { c } = make({ token: "static", tokenProvider: async () => `t${++n}` });
  last().hello({}, true);
  await until(() => last().ofType(T.AUTH).length === 1);
  assert.deepStrictEqual(last().body(last().ofType(T.AUTH)[0]), { token: "t1" });
  last().push(T.AUTH_OK, 0, { sub: "alice" });
  await c.ready;
  assert.equal(c.sub, "alice");
  // token expired on a live session: reconnect and ask the provider again
  last().push(T.ERROR, 0, { code: 401, message: "token expired" });
  await until(() => FakeSocket.instances.length === 2);
  last().hello({}, true);
  await until(() => last().ofType(T.AUTH).length === 1);
  assert.deepStrictEqual(last().body(last().ofType(T.AUTH)[0]), { token: "t2" });
  last().push(T.AUTH_OK, 0, { sub: "alice" });
  assert.equal(c.status, "connected");
});

test("in-band token refresh before expiry when the server advertises token_refresh", async () => {
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");
  // exp 6 s ahead: refresh 5 s early (the minimum margin) → in about 1 s
  const tok = (i: number) => `${b64({ alg: "HS256" })}.${b64({ sub: "a", exp: Math.floor(Date.now() / 1000) + 6, i })}.sig`;
  let n = 0;
  const { c } = make({ tokenProvider: () => tok(++n) });
  last().hello({ token_refresh: true }, true);
  await until(() => last().ofType(T.AUTH).length === 1);
  last().push(T.AUTH_OK, 0, { sub: "a" });
  await c.ready;
  await until(() => last().ofType(T.AUTH).length === 2, 4000, "refresh AUTH");
  assert.equal(FakeSocket.instances.length, 1, "same socket");
  assert.equal(n, 2);
});

test("a DELTA that does not fit fails loudly and resyncs (UNWATCH + WATCH, then a fresh baseline)", async () => {
  const { c, errors } = make();
  last().hello();
  const seen: Seen = [];
  c.watch("k", (v, m) => seen.push([v, m]));
  last().push(T.STATE_INIT, 10, { state: "k", version: 1, value: { l: [1] }, initialized: true });
  last().push(T.DELTA, 10, { version: 2, state: "k", ops: [{ op: "MOVE", path: "/l" }] });
  assert.ok(errors.some((e) => e instanceof DeltaError));
  assert.deepStrictEqual(
    last().sent.map((f) => f.type),
    [T.WATCH, T.UNWATCH, T.WATCH],
  );
  last().push(T.DELTA, 10, { version: 3, state: "k", ops: [{ op: "ADD", path: "/l/-", value: 2 }] });
  assert.equal(seen.length, 1, "buffered until the new baseline");
  last().push(T.STATE_INIT, 10, { state: "k", version: 2, value: { l: [1, 9] }, initialized: true });
  assert.deepStrictEqual(
    seen.map(([v]) => v),
    [{ l: [1] }, { l: [1, 9] }, { l: [1, 9, 2] }],
  );
});

test("server HEARTBEAT is echoed", async () => {
  const { c } = make();
  last().hello();
  await c.ready;
  last().push(T.HEARTBEAT, 0, null);
  assert.equal(last().ofType(T.HEARTBEAT).length, 1);
});

test("liveness: long silence sends a probe; an answer keeps the connection, no answer drops it", async () => {
  const { c } = make({ livenessTimeout: 80, probeTimeout: 80 });
  last().hello();
  await c.ready;
  const s1 = last();
  await until(() => s1.ofType(T.HEARTBEAT).length === 1, 2000, "probe");
  s1.push(T.HEARTBEAT, 0, null); // the answer
  assert.equal(s1.ofType(T.HEARTBEAT).length, 1, "an answer to a probe is not echoed");
  assert.equal(c.status, "connected");
  await until(() => s1.ofType(T.HEARTBEAT).length === 2, 2000, "second probe");
  await until(() => FakeSocket.instances.length === 2, 2000, "drop and reconnect");
  assert.equal(s1.closedWith, 4000);
});

test("connect timeout: a server that never says HELLO is abandoned and retried", async () => {
  make({ connectTimeout: 50 });
  last().open();
  await until(() => FakeSocket.instances.length === 2, 2000);
});

test("reconnect: false → disconnected after a drop, queued calls fail", async () => {
  const { c } = make({ reconnect: false });
  last().hello();
  await c.ready;
  last().drop();
  assert.equal(c.status, "disconnected");
  await assert.rejects(c.set("a", 1), ConnectionLost);
});

test("close(): status closed, pending calls reject, no reconnect", async () => {
  const { c, statuses } = make();
  last().hello();
  const p = c.set("a", 1);
  c.close();
  await assert.rejects(p, ConnectionLost);
  assert.equal(c.status, "closed");
  await tick(40);
  assert.equal(FakeSocket.instances.length, 1);
  assert.deepStrictEqual(statuses, ["connected", "closed"]);
});

test("call timeout rejects with a [SODP] call failed message", async () => {
  const { c } = make({ callTimeout: 30 });
  last().hello();
  await assert.rejects(c.set("a", 1), (e: unknown) => (e as Error).message.startsWith("[SODP] call failed: "));
});

test("extensions are only used when advertised: otherwise UnsupportedError, nothing sent", async () => {
  const { c, errors } = make();
  last().hello({ multi_watch: true });
  await assert.rejects(c.set("a", 1, { ifVersion: 3 }), UnsupportedError);
  await assert.rejects(c.set("a", 1, { ttlMs: 100 }), UnsupportedError);
  await assert.rejects(c.transaction([{ method: "state.set", args: { state: "a", value: 1 } }]), UnsupportedError);
  await assert.rejects(c.get("a"), UnsupportedError);
  c.watch("game.*", () => {});
  assert.ok(errors.some((e) => e instanceof UnsupportedError));
  assert.equal(last().ofType(T.CALL).length, 0);
  assert.equal(last().ofType(T.WATCH).length, 0);
});

test("advertised extensions: args carry if_version/ttl_ms; idempotent writes survive a lost connection and are resent once", async () => {
  const { c } = make();
  last().hello({ conditional: true, ttl: true, idempotency: true });
  const p = c.set("a", 1, { ifVersion: 0, ttlMs: 500 });
  const body = last().body(last().ofType(T.CALL)[0]);
  assert.deepStrictEqual(body.args, { state: "a", value: 1, if_version: 0, ttl_ms: 500 });
  assert.equal(typeof body.idempotency_key, "string");
  last().drop();
  await until(() => FakeSocket.instances.length === 2);
  last().hello({ conditional: true, ttl: true, idempotency: true });
  const resent = last().body(last().ofType(T.CALL)[0]);
  assert.equal(resent.idempotency_key, body.idempotency_key);
  assert.equal(resent.call_id, body.call_id);
  last().push(T.RESULT, 0, { call_id: resent.call_id, success: false, code: 409, data: "version mismatch", version: 12 });
  await assert.rejects(p, (e: unknown) => e instanceof CallError && e.code === 409 && e.result.version === 12);
});

test("call ids do not need crypto.randomUUID (insecure contexts)", async () => {
  const desc = Object.getOwnPropertyDescriptor(globalThis.crypto, "randomUUID");
  const proto = Object.getPrototypeOf(globalThis.crypto) as object;
  const protoDesc = Object.getOwnPropertyDescriptor(proto, "randomUUID");
  Object.defineProperty(proto, "randomUUID", { value: undefined, configurable: true });
  try {
    const { c } = make();
    last().hello();
    void c.set("a", 1).catch(() => {});
    assert.equal(typeof last().body(last().ofType(T.CALL)[0]).call_id, "string");
  } finally {
    if (protoDesc) Object.defineProperty(proto, "randomUUID", protoDesc);
    if (desc) Object.defineProperty(globalThis.crypto, "randomUUID", desc);
  }
});

test("no WebSocket implementation is a loud error, not a crash on WebSocket.OPEN", () => {
  const g = globalThis as { WebSocket?: unknown };
  const saved = g.WebSocket;
  g.WebSocket = undefined;
  try {
    assert.throws(() => new SodpClient("ws://x"), /no WebSocket implementation/);
  } finally {
    g.WebSocket = saved;
  }
});

test("unsupported URL scheme throws", () => {
  assert.throws(() => new SodpClient("http://x", { WebSocket: FakeSocket }), /unsupported URL/);
});

test("StateRef mirrors the client", async () => {
  const { c } = make();
  last().hello();
  const ref = c.state<{ n: number }>("r");
  assert.equal(ref.get(), undefined);
  const seen: unknown[] = [];
  ref.watch((v) => seen.push(v));
  assert.equal(ref.isWatching(), true);
  assert.equal(ref.get(), null);
  last().push(T.STATE_INIT, 10, { state: "r", version: 1, value: { n: 1 }, initialized: true });
  assert.deepStrictEqual(ref.get(), { n: 1 });
  void ref.setIn("/n", 2).catch(() => {});
  void ref.presence("/who", "me").catch(() => {});
  void ref.delete().catch(() => {});
  assert.deepStrictEqual(
    last()
      .ofType(T.CALL)
      .map((f) => [last().body(f).method, last().body(f).args]),
    [
      ["state.set_in", { state: "r", path: "/n", value: 2 }],
      ["state.presence", { state: "r", path: "/who", value: "me" }],
      ["state.delete", { state: "r" }],
    ],
  );
  ref.unwatch();
  assert.equal(ref.isWatching(), false);
  assert.equal(last().ofType(T.UNWATCH).length, 1);
});

test("a key whose callbacks all left before a reconnect is neither resumed nor lost: watched again later, it updates", async () => {
  const { c } = make();
  last().hello();
  const off = c.watch("k", () => {});
  last().push(T.STATE_INIT, 10, { state: "k", version: 4, value: 4, initialized: true });
  off();
  await tick();
  last().drop();
  await until(() => FakeSocket.instances.length === 2);
  last().hello();
  assert.equal(last().sent.length, 0, "nothing to resume");
  const seen: unknown[] = [];
  c.watch("k", (v) => seen.push(v));
  assert.deepStrictEqual(last().body(last().ofType(T.WATCH)[0]), { state: "k" });
  last().push(T.STATE_INIT, 10, { state: "k", version: 6, value: 6, initialized: true });
  last().push(T.DELTA, 10, { version: 7, state: "k", ops: [{ op: "UPDATE", path: "/", value: 7 }] });
  assert.deepStrictEqual(seen, [6, 7]);
});

test("an undecodable frame is reported (source 'decode') and the session goes on", async () => {
  const { c, errors } = make();
  last().hello();
  await c.ready;
  last().onmessage?.({ data: new Uint8Array([0xc1]).buffer }); // 0xc1 is never used in MessagePack
  last().onmessage?.({ data: new Uint8Array([0x93, 1, 2, 3]).buffer }); // a 3-element array
  assert.equal(errors.length, 2);
  assert.ok(errors.every((e) => e.source === "decode"));
  assert.equal(c.status, "connected");
});

test("wake events (online, focus, visibilitychange) end a reconnect wait at once, and stop after close()", async () => {
  const g = globalThis as { addEventListener?: unknown; removeEventListener?: unknown };
  const target = new EventTarget();
  g.addEventListener = target.addEventListener.bind(target);
  g.removeEventListener = target.removeEventListener.bind(target);
  try {
    const { c } = make({ reconnectDelay: 60_000, maxReconnectDelay: 60_000 });
    last().hello();
    last().drop();
    assert.equal(c.status, "reconnecting");
    assert.equal(FakeSocket.instances.length, 1, "waiting a minute");
    target.dispatchEvent(new Event("online"));
    assert.equal(FakeSocket.instances.length, 2, "reconnected at once");
    last().hello();
    last().drop();
    target.dispatchEvent(new Event("visibilitychange"));
    assert.equal(FakeSocket.instances.length, 3);
    c.close();
    target.dispatchEvent(new Event("focus"));
    assert.equal(FakeSocket.instances.length, 3, "no listener left after close()");
  } finally {
    g.addEventListener = undefined;
    g.removeEventListener = undefined;
  }
});

test("pattern: a transaction's DELTAs share one version and each is applied; a cut between them is repaired by the STATE_INIT", async () => {
  const { c } = make();
  last().hello({ prefix_watch: true, resume: true });
  const seen: Seen = [];
  c.watch("bank.*", (v, m) => seen.push([v, m]));
  last().push(T.STATE_INIT, 10, { state: "bank.*", version: 4, value: { "bank.a": 1 }, initialized: true });
  // one transaction at version 5 touching two keys: two DELTAs, one version
  last().push(T.DELTA, 10, { version: 5, state: "bank.*", ops: [{ op: "UPDATE", path: "/bank.a", value: 2 }] });
  last().push(T.DELTA, 10, { version: 5, state: "bank.*", ops: [{ op: "ADD", path: "/bank.b", value: 3 }] });
  assert.deepStrictEqual(c.getSnapshot("bank.*"), { "bank.a": 2, "bank.b": 3 });
  // the next transaction is cut after its first DELTA
  last().push(T.DELTA, 10, { version: 6, state: "bank.*", ops: [{ op: "UPDATE", path: "/bank.a", value: 7 }] });
  last().drop();
  await until(() => FakeSocket.instances.length === 2);
  last().hello({ prefix_watch: true, resume: true });
  assert.deepStrictEqual(last().body(last().sent[0]), { state: "bank.*", since_version: 6 });
  // nothing after 6 to replay: the live marker at 6 carries the whole map
  last().push(T.STATE_INIT, 10, { state: "bank.*", version: 6, value: { "bank.a": 7, "bank.b": 8 }, initialized: true });
  assert.deepStrictEqual(c.getSnapshot("bank.*"), { "bank.a": 7, "bank.b": 8 }, "the half-delivered version is completed");
  assert.deepStrictEqual(
    seen.map(([, m]) => [m.version, m.source]),
    [
      [4, "init"],
      [5, "delta"],
      [5, "delta"],
      [6, "delta"],
      [6, "init"],
    ],
  );
});

test("onDelta: every applied DELTA with its ops and the values before and after; not the stale or the failed ones", async () => {
  const { c } = make();
  last().hello();
  const seen: Array<{ key: string; version: number; ops: unknown; before: unknown; after: unknown }> = [];
  const off = c.onDelta((d) => seen.push({ ...d }));
  c.watch("game", () => {});
  last().push(T.STATE_INIT, 42, { state: "game", version: 5, value: { score: 1 }, initialized: true });
  const ops = [{ op: "UPDATE", path: "/score", value: 2 }];
  last().push(T.DELTA, 42, { version: 6, state: "game", ops });
  last().push(T.DELTA, 42, { version: 6, state: "game", ops }); // already have it
  assert.deepStrictEqual(seen, [{ key: "game", version: 6, ops, before: { score: 1 }, after: { score: 2 } }]);
  off();
  last().push(T.DELTA, 42, { version: 7, state: "game", ops: [{ op: "UPDATE", path: "/score", value: 3 }] });
  assert.equal(seen.length, 1, "unsubscribed");
  assert.deepStrictEqual(c.getSnapshot("game"), { score: 3 });
});
