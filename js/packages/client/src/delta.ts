/**
 * Delta application: `applyOps(value, ops) → new value`.
 *
 * Rules (the wire contract's, docs/PROTOCOL.md "Delta ops and paths"):
 * - Paths are RFC 6901 JSON Pointers (`~1` is `/`, `~0` is `~`); the root is
 *   `"/"` (`""` is accepted too).
 * - Root: ADD/UPDATE replace the value, REMOVE gives `null`.
 * - Objects: ADD/UPDATE set the member, REMOVE deletes it (missing is a no-op).
 * - Arrays: `-` is past-the-end (ADD/UPDATE append, REMOVE drops the last);
 *   `N` replaces element N or appends when N equals the length; REMOVE splices.
 *   Any other index throws.
 * - `null`/a scalar where a container is needed becomes an array when the next
 *   segment is `-` or all digits, else an object. REMOVE never creates.
 * - An unknown op throws {@link DeltaError}: skipping it would let the cache
 *   drift from the server silently.
 *
 * Structural sharing: only the containers on an op's path are copied
 * (shallowly); every other subtree keeps its identity, so `===` selectors and
 * `React.memo` see exactly what changed. The previous value is never mutated,
 * nor are the values inside `ops`. Containers created by this call may be
 * mutated by its later ops (a DELTA of 100 ops on one map copies it once).
 *
 * Prototype safety: `__proto__`, `constructor` and `prototype` are ordinary
 * data keys. Members are read only when own, and written with
 * `Object.defineProperty`, so no path can reach `Object.prototype`.
 */

import { DeltaError } from "./errors.js";

export type DeltaOpKind = "ADD" | "UPDATE" | "REMOVE";

export interface DeltaOp {
  op: DeltaOpKind;
  path: string;
  value?: unknown;
}

type Container = Record<string, unknown> | unknown[];

const hasOwn = Object.prototype.hasOwnProperty;
const DIGITS = /^[0-9]+$/;

/** One key as a pointer segment: `a/b` → `a~1b`, `a~b` → `a~0b`. */
export function escapeSegment(segment: string): string {
  return segment.replace(/~/g, "~0").replace(/\//g, "~1");
}

/** `"/"` or `""` → `[]`; `"/a~1b/0"` → `["a/b", "0"]`. */
export function parsePointer(path: string): string[] {
  if (path === "/" || path === "") return [];
  if (path.charCodeAt(0) !== 47 /* / */) {
    throw new DeltaError(`bad path ${path}`);
  }
  const parts = path.slice(1).split("/");
  if (path.indexOf("~") === -1) return parts;
  if (/~(?![01])/.test(path)) {
    throw new DeltaError(`bad escape in ${path}`);
  }
  // ~1 first, then ~0, so that "~01" decodes to "~1" and not "/".
  return parts.map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
}

/** A JSON Pointer for `segments` (each escaped). `[]` → `"/"`. */
export function formatPointer(segments: ReadonlyArray<string | number>): string {
  if (segments.length === 0) return "/";
  let out = "";
  for (const s of segments) out += `/${escapeSegment(String(s))}`;
  return out;
}

/** An object or array (binary values are scalars). Internal: not re-exported by the package. */
export function isContainer(v: unknown): v is Container {
  return typeof v === "object" && v !== null && !ArrayBuffer.isView(v);
}

function newContainer(nextSegment: string): Container {
  return nextSegment === "-" || DIGITS.test(nextSegment) ? [] : {};
}

function setOwn(obj: Record<string, unknown>, key: string, value: unknown): void {
  if (key === "__proto__") {
    Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
  } else {
    obj[key] = value;
  }
}

// Objects above this many keys are copied with a keys loop; below, with a
// spread. V8 clones a small fast-mode object with a spread in one step (up to
// 20× faster than a loop), but a large (dictionary-mode) one about 2× slower
// than a loop. A large object's key list is kept (`keysOf`; `null` marks a
// small one): `Object.keys` of a dictionary-mode object costs as much as the
// copy itself, and a copy has its source's keys until an op adds or removes
// one (`put`, `drop` forget the list then).
const LARGE = 256;
const keysOf = new WeakMap<object, string[] | null>();

function copy(node: Container): Container {
  if (Array.isArray(node)) return node.slice();
  let keys = keysOf.get(node);
  if (keys === undefined) {
    keys = Object.keys(node);
    if (keys.length <= LARGE) keys = null;
  }
  let out: Record<string, unknown>;
  if (keys) {
    // setOwn copies an own "__proto__" member as data.
    out = {};
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i] as string;
      setOwn(out, k, node[k]);
    }
  } else {
    // Spread uses CreateDataProperty: an own "__proto__" member is copied as
    // data, and the copy is a plain object whatever `node`'s prototype was.
    out = { ...node };
  }
  keysOf.set(out, keys);
  return out;
}

