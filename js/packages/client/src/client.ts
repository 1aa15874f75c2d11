/**
 * `SodpClient`: one WebSocket session at a time, reconnecting with backoff.
 *
 * What survives a reconnect lives on the client, not the socket: the watched
 * keys (value, version, callbacks), calls not yet sent, and (when the server
 * advertises `idempotency`) writes whose RESULT was lost. On every new session
 * each known key is RESUMEd from its version — the server replays what was
 * missed as DELTAs carrying `state`, then a STATE_INIT marks it live — and the
 * others are WATCHed; then queued calls go out in order.
 *
 * Status (`status`, `onStatusChange`):
 * ```text
 * connecting ──HELLO(+AUTH_OK)──▶ connected ──socket lost──▶ reconnecting ──▶ connected …
 *     │                              │  reconnect: false, or 401 at handshake ──▶ disconnected
 *     └─────────── close() from any state ─────────────────────────────────────▶ closed
 * ```
 */

import { Backoff } from "./backoff.js";
import { type DeltaOp, applyOps } from "./delta.js";
import {
  AuthError,
  CallError,
  CallTimeout,
  ConnectionLost,
  DeltaError,
  ServerError,
  SodpError,
  UnsupportedError,
} from "./errors.js";
import { FrameType, decodeFrame, encodeFrame } from "./frames.js";
import { IdSource } from "./ids.js";
import { jwtExpiryMs, refreshDelayMs } from "./jwt.js";

export type ConnectionStatus = "connecting" | "connected" | "reconnecting" | "disconnected" | "closed";

export interface WatchMeta {
  /** The key's version (one counter shared by all keys of a server). */
  version: number;
  /** False when the key has never been written, or was deleted. */
  initialized: boolean;
  /** `cache`: delivered by `watch()` from memory; `init`: a STATE_INIT baseline; `delta`: a change (RESUME replays included). */
  source: "cache" | "init" | "delta";
  /** The key (or prefix pattern) this is about — useful with `watchMany`. */
  key: string;
}

export type WatchCallback<T = unknown> = (value: T | null, meta: WatchMeta) => void;

export interface CallResult {
  version?: number;
  [field: string]: unknown;
}

/** The part of the WebSocket interface the client uses (browsers' and `ws`'s both fit). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export type TokenProvider = () => string | Promise<string>;

export interface SodpClientOptions {
  token?: string;
  /** Called on every connect (and before expiry when the server supports in-band refresh); wins over `token`. */
  tokenProvider?: TokenProvider;
  /** A WebSocket constructor; defaults to `globalThis.WebSocket` (on Node 20 pass `WebSocket` from the `ws` package). */
  WebSocket?: unknown;
  reconnect?: boolean;
  /** First reconnect delay, ms (default 1000), doubling per attempt, plus up to 500 ms of jitter. */
  reconnectDelay?: number;
  maxReconnectDelay?: number;
  onConnect?: () => void;
  onDisconnect?: () => void;
  /** Errors not tied to a call (ERROR frames, undecodable frames, failed deltas). Without it the client warns on the console. */
  onError?: (err: SodpError) => void;
  onStatusChange?: (status: ConnectionStatus, previous: ConnectionStatus) => void;
  /** Per-call timeout, ms (default 30000). */
  callTimeout?: number;
  /** Time from opening the socket to a live session before the attempt is abandoned, ms (default 10000). */
  connectTimeout?: number;
  /**
   * Silence (no frame at all) after which the client probes the server with a
   * HEARTBEAT, ms; default two server heartbeat intervals plus 5 s. A probe
   * unanswered for `probeTimeout` (default 10000 ms) drops the connection.
   */
  livenessTimeout?: number;
  probeTimeout?: number;
}

/** Extension arguments of a write; each needs its capability in HELLO (else the call rejects with `UnsupportedError`). */
export interface WriteOptions {
  /** `conditional`: apply only if the key's version equals this (0 = only if it has no value). */
  ifVersion?: number;
  /** `ttl`: the key expires this long after the write (0 removes the deadline). */
  ttlMs?: number;
  /** `idempotency`: an explicit key (otherwise one is generated when the server supports it). */
  idempotencyKey?: string;
}

export interface TransactionOp {
  method: "state.set" | "state.patch" | "state.set_in" | "state.delete";
  args: Record<string, unknown>;
}

interface Registration {
  cb: WatchCallback<never>;
}

