/**
 * Frames: bytes ↔ `[type, stream_id, seq, body]`, nothing else.
 */

import { Decoder, Encoder } from "@msgpack/msgpack";
import { SodpError } from "./errors.js";

export const FrameType = {
  HELLO: 0x01,
  WATCH: 0x02,
  STATE_INIT: 0x03,
  DELTA: 0x04,
  CALL: 0x05,
  RESULT: 0x06,
  ERROR: 0x07,
  HEARTBEAT: 0x09,
  RESUME: 0x0a,
  AUTH: 0x0b,
  AUTH_OK: 0x0c,
  UNWATCH: 0x0d,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

export interface Frame {
  type: number;
  streamId: number;
  seq: number;
  body: unknown;
}

// One encoder/decoder per module: both keep reusable buffers, and JS is
// single-threaded, so sharing them is safe. `ignoreUndefined` drops optional
// fields left undefined instead of sending nil.
const encoder = new Encoder({ ignoreUndefined: true });
const decoder = new Decoder();

export function encodeFrame(type: number, streamId: number, seq: number, body: unknown): Uint8Array {
  return encoder.encode([type, streamId, seq, body === undefined ? null : body]);
}

export function decodeFrame(data: ArrayBuffer | ArrayBufferView): Frame {
  let raw: unknown;
  try {
    raw = decoder.decode(data);
  } catch (err) {
    throw new SodpError(`undecodable frame: ${(err as Error).message}`, "decode");
  }
  if (!Array.isArray(raw) || raw.length !== 4) {
    throw new SodpError("bad frame", "decode");
  }
  const [type, streamId, seq, body] = raw as [unknown, unknown, unknown, unknown];
  if (typeof type !== "number" || typeof streamId !== "number") {
    throw new SodpError("bad frame", "decode");
  }
  return { type, streamId, seq: typeof seq === "number" ? seq : 0, body };
}