/** Set a member of a container this batch owns, forgetting its key list if the key is new. */
function put(obj: Record<string, unknown>, key: string, value: unknown): void {
  if (!hasOwn.call(obj, key)) keysOf.delete(obj);
  setOwn(obj, key, value);
}

/** A container standing for `node` that this batch may mutate. */
function own(node: unknown, nextSegment: string, owned: Set<Container>): Container {
  if (isContainer(node)) {
    if (owned.has(node)) return node;
    const c = copy(node);
    owned.add(c);
    return c;
  }
  const c = newContainer(nextSegment);
  owned.add(c);
  return c;
}

function arrayIndex(seg: string, length: number, path: string): number {
  if (seg === "-") return length;
  if (DIGITS.test(seg) && (seg === "0" || seg.charCodeAt(0) !== 48)) {
    const idx = Number(seg);
    if (idx <= length) return idx;
    throw new DeltaError(`index ${idx} out of range in ${path}`);
  }
  throw new DeltaError(`bad index ${seg} in ${path}`);
}

/**
 * The value after applying `ops` in order; `value` is left untouched. Throws
 * {@link DeltaError} for an unknown op or an impossible path.
 */
export function applyOps<T = unknown>(value: unknown, ops: ReadonlyArray<DeltaOp>): T {
  const owned = new Set<Container>();
  let v = value;
  for (const op of ops) v = applyOne(v, op, owned);
  return v as T;
}

function applyOne(root: unknown, op: DeltaOp, owned: Set<Container>): unknown {
  if (typeof op !== "object" || op === null) throw new DeltaError("malformed op");
  const kind = op.op;
  if (kind !== "ADD" && kind !== "UPDATE" && kind !== "REMOVE") {
    throw new DeltaError(`unknown op ${String(kind)}`);
  }
  const path = op.path;
  if (typeof path !== "string") throw new DeltaError("path must be a string");
  const parts = parsePointer(path);
  const removing = kind === "REMOVE";
  const value = removing ? undefined : op.value === undefined ? null : op.value;
  if (parts.length === 0) return removing ? null : value;
  if (removing && !isContainer(root)) return root;

  const newRoot = own(root, parts[0] as string, owned);
  let node: Container = newRoot;
  const last = parts.length - 1;
  for (let i = 0; i < last; i++) {
    const seg = parts[i] as string;
    const next = parts[i + 1] as string;
    let mine: Container;
    if (Array.isArray(node)) {
      if (removing && !(DIGITS.test(seg) && Number(seg) < node.length)) return newRoot;
      const idx = arrayIndex(seg, node.length, path);
      if (idx === node.length) {
        mine = own(null, next, owned);
        node.push(mine);
      } else {
        const child = node[idx];
        if (removing && !isContainer(child)) return newRoot;
        mine = own(child, next, owned);
        if (mine !== child) node[idx] = mine;
      }
    } else {
      const child = hasOwn.call(node, seg) ? node[seg] : undefined;
      if (removing && !isContainer(child)) return newRoot;
      mine = own(child, next, owned);
      if (mine !== child) put(node, seg, mine);
    }
    node = mine;
  }

  const seg = parts[last] as string;
  if (!Array.isArray(node)) {
    if (removing) {
      if (hasOwn.call(node, seg)) {
        delete node[seg];
        keysOf.delete(node);
      }
    } else {
      put(node, seg, value);
    }
    return newRoot;
  }
  if (removing) {
    if (seg === "-") node.pop();
    else if (DIGITS.test(seg)) {
      const idx = Number(seg);
      if (idx < node.length) node.splice(idx, 1);
    } else throw new DeltaError(`bad index ${seg} in ${path}`);
    return newRoot;
  }
  const idx = arrayIndex(seg, node.length, path);
  if (idx === node.length) node.push(value);
  else node[idx] = value;
  return newRoot;
}