interface Entry {
  key: string;
  params: Record<string, unknown> | undefined;
  regs: Set<Registration>;
  value: unknown;
  version: number;
  initialized: boolean;
  /** A baseline (STATE_INIT) has been received; DELTAs before it are buffered in `pending`. */
  known: boolean;
  pending: DeltaBody[];
  meta: WatchMeta | null;
}

interface DeltaBody {
  version?: unknown;
  ops?: unknown;
  state?: unknown;
}

interface PendingCall {
  id: string;
  method: string;
  body: Record<string, unknown>;
  requires: string[];
  mutating: boolean;
  sent: boolean;
  resolve: (data: unknown) => void;
  reject: (err: SodpError) => void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

type Phase = "closed" | "hello" | "auth" | "ready";

const OPEN = 1; // WebSocket.OPEN, without touching a global that may not exist
const MUTATING = new Set(["state.set", "state.patch", "state.set_in", "state.delete", "state.presence", "state.transaction"]);
const SCHEMES: Record<string, string> = { "ws://": "ws://", "wss://": "wss://", "sodp://": "ws://", "sodps://": "wss://" };
const MAX_TIMER = 2_147_483_647;

function normalizeUrl(url: string): string {
  for (const prefix in SCHEMES) {
    if (url.startsWith(prefix)) return (SCHEMES[prefix] as string) + url.slice(prefix.length);
  }
  throw new SodpError(`[SODP] unsupported URL ${JSON.stringify(url)}: use ws://, wss://, sodp:// or sodps://`, "transport");
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v);
}

function asNumber(v: unknown): number | undefined {
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(v);
  return undefined;
}

export class SodpClient {
  readonly url: string;
  /** Resolves on the first live session; rejects on a 401 at the handshake, or when closed before. */
  readonly ready: Promise<void>;
  /** HELLO `capabilities` of the current (or last) session. */
  capabilities: Record<string, unknown> = {};
  /** AUTH_OK `sub` of the current session. */
  sub: string | undefined;

  private readonly opts: SodpClientOptions;
  private readonly Ctor: WebSocketConstructor;
  private readonly backoff: Backoff;
  private readonly ids = new IdSource();
  private readonly entries = new Map<string, Entry>();
  private readonly calls = new Map<string, PendingCall>();
  private queue: string[] = [];
  private readonly statusListeners = new Set<(s: ConnectionStatus, p: ConnectionStatus) => void>();
  private _status: ConnectionStatus = "connecting";
  private resolveReady!: () => void;
  private rejectReady!: (err: SodpError) => void;
  private readySettled = false;
  private hadSession = false;
  private fatal: SodpError | undefined;

  // per connection
  private ws: WebSocketLike | undefined;
  private phase: Phase = "closed";
  private seq = 0;
  private nextStream = 10; // streams 1–9 are reserved
  private readonly streamKeys = new Map<number, string>(); // from STATE_INIT
  private readonly sentStreams = new Map<number, string>(); // our WATCH/RESUME ids, to name the key of an ERROR
  private token: string | undefined;
  private lastRx = 0;
  private probeAt = 0;
  private connectTimer: ReturnType<typeof setTimeout> | undefined;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private livenessTimer: ReturnType<typeof setInterval> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private detachWake: (() => void) | undefined;

