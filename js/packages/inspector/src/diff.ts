/**
 * What differs between two values, location by location (for History's
 * "diff two versions"): added, removed and changed JSON Pointers, at most
 * `MAX_CHANGES` of them.
 */

import { escapeSegment } from "@sodp/client";

export interface Change {
  path: string;
  kind: "added" | "removed" | "changed";
  before?: unknown;
  after?: unknown;
}

export const MAX_CHANGES = 500;

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Uint8Array);
}

function same(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  return JSON.stringify(a) === JSON.stringify(b);
}

export function diff(a: unknown, b: unknown, path = "", out: Change[] = []): Change[] {
  if (out.length >= MAX_CHANGES || a === b) return out;
  if (isObject(a) && isObject(b)) {
    for (const k of Object.keys(a)) {
      if (out.length >= MAX_CHANGES) return out;
      if (!(k in b)) out.push({ path: `${path}/${escapeSegment(k)}`, kind: "removed", before: a[k] });
    }
    for (const [k, v] of Object.entries(b)) {
      if (out.length >= MAX_CHANGES) return out;
      const p = `${path}/${escapeSegment(k)}`;
      if (!(k in a)) out.push({ path: p, kind: "added", after: v });
      else diff(a[k], v, p, out);
    }
    return out;
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    const n = Math.max(a.length, b.length);
    for (let i = 0; i < n && out.length < MAX_CHANGES; i++) {
      const p = `${path}/${i}`;
      if (i >= a.length) out.push({ path: p, kind: "added", after: b[i] });
      else if (i >= b.length) out.push({ path: p, kind: "removed", before: a[i] });
      else diff(a[i], b[i], p, out);
    }
    return out;
  }
  if (!same(a, b)) {
    if (a === null || a === undefined) out.push({ path: path || "/", kind: "added", after: b });
    else if (b === null || b === undefined) out.push({ path: path || "/", kind: "removed", before: a });
    else out.push({ path: path || "/", kind: "changed", before: a, after: b });
  }
  return out;
}
