/**
 * Call ids. `crypto.randomUUID` exists only in secure contexts (https or
 * localhost), so a page on plain http would fail every write with it;
 * `crypto.getRandomValues` is available everywhere (browsers, Node ≥ 19 as a
 * global). A per-client random prefix plus a counter is unique and cheap.
 */

function randomHex(bytes: number): string {
  const buf = new Uint8Array(bytes);
  const c = (globalThis as { crypto?: { getRandomValues?: (b: Uint8Array) => Uint8Array } }).crypto;
  if (c && typeof c.getRandomValues === "function") c.getRandomValues(buf);
  else for (let i = 0; i < bytes; i++) buf[i] = Math.floor(Math.random() * 256);
  let s = "";
  for (const b of buf) s += b.toString(16).padStart(2, "0");
  return s;
}

export class IdSource {
  private readonly prefix = randomHex(8);
  private n = 0;
  next(): string {
    this.n++;
    return `${this.prefix}-${this.n.toString(36)}`;
  }
}
