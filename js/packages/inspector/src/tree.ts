/**
 * A JSON value as a collapsible tree, with the locations a DELTA changed
 * highlighted. Rendering is capped: at most `MAX_NODES` nodes and
 * `MAX_STRING` characters per string, so a huge value cannot freeze the
 * page (what was left out is counted, not silently dropped).
 */

import { type DeltaOp, escapeSegment, parsePointer } from "@sodp/client";
import { h, jsonSafe } from "./dom.ts";

export const MAX_NODES = 2000;
const MAX_STRING = 300;

/** The JSON Pointers an op list touched, in the value after the ops (`-` resolved to the index it appended). */
export function changedPaths(ops: readonly DeltaOp[], after: unknown): Set<string> {
  const out = new Set<string>();
  for (const op of ops) {
    if (op.op === "REMOVE") continue;
    let segments: string[];
    try {
      segments = op.path === "" || op.path === "/" ? [] : parsePointer(op.path);
    } catch {
      continue;
    }
    let node: unknown = after;
    const resolved: string[] = [];
    for (const seg of segments) {
      const s = seg === "-" && Array.isArray(node) ? String(node.length - 1) : seg;
      resolved.push(s);
      node = node !== null && typeof node === "object" ? (node as Record<string, unknown>)[s] : undefined;
    }
    out.add(resolved.length === 0 ? "" : `/${resolved.map(escapeSegment).join("/")}`);
  }
  return out;
}

function scalar(v: unknown): HTMLElement {
  if (v === null || v === undefined) return h("span", { class: "v-null" }, "null");
  if (typeof v === "string") {
    const s = v.length > MAX_STRING ? `${v.slice(0, MAX_STRING)}… (${v.length} chars)` : v;
    return h("span", { class: "v-str" }, JSON.stringify(s));
  }
  if (typeof v === "number" || typeof v === "bigint") return h("span", { class: "v-num" }, String(v));
  if (typeof v === "boolean") return h("span", { class: "v-bool" }, String(v));
  return h("span", { class: "v-other" }, String(JSON.stringify(v, jsonSafe)));
}

/** Renders `value`; nodes whose pointer is in `changed` get the class `changed`. */
export function renderTree(value: unknown, changed: Set<string> = new Set()): HTMLElement {
  let budget = MAX_NODES;
  let skipped = 0;
  const node = (v: unknown, path: string, label: string | null): HTMLElement => {
    budget--;
    const isChanged = changed.has(path);
    const head = label === null ? null : h("span", { class: "k" }, `${label}: `);
    if (v !== null && typeof v === "object" && !(v instanceof Uint8Array)) {
      const entries: Array<[string, unknown]> = Array.isArray(v)
        ? v.map((x, i) => [String(i), x])
        : Object.entries(v as Record<string, unknown>);
      const open = Array.isArray(v) ? "[" : "{";
      const close = Array.isArray(v) ? "]" : "}";
      const list = h("ul");
      for (const [k, child] of entries) {
        if (budget <= 0) {
          skipped += 1;
          continue;
        }
        list.appendChild(h("li", null, node(child, `${path}/${escapeSegment(k)}`, Array.isArray(v) ? k : JSON.stringify(k))));
      }
      return h(
        "details",
        { open: true, class: isChanged ? "changed" : null, "data-path": path || "/" },
        h("summary", null, head, `${open} ${entries.length} ${Array.isArray(v) ? "items" : "fields"} ${close}`),
        list,
      );
    }
    return h("span", { class: isChanged ? "leaf changed" : "leaf", "data-path": path || "/" }, head, scalar(v));
  };
  const root = h("div", { class: "tree" }, node(value, "", null));
  if (skipped > 0) root.appendChild(h("p", { class: "capped" }, `render capped at ${MAX_NODES} nodes: ${skipped} more not shown`));
  return root;
}