  constructor(url: string, options: SodpClientOptions = {}) {
    this.url = normalizeUrl(url);
    this.opts = options;
    const Ctor = (options.WebSocket ?? (globalThis as { WebSocket?: unknown }).WebSocket) as WebSocketConstructor | undefined;
    if (typeof Ctor !== "function") {
      throw new SodpError("[SODP] no WebSocket implementation: pass { WebSocket } (e.g. from the 'ws' package on Node 20)", "transport");
    }
    this.Ctor = Ctor;
    this.backoff = new Backoff(options.reconnectDelay ?? 1000, options.maxReconnectDelay ?? 30_000);
    this.ready = new Promise<void>((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => {}); // a rejection nobody awaits is not an unhandled one
    if (options.onStatusChange) this.statusListeners.add(options.onStatusChange);
    this.connect();
  }

  // ── status ────────────────────────────────────────────────────────────────

  get status(): ConnectionStatus {
    return this._status;
  }

  /** True while a session is live (connected and authenticated). */
  get connected(): boolean {
    return this.phase === "ready";
  }

  /** Listen to status changes; returns the unsubscribe function. */
  onStatusChange(listener: (status: ConnectionStatus, previous: ConnectionStatus) => void): () => void {
    this.statusListeners.add(listener);
    return () => {
      this.statusListeners.delete(listener);
    };
  }

  /** Whether the current session's HELLO advertises `capabilities[name]`. */
  supports(name: string): boolean {
    return this.capabilities[name] === true;
  }

  private setStatus(s: ConnectionStatus): void {
    const prev = this._status;
    if (prev === s) return;
    this._status = s;
    for (const l of [...this.statusListeners]) {
      try {
        l(s, prev);
      } catch (err) {
        console.error("[SODP] status listener threw", err);
      }
    }
  }

  private report(err: SodpError): void {
    if (this.opts.onError) {
      try {
        this.opts.onError(err);
      } catch (e) {
        console.error("[SODP] onError threw", e);
      }
    } else {
      console.warn(err.message);
    }
  }

  // ── connection ────────────────────────────────────────────────────────────

  private connect(): void {
    this.reconnectTimer = undefined;
    if (this._status === "closed" || this.fatal) return;
    this.setStatus(this.hadSession ? "reconnecting" : "connecting");
    let ws: WebSocketLike;
    try {
      ws = new this.Ctor(this.url);
    } catch (err) {
      this.report(new SodpError(`[SODP] cannot open ${this.url}: ${(err as Error).message}`, "transport"));
      this.scheduleReconnect();
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.phase = "hello";
    this.seq = 0;
    this.nextStream = 10;
    this.streamKeys.clear();
    this.sentStreams.clear();
    this.lastRx = Date.now();
    this.connectTimer = setTimeout(() => {
      if (this.ws === ws && this.phase !== "ready") {
        this.report(new SodpError("[SODP] connect timed out", "transport"));
        this.drop(ws);
      }
    }, this.opts.connectTimeout ?? 10_000);
    ws.onmessage = (ev) => {
      if (this.ws === ws) this.onMessage(ev.data);
    };
    ws.onclose = () => {
      if (this.ws === ws) this.onSocketGone();
    };
    ws.onerror = () => {
      // A close event follows; browsers say nothing about the cause.
    };
  }

  /** Abandon a socket now (dead, timed out, refused): do not wait for its close handshake. */
  private drop(ws: WebSocketLike, code = 4000): void {
    try {
      ws.close(code);
    } catch {
      // already closing
    }
    if (this.ws === ws) this.onSocketGone();
  }

  private onSocketGone(): void {
    const wasLive = this.phase === "ready";
    const ws = this.ws;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onopen = null;
      // Keep a listener: `ws` (Node) emits 'error' when closed while connecting,
      // and an EventEmitter 'error' without one is an uncaught exception.
      ws.onerror = () => {};
    }
    this.ws = undefined;
    this.phase = "closed";
    this.clearConnectionTimers();
    for (const e of this.entries.values()) e.pending = [];
    // Calls in flight: with an idempotency key they are resent on the next
    // session (the server applies them once); without, their fate is unknown.
    const requeue: string[] = [];
    for (const call of this.calls.values()) {
      if (!call.sent) continue;
      call.sent = false;
      if (typeof call.body.idempotency_key === "string") requeue.push(call.id);
      else this.failCall(call, new ConnectionLost("connection lost with the call in flight"));
    }
    this.queue = [...requeue, ...this.queue];
    if (wasLive) {
      try {
        this.opts.onDisconnect?.();
      } catch (err) {
        console.error("[SODP] onDisconnect threw", err);
      }
    }
    if (this._status === "closed") return;
    if (this.fatal) {
      this.giveUp(this.fatal);
      return;
    }
    if (this.opts.reconnect === false) {
      this.giveUp(new ConnectionLost("disconnected (reconnect is off)"));
      return;
    }
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    this.setStatus(this.hadSession ? "reconnecting" : "connecting");
    const delay = this.backoff.next();
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  /** No more attempts: fail what waits, settle `ready`, status `disconnected`. */
  private giveUp(err: SodpError): void {
    for (const call of [...this.calls.values()]) this.failCall(call, err);
    this.queue = [];
    if (!this.readySettled) {
      this.readySettled = true;
      this.rejectReady(err);
    }
    this.setStatus("disconnected");
  }

  private clearConnectionTimers(): void {
    clearTimeout(this.connectTimer);
    clearInterval(this.livenessTimer);
    clearTimeout(this.refreshTimer);
    this.connectTimer = this.livenessTimer = this.refreshTimer = undefined;
    this.detachWake?.();
    this.detachWake = undefined;
  }

  /** Close the connection and stop reconnecting. Pending calls reject with `ConnectionLost`. */
  close(): void {
    if (this._status === "closed") return;
    this.setStatus("closed");
    clearTimeout(this.reconnectTimer);
    const err = new ConnectionLost("client closed");
    for (const call of [...this.calls.values()]) this.failCall(call, err);
    this.queue = [];
    if (!this.readySettled) {
      this.readySettled = true;
      this.rejectReady(err);
    }
    const ws = this.ws;
    if (ws) {
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
      this.onSocketGone();
    }
  }

  private send(type: number, streamId: number, body: unknown): void {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN) return;
    this.seq++;
    ws.send(encodeFrame(type, streamId, this.seq, body));
  }

  // ── receiving ─────────────────────────────────────────────────────────────

  private onMessage(data: unknown): void {
    this.lastRx = Date.now();
    if (typeof data === "string") {
      this.report(new SodpError("[SODP] text message from server ignored", "protocol"));
      return;
    }
    let frame: ReturnType<typeof decodeFrame>;
    try {
      frame = decodeFrame(data as ArrayBuffer);
    } catch (err) {
      this.report(err as SodpError);
      return;
    }
    const body = isRecord(frame.body) ? frame.body : {};
    switch (frame.type) {
      case FrameType.DELTA:
        this.onDelta(frame.streamId, body);
        return;
      case FrameType.HEARTBEAT:
        if (this.probeAt === 0) this.send(FrameType.HEARTBEAT, 0, null);
        this.probeAt = 0; // an answer to our probe needs no echo (it would start a ping-pong)
        return;
      case FrameType.STATE_INIT:
        this.onStateInit(frame.streamId, body);
        return;
      case FrameType.RESULT:
        this.onResult(body);
        return;
      case FrameType.ERROR:
        this.onError(frame.streamId, body);
        return;
      case FrameType.HELLO:
        this.onHello(body);
        return;
      case FrameType.AUTH_OK:
        this.onAuthOk(body);
        return;
      default:
        this.report(new SodpError(`[SODP] unexpected frame type ${frame.type}`, "protocol"));
    }
  }

  private onHello(body: Record<string, unknown>): void {
    if (this.phase !== "hello") {
      this.report(new SodpError("[SODP] unexpected HELLO", "protocol"));
      return;
    }
    this.capabilities = isRecord(body.capabilities) ? { ...body.capabilities } : {};
    if (body.auth !== true) {
      this.becomeReady(undefined);
      return;
    }
    this.phase = "auth";
    const ws = this.ws;
    this.fetchToken().then(
      (token) => {
        if (this.ws !== ws || this.phase !== "auth") return;
        if (!token) {
          this.fatal = new AuthError("[SODP] the server requires a token and none was given");
          if (ws) this.drop(ws);
          return;
        }
        this.token = token;
        this.send(FrameType.AUTH, 0, { token });
      },
      (err: unknown) => {
        this.report(new SodpError(`[SODP] tokenProvider failed: ${(err as Error)?.message ?? String(err)}`, "transport"));
        if (this.ws === ws && ws) this.drop(ws);
      },
    );
  }

  private async fetchToken(): Promise<string | undefined> {
    if (this.opts.tokenProvider) return await this.opts.tokenProvider();
    return this.opts.token;
  }

  private onAuthOk(body: Record<string, unknown>): void {
    const sub = typeof body.sub === "string" ? body.sub : undefined;
    if (this.phase === "auth") this.becomeReady(sub);
    else if (this.phase === "ready") {
      this.sub = sub;
      this.scheduleRefresh();
    }
  }

  private becomeReady(sub: string | undefined): void {
    clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    this.phase = "ready";
    this.sub = sub;
    this.hadSession = true;
    this.backoff.reset();
    // Known keys resume from their version; the rest go in one multi-key WATCH
    // per params object (the server supports it when `multi_watch` is set).
    const fresh = new Map<Record<string, unknown> | undefined, string[]>();
    for (const e of this.entries.values()) {
      if (e.known && e.version > 0 && this.capabilities.resume !== false) {
        this.sendResume(e);
      } else {
        e.known = false;
        const list = fresh.get(e.params) ?? [];
        list.push(e.key);
        fresh.set(e.params, list);
      }
    }
    for (const [params, keys] of fresh) this.sendWatch(keys, params);
    const queued = this.queue;
    this.queue = [];
    for (const id of queued) {
      const call = this.calls.get(id);
      if (call) this.sendCall(call);
    }
    this.startLiveness();
    this.scheduleRefresh();
    this.setStatus("connected");
    if (!this.readySettled) {
      this.readySettled = true;
      this.resolveReady();
    }
    try {
      this.opts.onConnect?.();
    } catch (err) {
      console.error("[SODP] onConnect threw", err);
    }
  }

  private onStateInit(streamId: number, body: Record<string, unknown>): void {
    const key = body.state;
    if (typeof key !== "string") {
      this.report(new SodpError("[SODP] STATE_INIT without a state key", "protocol"));
      return;
    }
    this.streamKeys.set(streamId, key);
    const e = this.entries.get(key);
    if (!e) return; // unwatched meanwhile
    const version = asNumber(body.version) ?? 0;
    const pending = e.pending;
    e.pending = [];
    // After a RESUME replay (or a shared subscription's fresh STATE_INIT) the
    // cache already holds exactly this version: keep its identity, say nothing.
    if (!(e.known && version === e.version)) {
      const value = body.value === undefined ? null : body.value;
      e.value = value;
      e.version = version;
      e.initialized = typeof body.initialized === "boolean" ? body.initialized : value !== null;
      e.known = true;
      this.notify(e, "init");
    }
    for (const d of pending) this.applyDelta(e, d);
  }

  private onDelta(streamId: number, body: DeltaBody): void {
    // Route by `state`: RESUME replays arrive before the STATE_INIT that maps their stream.
    const key = typeof body.state === "string" ? body.state : this.streamKeys.get(streamId);
    const e = key === undefined ? undefined : this.entries.get(key);
    if (!e) return;
    if (!e.known) {
      e.pending.push(body); // before its STATE_INIT: applied after it if newer
      return;
    }
    this.applyDelta(e, body);
  }

  private applyDelta(e: Entry, body: DeltaBody): void {
    const version = asNumber(body.version);
    if (version !== undefined && version <= e.version) return; // already have it
    const ops = Array.isArray(body.ops) ? (body.ops as DeltaOp[]) : [];
    let value: unknown;
    try {
      value = applyOps(e.value, ops);
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      this.report(new DeltaError(`[SODP] ${e.key}: ${msg}; resyncing`));
      this.resync(e);
      return;
    }
    e.value = value;
    if (version !== undefined) e.version = version;
    for (const op of ops) {
      e.initialized = op.path === "/" || op.path === "" ? op.op !== "REMOVE" : true;
    }
    this.notify(e, "delta");
  }

  /** The cache of `e` can no longer be trusted: fetch a fresh baseline. */
  private resync(e: Entry): void {
    e.known = false;
    e.pending = [];
    if (this.phase === "ready") {
      this.send(FrameType.UNWATCH, 0, { state: e.key });
      this.sendWatch([e.key], e.params);
    }
  }

  private onResult(body: Record<string, unknown>): void {
    const id = body.call_id;
    if (typeof id !== "string") {
      this.report(new SodpError("[SODP] RESULT without a call_id", "protocol"));
      return;
    }
    const call = this.calls.get(id);
    if (!call) return; // timed out meanwhile
    this.calls.delete(id);
    clearTimeout(call.timer);
    if (body.success === true) {
      call.resolve(body.data);
      return;
    }
    const code = asNumber(body.code) ?? 0;
    const detail = typeof body.data === "string" ? body.data : JSON.stringify(body.data);
    const { call_id: _id, success: _s, data: _d, code: _c, ...rest } = body;
    call.reject(new CallError(code, detail, call.method, rest));
  }

  private onError(streamId: number, body: Record<string, unknown>): void {
    const code = asNumber(body.code) ?? 0;
    const message = typeof body.message === "string" ? body.message : JSON.stringify(body.message);
    if (code === 401) {
      // At the handshake a 401 is final: the token was refused. On a live
      // session it means the token expired: a reconnect asks the provider again.
      const err = new AuthError(`[SODP] authentication failed: ${message}`);
      if (this.phase !== "ready" || !this.opts.tokenProvider) this.fatal = err;
      this.report(err);
      if (this.ws) this.drop(this.ws, 1000);
      return;
    }
    const key = streamId ? (this.sentStreams.get(streamId) ?? this.streamKeys.get(streamId)) : undefined;
    this.report(new ServerError(code, message, streamId, key));
  }

  // ── liveness and token refresh ────────────────────────────────────────────

  /**
   * Background tabs run timers late (once a minute when throttled hard), so
   * silence is measured by the wall clock between received frames, never by
   * counting timer ticks; and a long silence first sends a probe (the server
   * answers a HEARTBEAT) rather than dropping a connection that may be fine.
   */
  private startLiveness(): void {
    const hb = asNumber(this.capabilities.heartbeat_interval_ms) ?? 30_000;
    const silence = this.opts.livenessTimeout ?? 2 * hb + 5000;
    const grace = this.opts.probeTimeout ?? 10_000;
    this.probeAt = 0;
    const check = () => {
      const ws = this.ws;
      if (!ws || this.phase !== "ready") return;
      const now = Date.now();
      if (this.probeAt !== 0) {
        if (this.lastRx < this.probeAt && now - this.probeAt >= grace) {
          this.report(new SodpError("[SODP] server did not answer a probe: reconnecting", "transport"));
          this.drop(ws);
        }
        return;
      }
      if (now - this.lastRx >= silence) {
        this.probeAt = now;
        this.send(FrameType.HEARTBEAT, 0, null);
      }
    };
    this.livenessTimer = setInterval(check, Math.max(50, Math.min(silence, grace) / 2));
    const g = globalThis as {
      addEventListener?: (t: string, l: () => void) => void;
      removeEventListener?: (t: string, l: () => void) => void;
    };
    if (typeof g.addEventListener === "function" && typeof g.removeEventListener === "function") {
      // Coming back to the tab or the network: check at once instead of at the next (throttled) tick.
      const wake = () => {
        if (this.phase === "ready" && Date.now() - this.lastRx >= Math.min(silence, 5000) && this.probeAt === 0) {
          this.probeAt = Date.now();
          this.send(FrameType.HEARTBEAT, 0, null);
        }
      };
      g.addEventListener("online", wake);
      g.addEventListener("focus", wake);
      this.detachWake = () => {
        g.removeEventListener?.("online", wake);
        g.removeEventListener?.("focus", wake);
      };
    }
  }

  private scheduleRefresh(): void {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    if (this.capabilities.token_refresh !== true || !this.opts.tokenProvider || !this.token) return;
    const exp = jwtExpiryMs(this.token);
    if (exp === undefined) return;
    const ws = this.ws;
    this.refreshTimer = setTimeout(
      () => {
        this.fetchToken().then(
          (token) => {
            if (this.ws !== ws || this.phase !== "ready" || !token) return;
            this.token = token;
            this.send(FrameType.AUTH, 0, { token });
          },
          (err: unknown) => this.report(new SodpError(`[SODP] token refresh failed: ${(err as Error)?.message}`, "transport")),
        );
      },
      Math.min(MAX_TIMER, refreshDelayMs(exp, Date.now())),
    );
  }

  // ── subscriptions ─────────────────────────────────────────────────────────

  private newStream(key: string | undefined): number {
    const sid = this.nextStream++;
    if (key !== undefined) this.sentStreams.set(sid, key);
    return sid;
  }

  private sendWatch(keys: string[], params: Record<string, unknown> | undefined): void {
    const allowed = keys.filter((k) => {
      if (k.includes("*") && !this.supports("prefix_watch")) {
        this.report(new UnsupportedError("prefix_watch"));
        return false;
      }
      return true;
    });
    if (allowed.length === 0) return;
    if (allowed.length > 1 && this.capabilities.multi_watch === false) {
      for (const k of allowed) this.sendWatch([k], params);
      return;
    }
    const body: Record<string, unknown> = allowed.length === 1 ? { state: allowed[0] } : { states: allowed };
    if (params !== undefined) body.params = params;
    this.send(FrameType.WATCH, this.newStream(allowed.length === 1 ? allowed[0] : undefined), body);
  }

  private sendResume(e: Entry): void {
    const body: Record<string, unknown> = { state: e.key, since_version: e.version };
    if (e.params !== undefined) body.params = e.params;
    this.send(FrameType.RESUME, this.newStream(e.key), body);
  }

  private notify(e: Entry, source: WatchMeta["source"]): void {
    const meta: WatchMeta = { version: e.version, initialized: e.initialized, source, key: e.key };
    e.meta = meta;
    for (const r of [...e.regs]) this.deliver(r, e.value, meta);
  }

  private deliver(r: Registration, value: unknown, meta: WatchMeta): void {
    try {
      (r.cb as WatchCallback<unknown>)(value, meta);
    } catch (err) {
      console.error(`[SODP] watch callback for ${meta.key} threw`, err);
    }
  }

  /**
   * Call `cb(value, meta)` on every change of `key`; returns the function that
   * removes this callback. Watches of one key share one subscription; a key
   * already known calls back at once with `source: "cache"`. When the last
   * callback of a key leaves, the client sends UNWATCH (deferred one
   * microtask, so a React StrictMode unmount/remount does not churn).
   */
  watch<T = unknown>(key: string, cb: WatchCallback<T>, params?: Record<string, unknown>): () => void {
    return this.watchMany<T>([key], cb, params);
  }

  /** `watch` over several keys with one callback (`meta.key` tells which); new keys go out in one WATCH frame. */
  watchMany<T = unknown>(keys: string[], cb: WatchCallback<T>, params?: Record<string, unknown>): () => void {
    const added: Array<[Entry, Registration]> = [];
    const fresh: string[] = [];
    for (const key of keys) {
      if (typeof key !== "string" || key === "") throw new TypeError("[SODP] a state key must be a non-empty string");
      let e = this.entries.get(key);
      if (!e) {
        e = { key, params, regs: new Set(), value: null, version: 0, initialized: false, known: false, pending: [], meta: null };
        this.entries.set(key, e);
        fresh.push(key);
      }
      const r: Registration = { cb: cb as WatchCallback<never> };
      e.regs.add(r);
      added.push([e, r]);
    }
    if (fresh.length > 0 && this.phase === "ready") this.sendWatch(fresh, params);
    for (const [e, r] of added) {
      if (e.known) this.deliver(r, e.value, { version: e.version, initialized: e.initialized, source: "cache", key: e.key });
    }
    let done = false;
    return () => {
      if (done) return;
      done = true;
      for (const [e, r] of added) {
        e.regs.delete(r);
        if (e.regs.size === 0) {
          queueMicrotask(() => {
            if (e.regs.size === 0 && this.entries.get(e.key) === e) this.unwatch(e.key);
          });
        }
      }
    };
  }

  /** Stop watching `key` now: UNWATCH, drop its callbacks and cached value. */
  unwatch(key: string): void {
    if (!this.entries.delete(key)) return;
    if (this.phase === "ready") this.send(FrameType.UNWATCH, 0, { state: key });
    for (const [sid, k] of this.streamKeys) if (k === key) this.streamKeys.delete(sid);
  }

  isWatching(key: string): boolean {
    return this.entries.has(key);
  }

  /** The cached value: `undefined` when not watched, `null` when watched but not (yet) valued. */
  getSnapshot<T = unknown>(key: string): T | null | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    return e.value as T | null;
  }

