import "./dom.ts";
import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";
import { act, memo, StrictMode, useRef } from "react";
import { createRoot, type Root } from "react-dom/client";
import { SodpClient } from "../../client/src/client.ts";
import { FrameType as T } from "../../client/src/frames.ts";
import { FakeSocket, last } from "../../client/test/fake.ts";
import {
  SODPProvider,
  useSodpClient,
  useSodpConnected,
  useSodpPresence,
  useSodpRef,
  useSodpSelector,
  useSodpState,
  useSodpStates,
  useSodpStatus,
} from "../src/index.ts";

let root: Root | undefined;
let container: HTMLElement;
beforeEach(() => {
  FakeSocket.instances = [];
  container = document.createElement("div");
  document.body.appendChild(container);
});
afterEach(async () => {
  await act(async () => root?.unmount());
  root = undefined;
  container.remove();
  await new Promise((r) => setTimeout(r, 5));
});

async function render(el: React.ReactNode) {
  await act(async () => {
    root = createRoot(container);
    root.render(el);
  });
}
const flush = () => act(async () => {});

test("StrictMode: the provider opens exactly one socket and closes it on unmount", async () => {
  function Probe() {
    const status = useSodpStatus();
    return <p id="s">{status}</p>;
  }
  await render(
    <StrictMode>
      <SODPProvider url="ws://fake" WebSocket={FakeSocket}>
        <Probe />
      </SODPProvider>
    </StrictMode>,
  );
  assert.equal(FakeSocket.instances.length, 1, "one socket under StrictMode");
  assert.equal(container.textContent, "connecting");
  await act(async () => last().hello());
  assert.equal(container.textContent, "connected");
  await act(async () => root?.unmount());
  root = undefined;
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(last().closedWith, 1000, "closed on unmount");
  assert.equal(FakeSocket.instances.length, 1);
});

test("useSodpState: cached value on the first render; re-renders on deltas; StateRef writes", async () => {
  const client = new SodpClient("ws://fake", { WebSocket: FakeSocket });
  try {
    last().hello();
    client.watch("k", () => {});
    last().push(T.STATE_INIT, 10, { state: "k", version: 3, value: { n: 1 }, initialized: true });
    const firstRenders: unknown[] = [];
    let ref: unknown;
    function View() {
      const [v, meta, r] = useSodpState<{ n: number }>("k");
      const first = useRef(true);
      if (first.current) {
        firstRenders.push(v);
        first.current = false;
      }
      ref = r;
      return <p>{`${v?.n}:${meta?.version}`}</p>;
    }
    await render(
      <StrictMode>
        <SODPProvider client={client}>
          <View />
        </SODPProvider>
      </StrictMode>,
    );
    assert.deepStrictEqual(firstRenders[0], { n: 1 }, "no null first render for a cached key");
    assert.equal(container.textContent, "1:3");
    await act(async () => last().push(T.DELTA, 10, { version: 4, state: "k", ops: [{ op: "UPDATE", path: "/n", value: 2 }] }));
    assert.equal(container.textContent, "2:4");
    void (ref as { set(v: unknown): Promise<unknown> }).set({ n: 5 }).catch(() => {});
    assert.equal(last().body(last().ofType(T.CALL)[0]).method, "state.set");
  } finally {
    client.close();
  }
});

test("selector: a component re-renders only when its slice changes; memo children keep identity", async () => {
  const client = new SodpClient("ws://fake", { WebSocket: FakeSocket });
  try {
    last().hello();
    let redRenders = 0;
    let listRenders = 0;
    function Red() {
      const red = useSodpSelector<Record<string, unknown>, unknown>("score", (s) => s?.red ?? 0);
      redRenders++;
      return <b>{String(red)}</b>;
    }
    const List = memo(function List({ items }: { items: unknown }) {
      listRenders++;
      return <i>{JSON.stringify(items)}</i>;
    });
    function Lists() {
      const [v] = useSodpState<{ items: unknown; other: number }>("score");
      return <List items={v?.items} />;
    }
    await render(
      <SODPProvider client={client}>
        <Red />
        <Lists />
      </SODPProvider>,
    );
    await act(async () =>
      last().push(T.STATE_INIT, 10, { state: "score", version: 1, value: { red: 1, blue: 1, items: [1] }, initialized: true }),
    );
    const r0 = redRenders;
    const l0 = listRenders;
    await act(async () => last().push(T.DELTA, 10, { version: 2, state: "score", ops: [{ op: "UPDATE", path: "/blue", value: 2 }] }));
    assert.equal(redRenders, r0, "red slice unchanged: no re-render");
    assert.equal(listRenders, l0, "items subtree kept its identity: memo child skipped");
    await act(async () => last().push(T.DELTA, 10, { version: 3, state: "score", ops: [{ op: "UPDATE", path: "/red", value: 7 }] }));
    assert.equal(redRenders, r0 + 1);
    assert.ok(container.textContent?.startsWith("7"));
  } finally {
    client.close();
  }
});

