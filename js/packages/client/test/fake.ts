/**
 * A scripted fake server: a WebSocket constructor whose instances record what
 * the client sends (decoded) and let a test push frames, open and drop.
 */

import type { Frame } from "../src/frames.ts";
import { decodeFrame, encodeFrame, FrameType } from "../src/frames.ts";

export class FakeSocket {
  static instances: FakeSocket[] = [];
  binaryType = "blob";
  readyState = 0;
  sent: Frame[] = [];
  closedWith: number | undefined;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code?: number }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  private seq = 0;

  constructor(readonly url: string) {
    FakeSocket.instances.push(this);
  }

  send(data: Uint8Array): void {
    if (this.readyState !== 1) throw new Error("send on a socket that is not open");
    this.sent.push(decodeFrame(data));
  }

  close(code?: number): void {
    this.closedWith = code ?? 1005;
    if (this.readyState === 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code }));
  }

  // ── the test's side ──
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  push(type: number, streamId: number, body: unknown): void {
    this.seq++;
    const bytes = encodeFrame(type, streamId, this.seq, body);
    const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    this.onmessage?.({ data: ab });
  }

  hello(caps: Record<string, unknown> = { multi_watch: true, resume: true }, auth = false): void {
    this.open();
    this.push(FrameType.HELLO, 0, { protocol: "sodp", version: "1.0", server: "fake", auth, capabilities: caps });
  }

  /** The server side drops the connection. */
  drop(): void {
    this.readyState = 3;
    this.onclose?.({ code: 1006 });
  }

  ofType(type: number): Frame[] {
    return this.sent.filter((f) => f.type === type);
  }

  body(f: Frame | undefined): Record<string, unknown> {
    return (f?.body ?? {}) as Record<string, unknown>;
  }
}

export function last(): FakeSocket {
  const s = FakeSocket.instances[FakeSocket.instances.length - 1];
  if (!s) throw new Error("no socket opened");
  return s;
}

export const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

export async function until(pred: () => boolean, ms = 3000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await tick(5);
  }
}