  /** The meta of the last delivery for `key`, or null before its first. */
  getMeta(key: string): WatchMeta | null {
    return this.entries.get(key)?.meta ?? null;
  }

  state<T = unknown>(key: string): StateRef<T> {
    return new StateRef<T>(this, key);
  }

  // ── calls ─────────────────────────────────────────────────────────────────

  /** Send a CALL (queued until connected); resolves with RESULT `data`. */
  call<D = unknown>(method: string, args: Record<string, unknown>, extra?: Record<string, unknown>, requires: string[] = []): Promise<D> {
    return new Promise<D>((resolve, reject) => {
      if (this._status === "closed" || this._status === "disconnected") {
        reject(this.fatal ?? new ConnectionLost(`client ${this._status}`));
        return;
      }
      const id = this.ids.next();
      const call: PendingCall = {
        id,
        method,
        body: { ...extra, call_id: id, method, args },
        requires,
        mutating: MUTATING.has(method),
        sent: false,
        resolve: resolve as (d: unknown) => void,
        reject,
        timer: undefined,
      };
      const ms = this.opts.callTimeout ?? 30_000;
      call.timer = setTimeout(() => this.failCall(call, new CallTimeout(method, ms)), ms);
      this.calls.set(id, call);
      if (this.phase === "ready") this.sendCall(call);
      else this.queue.push(id);
    });
  }

