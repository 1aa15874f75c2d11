import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { applyOps, type DeltaOp, formatPointer, parsePointer } from "../src/delta.ts";
import { DeltaError } from "../src/errors.ts";

const vectors = new URL("../../../../tests/vectors/", import.meta.url);
type ApplyCase = { name: string; before: unknown; ops: DeltaOp[]; after?: unknown; error?: boolean };
type DiffCase = { name: string; old: unknown; new: unknown; ops: DeltaOp[] };
const applyCases = JSON.parse(readFileSync(new URL("apply.json", vectors), "utf8")) as ApplyCase[];
const diffCases = JSON.parse(readFileSync(new URL("diff.json", vectors), "utf8")) as DiffCase[];

function deepFreeze<T>(v: T): T {
  if (typeof v === "object" && v !== null) {
    for (const k of Object.keys(v)) deepFreeze((v as Record<string, unknown>)[k]);
    Object.freeze(v);
  }
  return v;
}

test("shared vectors exist", () => {
  assert.ok(applyCases.length >= 30, "apply.json cases");
  assert.ok(diffCases.length >= 10, "diff.json cases");
});

for (const c of applyCases) {
  test(`apply vector: ${c.name}`, () => {
    const before = deepFreeze(structuredClone(c.before));
    const snapshot = structuredClone(c.before);
    if (c.error) {
      assert.throws(() => applyOps(before, c.ops), DeltaError);
    } else {
      assert.deepStrictEqual(applyOps(before, c.ops), c.after);
    }
    assert.deepStrictEqual(before, snapshot, "the previous value is never mutated");
  });
}

for (const c of diffCases) {
  test(`diff vector (apply ops to old gives new): ${c.name}`, () => {
    const old = deepFreeze(structuredClone(c.old));
    assert.deepStrictEqual(applyOps(old, c.ops), c.new);
  });
}

test("structural sharing: unchanged subtrees keep their identity", () => {
  const before = deepFreeze({ a: { x: 1 }, b: { y: { z: 2 } }, list: [{ id: 1 }, { id: 2 }] });
  const after = applyOps<typeof before>(before, [{ op: "UPDATE", path: "/b/y/z", value: 3 }]);
  assert.notEqual(after, before);
  assert.equal(after.a, before.a);
  assert.equal(after.list, before.list);
  assert.notEqual(after.b, before.b);
  assert.equal(after.b.y.z, 3);
  const after2 = applyOps<typeof before>(before, [{ op: "UPDATE", path: "/list/1/id", value: 9 }]);
  assert.equal(after2.list[0], before.list[0]);
  assert.equal(after2.b, before.b);
});

test("one batch copies a container once and may then mutate its own copy", () => {
  const before = deepFreeze({ m: { a: 1 } });
  const ops: DeltaOp[] = [];
  for (let i = 0; i < 50; i++) ops.push({ op: "ADD", path: `/m/k${i}`, value: i });
  const after = applyOps<{ m: Record<string, number> }>(before, ops);
  assert.equal(Object.keys(after.m).length, 51);
  assert.deepStrictEqual(before, { m: { a: 1 } });
});

test("op values are not mutated by later ops", () => {
  const v = deepFreeze({ inner: { n: 1 } });
  const after = applyOps<{ o: { inner: { n: number } } }>({}, [
    { op: "ADD", path: "/o", value: v },
    { op: "UPDATE", path: "/o/inner/n", value: 2 },
  ]);
  assert.equal(after.o.inner.n, 2);
  assert.equal(v.inner.n, 1);
});

for (const path of ["/__proto__/polluted", "/constructor/prototype/polluted", "/a/__proto__/polluted", "/__proto__"]) {
  test(`no prototype pollution: ADD ${path}`, () => {
    const after = applyOps<Record<string, unknown>>({ a: {} }, [{ op: "ADD", path, value: { polluted: true } }]);
    assert.equal(({} as Record<string, unknown>).polluted, undefined, "Object.prototype untouched");
    assert.equal(Object.getPrototypeOf(after), Object.prototype);
    assert.equal(Object.hasOwn(Object.prototype, "polluted"), false);
    // the segments are data
    const segs = parsePointer(path);
    let node: unknown = after;
    for (const s of segs) {
      assert.ok(Object.hasOwn(node as object, s), `own member ${s}`);
      node = (node as Record<string, unknown>)[s];
    }
  });
}

