/**
 * The reference client's reducer algorithm, re-implemented from its
 * description in REFERENCE-TS-API.md (not copied): for every op, deep-clone
 * the whole value, split the path on "/" without RFC 6901 unescaping, invent
 * missing parents as objects, then set or delete. Kept only as the
 * benchmark's baseline — it has the bugs listed there.
 */
type Op = { op: string; path: string; value?: unknown };

function deepClone(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(deepClone);
  if (v !== null && typeof v === "object") {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v)) out[k] = deepClone((v as Record<string, unknown>)[k]);
    return out;
  }
  return v;
}

export type Clone = (v: unknown) => unknown;
/** The three usual ways to "deep-clone": which one the reference uses is not documented, so all are measured. */
export const clones: Record<string, Clone> = {
  "recursive clone": deepClone,
  "JSON round trip": (v) => (v === undefined ? undefined : JSON.parse(JSON.stringify(v))),
  structuredClone: (v) => structuredClone(v),
};

export function referenceApplyOps(state: unknown, ops: Op[], clone: Clone = deepClone): unknown {
  let s = state;
  for (const op of ops) {
    if (op.path === "/" || op.path === "") {
      s = op.op === "REMOVE" ? null : op.value;
      continue;
    }
    s = clone(s) ?? {};
    const parts = op.path.slice(1).split("/");
    let node = s as Record<string, unknown>;
    for (let i = 0; i < parts.length - 1; i++) {
      const k = parts[i] as string;
      if (node[k] === null || typeof node[k] !== "object") node[k] = {};
      node = node[k] as Record<string, unknown>;
    }
    const last = parts[parts.length - 1] as string;
    if (op.op === "REMOVE") {
      if (Array.isArray(node)) node.splice(Number(last), 1);
      else delete node[last];
    } else if (op.op === "ADD" || op.op === "UPDATE") {
      if (Array.isArray(node) && last === "-") node.push(op.value);
      else node[last] = op.value;
    } else throw new Error(`unknown op ${op.op}`);
  }
  return s;
}