  private sendCall(call: PendingCall): void {
    for (const cap of call.requires) {
      if (!this.supports(cap)) {
        this.failCall(call, new UnsupportedError(cap));
        return;
      }
    }
    // Exactly-once writes: a generated key stays with the call across resends.
    if (call.mutating && this.supports("idempotency") && call.body.idempotency_key === undefined) {
      call.body.idempotency_key = call.id;
    }
    call.sent = true;
    this.send(FrameType.CALL, 0, call.body);
  }

  private failCall(call: PendingCall, err: SodpError): void {
    if (!this.calls.delete(call.id)) return;
    clearTimeout(call.timer);
    const i = this.queue.indexOf(call.id);
    if (i >= 0) this.queue.splice(i, 1);
    call.reject(err);
  }

  private write(method: string, args: Record<string, unknown>, opts?: WriteOptions): Promise<CallResult> {
    const requires: string[] = [];
    const extra: Record<string, unknown> = {};
    if (opts?.ifVersion !== undefined) {
      args.if_version = opts.ifVersion;
      requires.push("conditional");
    }
    if (opts?.ttlMs !== undefined) {
      args.ttl_ms = opts.ttlMs;
      requires.push("ttl");
    }
    if (opts?.idempotencyKey !== undefined) {
      extra.idempotency_key = opts.idempotencyKey;
      requires.push("idempotency");
    }
    return this.call<CallResult>(method, args, extra, requires);
  }