test("no prototype pollution: a __proto__ member round-trips as data and can be removed", () => {
  const a = applyOps<Record<string, unknown>>({}, [{ op: "ADD", path: "/__proto__", value: { x: 1 } }]);
  assert.deepStrictEqual(Object.keys(a), ["__proto__"]);
  assert.equal(Object.getPrototypeOf(a), Object.prototype);
  const b = applyOps<Record<string, unknown>>(a, [{ op: "UPDATE", path: "/__proto__/x", value: 2 }]);
  assert.deepStrictEqual(Object.getOwnPropertyDescriptor(b, "__proto__")?.value, { x: 2 });
  assert.deepStrictEqual(Object.getOwnPropertyDescriptor(a, "__proto__")?.value, { x: 1 });
  const c = applyOps<Record<string, unknown>>(b, [{ op: "REMOVE", path: "/__proto__" }]);
  assert.deepStrictEqual(Object.keys(c), []);
});

test("constructor and prototype are read only when own", () => {
  const after = applyOps<Record<string, Record<string, unknown>>>({}, [{ op: "ADD", path: "/constructor/name", value: "x" }]);
  assert.deepStrictEqual(after, { constructor: { name: "x" } });
  assert.equal(Object.name, "Object");
  const removed = applyOps({ a: 1 }, [{ op: "REMOVE", path: "/constructor/prototype" }]);
  assert.deepStrictEqual(removed, { a: 1 });
});

test("RFC 6901 round trip of formatPointer / parsePointer", () => {
  const segs = ["a/b", "c~d", "~1", "", "0"];
  assert.deepStrictEqual(parsePointer(formatPointer(segs)), segs);
  assert.equal(formatPointer([]), "/");
});

test("binary values are scalars", () => {
  const bin = new Uint8Array([1, 2, 3]);
  const after = applyOps<Record<string, unknown>>({ b: bin }, [{ op: "ADD", path: "/b/x", value: 1 }]);
  assert.deepStrictEqual(after, { b: { x: 1 } });
});

test("large objects: the cached key list follows added and removed keys across versions", () => {
  // Above 256 keys the copy reuses the source's key list; an op that adds or
  // removes a key must not leave a stale list behind for the next copy.
  const base: Record<string, unknown> = {};
  for (let i = 0; i < 300; i++) base[`k${i}`] = { n: i };
  const fresh = (v: unknown) => JSON.parse(JSON.stringify(v)) as unknown;
  let v: unknown = base;
  const ops: DeltaOp[][] = [
    [{ op: "UPDATE", path: "/k1/n", value: -1 }], // copy with the cached list
    [{ op: "ADD", path: "/added", value: 1 }], // a new key
    [{ op: "UPDATE", path: "/k2/n", value: -2 }], // the next copy must keep it
    [{ op: "REMOVE", path: "/k3" }], // a removed key
    [{ op: "UPDATE", path: "/k4/n", value: -4 }], // must not come back
    [{ op: "ADD", path: "/new/deep", value: true }], // a new intermediate
    [{ op: "UPDATE", path: "/k5/n", value: -5 }],
    [
      { op: "ADD", path: "/__proto__", value: { polluted: true } },
      { op: "UPDATE", path: "/k6/n", value: -6 },
    ],
    [{ op: "UPDATE", path: "/k7/n", value: -7 }],
  ];
  const versions: unknown[] = [v];
  for (const d of ops) {
    const before = fresh(v);
    v = applyOps(v, d);
    versions.push(v);
    assert.deepEqual(fresh(versions[versions.length - 2]), before, "the previous version is untouched");
  }
  const out = v as Record<string, unknown>;
  const expected = Object.keys(base).filter((k) => k !== "k3");
  expected.push("added", "new", "__proto__");
  assert.deepEqual(Object.keys(out), expected, "every key, in order, none stale");
  assert.deepEqual(out.added, 1);
  assert.deepEqual(out.new, { deep: true });
  assert.equal(Object.hasOwn(out, "k3"), false);
  assert.deepEqual(out.k7, { n: -7 });
  assert.deepEqual(out.k1, { n: -1 });
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.equal(Object.getPrototypeOf(out), Object.prototype);
});