test("connect/disconnect re-renders only status consumers", async () => {
  const client = new SodpClient("ws://fake", { WebSocket: FakeSocket, reconnectDelay: 5 });
  try {
    let plain = 0;
    let status = 0;
    function Plain() {
      useSodpClient();
      useSodpRef("x");
      plain++;
      return null;
    }
    function Status() {
      const c = useSodpConnected();
      status++;
      return <p>{String(c)}</p>;
    }
    await render(
      <SODPProvider client={client}>
        <Plain />
        <Status />
      </SODPProvider>,
    );
    const p0 = plain;
    await act(async () => last().hello());
    assert.equal(container.textContent, "true");
    await act(async () => last().drop());
    assert.equal(container.textContent, "false");
    assert.equal(plain, p0, "a component that does not read the status is not re-rendered");
    assert.ok(status >= 3);
  } finally {
    client.close();
  }
});

test("useSodpStates: a new Map on each change, never the same Map mutated", async () => {
  const client = new SodpClient("ws://fake", { WebSocket: FakeSocket });
  try {
    last().hello();
    const maps: Map<string, unknown>[] = [];
    function Many() {
      const m = useSodpStates(["a", "b"]);
      if (maps[maps.length - 1] !== m) maps.push(m);
      return <p>{[...m].map(([k, [v]]) => `${k}=${String(v)}`).join(",")}</p>;
    }
    await render(
      <SODPProvider client={client}>
        <Many />
      </SODPProvider>,
    );
    assert.deepStrictEqual(last().body(last().ofType(T.WATCH)[0]), { states: ["a", "b"] });
    await act(async () => {
      last().push(T.STATE_INIT, 10, { state: "a", version: 1, value: 1, initialized: true });
      last().push(T.STATE_INIT, 11, { state: "b", version: 2, value: 2, initialized: true });
    });
    assert.equal(container.textContent, "a=1,b=2");
    const before = maps[maps.length - 1];
    await act(async () => last().push(T.DELTA, 11, { version: 3, state: "b", ops: [{ op: "UPDATE", path: "/", value: 3 }] }));
    const after = maps[maps.length - 1];
    assert.notEqual(after, before);
    assert.equal(before?.get("b")?.toString(), "2,[object Object]", "the old Map still says b=2");
    assert.equal(container.textContent, "a=1,b=3");
  } finally {
    client.close();
  }
});

test("useSodpPresence publishes on connect and again after a reconnect; unmount UNWATCHes", async () => {
  const client = new SodpClient("ws://fake", { WebSocket: FakeSocket, reconnectDelay: 5, maxReconnectDelay: 10 });
  try {
    function Me() {
      const all = useSodpPresence<Record<string, unknown>>("room", "/me", { x: 1 });
      return <p>{JSON.stringify(all)}</p>;
    }
    await render(
      <StrictMode>
        <SODPProvider client={client}>
          <Me />
        </SODPProvider>
      </StrictMode>,
    );
    await act(async () => last().hello());
    const presences = (s: FakeSocket) => s.ofType(T.CALL).map((f) => s.body(f).args);
    assert.deepStrictEqual(presences(last()).at(-1), { state: "room", path: "/me", value: { x: 1 } });
    await act(async () => last().drop());
    await act(async () => new Promise((r) => setTimeout(r, 40)));
    await act(async () => last().hello());
    assert.equal(FakeSocket.instances.length, 2);
    assert.deepStrictEqual(presences(last()), [{ state: "room", path: "/me", value: { x: 1 } }], "re-published on the new session");
    await act(async () => root?.unmount());
    root = undefined;
    await flush();
    assert.deepStrictEqual(presences(last()).at(-1), { state: "room", path: "/me", value: null });
    assert.equal(last().ofType(T.UNWATCH).length, 1);
  } finally {
    client.close();
  }
});