  set(key: string, value: unknown, opts?: WriteOptions): Promise<CallResult> {
    return this.write("state.set", { state: key, value }, opts);
  }

  /** Deep merge: objects merge recursively; arrays, scalars and null replace. */
  patch(key: string, partial: Record<string, unknown>, opts?: WriteOptions): Promise<CallResult> {
    return this.write("state.patch", { state: key, patch: partial }, opts);
  }

  /** Set one location by JSON Pointer (`/a/b`, `/list/-`), creating intermediates. */
  setIn(key: string, path: string, value: unknown, opts?: WriteOptions): Promise<CallResult> {
    return this.write("state.set_in", { state: key, path, value }, opts);
  }

  delete(key: string, opts?: WriteOptions): Promise<CallResult> {
    return this.write("state.delete", { state: key }, opts);
  }

  /** `setIn`, and the server removes the path when this session ends. */
  presence(key: string, path: string, value: unknown): Promise<CallResult> {
    return this.write("state.presence", { state: key, path, value });
  }

  /** Extension `transaction`: several writes, one version, all or nothing. */
  transaction(ops: TransactionOp[]): Promise<CallResult> {
    return this.call<CallResult>("state.transaction", { ops }, undefined, ["transaction"]);
  }

  /** Extension `read`: one-shot read without watching. */
  get<T = unknown>(key: string): Promise<{ version: number; value: T | null; initialized: boolean }> {
    return this.call("state.get", { state: key }, undefined, ["read"]);
  }

