/**
 * @sodp/client — the SODP client for browsers and Node.
 *
 * Layout: `frames` (bytes ↔ frames), `delta` (applying DELTA ops with
 * structural sharing), `client` (the session, subscriptions and calls),
 * `errors`, `backoff`, `ids` (call ids), `jwt` (token expiry for refresh).
 */

export type {
  CallResult,
  ConnectionStatus,
  DeltaEvent,
  SodpClientOptions,
  TokenProvider,
  TransactionOp,
  WatchCallback,
  WatchMeta,
  WebSocketConstructor,
  WebSocketLike,
  WriteOptions,
} from "./client.js";
export { SodpClient, StateRef } from "./client.js";
export type { DeltaOp, DeltaOpKind } from "./delta.js";
export { applyOps, escapeSegment, formatPointer, parsePointer } from "./delta.js";
export type { SodpErrorSource } from "./errors.js";
export {
  AuthError,
  CallError,
  CallTimeout,
  ConnectionLost,
  DeltaError,
  ServerError,
  SodpError,
  UnsupportedError,
} from "./errors.js";
export type { Frame } from "./frames.js";
export { decodeFrame, encodeFrame, FrameType } from "./frames.js";
