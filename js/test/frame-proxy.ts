/**
 * A TCP proxy in front of the server that reads the SODP frames going
 * through it (RFC 6455 framing; client frames are masked). It records every
 * CALL a client sends; armed with `dropResultOf`, it forwards the next
 * matching CALL, then nothing more to the client, and cuts the connection
 * once the server's RESULT for that call arrives (the write is applied, its
 * RESULT lost); `rewriteHello` changes the HELLO the client gets (to play a
 * server without some extension).
 */
import { createServer, type Server, type Socket } from "node:net";
import { decodeFrame, encodeFrame, FrameType } from "../packages/client/src/frames.ts";
import { connectPair } from "./proxy.ts";

type Body = Record<string, unknown>;

export interface FrameProxy {
  url: string;
  /** Every CALL body clients sent through the proxy, in order. */
  calls: Body[];
  /** The RESULT bodies withheld from the client (see `dropResultOf`). */
  dropped: Body[];
  accepted(): number;
  dropResultOf(match: (call: Body) => boolean): void;
  rewriteHello(edit: ((hello: Body) => Body) | undefined): void;
  /** Destroy every connection; `refuse` keeps refusing new ones until `accept()`. */
  cut(refuse?: boolean): void;
  accept(): void;
  close(): Promise<void>;
}

interface Piece {
  raw: Uint8Array;
  opcode: number;
  payload: Uint8Array;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** A socket chunk as a plain Uint8Array (Node's Buffer typings and TS 5.9's disagree). */
function bytes(data: Buffer): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** Splits one direction of a WebSocket connection into its HTTP head and frames. */
class WsSplitter {
  private buf: Uint8Array = new Uint8Array(0);
  private headDone = false;

  feed(data: Uint8Array): Piece[] {
    this.buf = concat(this.buf, data);
    const out: Piece[] = [];
    if (!this.headDone) {
      const end = Buffer.from(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength).indexOf("\r\n\r\n");
      if (end < 0) return out;
      out.push({ raw: this.buf.subarray(0, end + 4), opcode: -1, payload: new Uint8Array(0) });
      this.buf = this.buf.subarray(end + 4);
      this.headDone = true;
    }
    for (let p = this.next(); p; p = this.next()) out.push(p);
    return out;
  }

  private next(): Piece | undefined {
    const b = this.buf;
    if (b.length < 2) return undefined;
    const opcode = (b[0] as number) & 0x0f;
    const masked = ((b[1] as number) & 0x80) !== 0;
    let size = (b[1] as number) & 0x7f;
    let pos = 2;
    const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
    if (size === 126) {
      if (b.length < 4) return undefined;
      size = view.getUint16(2);
      pos = 4;
    } else if (size === 127) {
      if (b.length < 10) return undefined;
      size = Number(view.getBigUint64(2));
      pos = 10;
    }
    const mask = masked ? b.subarray(pos, pos + 4) : undefined;
    if (masked) pos += 4;
    if (b.length < pos + size) return undefined;
    const raw = b.subarray(0, pos + size);
    const payload = b.slice(pos, pos + size);
    if (mask) for (let i = 0; i < payload.length; i++) payload[i] = (payload[i] as number) ^ (mask[i % 4] as number);
    this.buf = b.subarray(pos + size);
    return { raw, opcode, payload };
  }
}

/** An unmasked (server → client) binary WebSocket message. */
function serverMessage(payload: Uint8Array): Uint8Array {
  const n = payload.length;
  if (n > 0xffff) throw new Error("HELLO too large for this proxy");
  return concat(new Uint8Array(n < 126 ? [0x82, n] : [0x82, 126, n >> 8, n & 0xff]), payload);
}

function sodpFrame(p: Piece): { type: number; body: Body } | undefined {
  if (p.opcode !== 2) return undefined;
  const f = decodeFrame(p.payload);
  return { type: f.type, body: (f.body ?? {}) as Body };
}

export async function startFrameProxy(targetPort: number): Promise<FrameProxy> {
  const pairs = new Set<[Socket, Socket]>();
  const calls: Body[] = [];
  const dropped: Body[] = [];
  let refusing = false;
  let accepted = 0;
  let armed: ((call: Body) => boolean) | undefined;
  let helloEdit: ((hello: Body) => Body) | undefined;

  const server: Server = createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    accepted++;
    const upstream = connectPair(client, targetPort, pairs);
    let withheld: unknown; // the call id whose RESULT is being waited for
    const up = new WsSplitter();
    client.on("data", (data: Buffer) => {
      for (const p of up.feed(bytes(data))) {
        const f = sodpFrame(p);
        if (f?.type === FrameType.CALL) {
          calls.push(f.body);
          if (armed?.(f.body)) {
            armed = undefined;
            withheld = f.body.call_id;
          }
        }
        upstream.write(p.raw);
      }
    });
    const down = new WsSplitter();
    upstream.on("data", (data: Buffer) => {
      for (const p of down.feed(bytes(data))) {
        const f = sodpFrame(p);
        if (withheld !== undefined) {
          if (f?.type === FrameType.RESULT && f.body.call_id === withheld) {
            dropped.push(f.body);
            // Both sides close; connectPair forgets the pair on "close".
            client.destroy();
            upstream.destroy();
            return;
          }
          continue;
        }
        if (f?.type === FrameType.HELLO && helloEdit) {
          client.write(serverMessage(encodeFrame(FrameType.HELLO, 0, 0, helloEdit(f.body))));
          continue;
        }
        client.write(p.raw);
      }
    });
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : 0;
  const cutAll = () => {
    for (const [a, b] of pairs) {
      a.destroy();
      b.destroy();
    }
    pairs.clear();
  };
  return {
    url: `ws://127.0.0.1:${port}`,
    calls,
    dropped,
    accepted: () => accepted,
    dropResultOf(match) {
      armed = match;
    },
    rewriteHello(edit) {
      helloEdit = edit;
    },
    cut(refuse = false) {
      refusing = refuse;
      cutAll();
    },
    accept() {
      refusing = false;
    },
    close: () =>
      new Promise<void>((ok) => {
        cutAll();
        server.close(() => ok());
      }),
  };
}