  /** Extension `read`: list keys by prefix, paged with `after`. */
  keys(opts: { prefix?: string; after?: string; limit?: number } = {}): Promise<{ keys: string[]; next?: string }> {
    return this.call("state.keys", { ...opts }, undefined, ["read"]);
  }

  /** Extension `read`: a key's retained changes after `sinceVersion`. */
  history(
    key: string,
    opts: { sinceVersion?: number; limit?: number } = {},
  ): Promise<{ entries: Array<{ version: number; ops: DeltaOp[] }>; complete: boolean }> {
    const args: Record<string, unknown> = { state: key };
    if (opts.sinceVersion !== undefined) args.since_version = opts.sinceVersion;
    if (opts.limit !== undefined) args.limit = opts.limit;
    return this.call("state.history", args, undefined, ["read"]);
  }
}

/** A handle on one key. */
export class StateRef<T = unknown> {
  constructor(
    readonly client: SodpClient,
    readonly key: string,
  ) {}
  watch(cb: WatchCallback<T>, params?: Record<string, unknown>): () => void {
    return this.client.watch<T>(this.key, cb, params);
  }
  get(): T | null | undefined {
    return this.client.getSnapshot<T>(this.key);
  }
  isWatching(): boolean {
    return this.client.isWatching(this.key);
  }
  unwatch(): void {
    this.client.unwatch(this.key);
  }
  set(value: T, opts?: WriteOptions): Promise<CallResult> {
    return this.client.set(this.key, value, opts);
  }
  patch(partial: Partial<T> & Record<string, unknown>, opts?: WriteOptions): Promise<CallResult> {
    return this.client.patch(this.key, partial, opts);
  }
  setIn(path: string, value: unknown, opts?: WriteOptions): Promise<CallResult> {
    return this.client.setIn(this.key, path, value, opts);
  }
  delete(opts?: WriteOptions): Promise<CallResult> {
    return this.client.delete(this.key, opts);
  }
  presence(path: string, value: unknown): Promise<CallResult> {
    return this.client.presence(this.key, path, value);
  }
}
