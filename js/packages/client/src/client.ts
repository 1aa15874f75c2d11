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
import { applyOps, type DeltaOp, isContainer } from "./delta.js";
import { AuthError, CallError, CallTimeout, ConnectionLost, DeltaError, ServerError, SodpError, UnsupportedError } from "./errors.js";
import { decodeFrame, encodeFrame, FrameType } from "./frames.js";
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
  /** Extension `ttl`: when the key expires (Unix ms); absent when it has no deadline. */
  expiresAt?: number;
}

export type WatchCallback<T = unknown> = (value: T | null, meta: WatchMeta) => void;

/** One DELTA as applied to a watched key (or pattern): see `SodpClient.onDelta`. */
export interface DeltaEvent {
  /** The watched key or pattern it arrived on. */
  key: string;
  version: number;
  ops: readonly DeltaOp[];
  /** The key's value before and after the ops. */
  before: unknown;
  after: unknown;
}

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
  /** Calls waiting for their RESULT (in flight, or queued while disconnected) at most (default 1024); one more is refused at once with `ConnectionLost`. */
  maxPendingCalls?: number;
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
  _regs: Set<Registration>;
  value: unknown;
  version: number;
  initialized: boolean;
  /** A baseline (STATE_INIT) has been received; DELTAs before it are buffered in `pending`. */
  _known: boolean;
  _pending: DeltaBody[];
  /** The last change applied was a DELTA (not a STATE_INIT) at `version`. */
  _live?: boolean;
  _exp?: number | undefined;
  meta: WatchMeta | null;
}

interface DeltaBody {
  version?: unknown;
  ops?: unknown;
  state?: unknown;
  expires_at?: unknown;
}

interface PendingCall {
  id: string;
  method: string;
  body: Record<string, unknown>;
  _requires: string[];
  _mutating: boolean;
  _sent?: boolean;
  /** In flight when a connection dropped: resent only where `idempotency` makes that safe. */
  _resent?: boolean;
  resolve: (data: unknown) => void;
  reject: (err: SodpError) => void;
  _timer?: ReturnType<typeof setTimeout>;
}

type Phase = "closed" | "hello" | "auth" | "ready";

const OPEN = 1; // WebSocket.OPEN, without touching a global that may not exist
const MUTATING = new Set(["state.set", "state.patch", "state.set_in", "state.delete", "state.presence", "state.transaction"]);
const SCHEMES: Record<string, string> = { "ws://": "ws://", "wss://": "wss://", "sodp://": "ws://", "sodps://": "wss://" };
const MAX_TIMER = 2_147_483_647;

/** Run a user callback; what it throws is logged, never allowed to break the session. */
function safely(what: string, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    console.error(`[SODP] ${what} threw`, err);
  }
}

function normalizeUrl(url: string): string {
  for (const prefix in SCHEMES) {
    if (url.startsWith(prefix)) return (SCHEMES[prefix] as string) + url.slice(prefix.length);
  }
  throw new SodpError(`unsupported URL ${url}`, "transport");
}

/** (Un)register `fn` for the events after which a connection is worth checking (browsers only). */
function wakeEvents(method: ((type: string, fn: () => void) => void) | undefined, fn: () => void): void {
  if (typeof method !== "function") return;
  for (const type of ["online", "focus", "visibilitychange"]) method.call(globalThis, type, fn);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return isContainer(v) && !Array.isArray(v);
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

  private readonly _opts: SodpClientOptions;
  private readonly _Ctor: WebSocketConstructor;
  private readonly _backoff: Backoff;
  private readonly _ids = new IdSource();
  private readonly _entries = new Map<string, Entry>();
  private readonly _calls = new Map<string, PendingCall>();
  private _queue: string[] = [];
  private readonly _statusListeners = new Set<(s: ConnectionStatus, p: ConnectionStatus) => void>();
  private readonly _deltaListeners = new Set<(d: DeltaEvent) => void>();
  private _status: ConnectionStatus = "connecting";
  private _resolveReady!: () => void;
  private _rejectReady!: (err: SodpError) => void;
  private _readySettled = false;
  private _hadSession = false;
  private _fatal: SodpError | undefined;

  // per connection
  private _ws: WebSocketLike | undefined;
  private _phase: Phase = "closed";
  private _seq = 0;
  private _nextStream = 10; // streams 1–9 are reserved
  private readonly _streamKeys = new Map<number, string>(); // from STATE_INIT
  private readonly _sentStreams = new Map<number, string>(); // our WATCH/RESUME ids, to name the key of an ERROR
  private _token: string | undefined;
  private _lastRx = 0;
  private _probeAt = 0;
  private _connectTimer: ReturnType<typeof setTimeout> | undefined;
  private _reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private _livenessTimer: ReturnType<typeof setInterval> | undefined;
  private _refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly _wake = () => this._onWake();

  constructor(url: string, options: SodpClientOptions = {}) {
    this.url = normalizeUrl(url);
    this._opts = options;
    const Ctor = (options.WebSocket ?? (globalThis as { WebSocket?: unknown }).WebSocket) as WebSocketConstructor | undefined;
    if (typeof Ctor !== "function") {
      throw new SodpError("no WebSocket implementation: pass { WebSocket } (on Node 20: from 'ws')", "transport");
    }
    this._Ctor = Ctor;
    this._backoff = new Backoff(options.reconnectDelay ?? 1000, options.maxReconnectDelay ?? 30_000);
    this.ready = new Promise<void>((resolve, reject) => {
      this._resolveReady = resolve;
      this._rejectReady = reject;
    });
    this.ready.catch(() => {}); // a rejection nobody awaits is not an unhandled one
    if (options.onStatusChange) this._statusListeners.add(options.onStatusChange);
    wakeEvents(globalThis.addEventListener, this._wake);
    this._connect();
  }

  // ── status ────────────────────────────────────────────────────────────────

  get status(): ConnectionStatus {
    return this._status;
  }

  /** True while a session is live (connected and authenticated). */
  get connected(): boolean {
    return this._phase === "ready";
  }

  /** Listen to status changes; returns the unsubscribe function. */
  onStatusChange(listener: (status: ConnectionStatus, previous: ConnectionStatus) => void): () => void {
    this._statusListeners.add(listener);
    return () => {
      this._statusListeners.delete(listener);
    };
  }

  /**
   * Listen to every DELTA applied to a watched key, with its ops (tools that
   * show what changed, such as the inspector); returns the unsubscribe function.
   */
  onDelta(listener: (delta: DeltaEvent) => void): () => void {
    this._deltaListeners.add(listener);
    return () => {
      this._deltaListeners.delete(listener);
    };
  }

  /** Whether the current session's HELLO advertises `capabilities[name]`. */
  supports(name: string): boolean {
    return this.capabilities[name] === true;
  }

  private _setStatus(s: ConnectionStatus): void {
    const prev = this._status;
    if (prev === s) return;
    this._status = s;
    for (const l of [...this._statusListeners]) safely("status listener", () => l(s, prev));
  }

  private _report(err: SodpError): void {
    const cb = this._opts.onError;
    if (cb) safely("onError", () => cb(err));
    else console.warn(err.message);
  }

  // ── connection ────────────────────────────────────────────────────────────

  private _connect(): void {
    this._reconnectTimer = undefined;
    if (this._status === "closed" || this._fatal) return;
    this._setStatus(this._hadSession ? "reconnecting" : "connecting");
    let ws: WebSocketLike;
    try {
      ws = new this._Ctor(this.url);
    } catch (err) {
      this._report(new SodpError(`cannot open ${this.url}: ${err}`, "transport"));
      this._scheduleReconnect();
      return;
    }
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    this._phase = "hello";
    this._seq = 0;
    this._nextStream = 10;
    this._streamKeys.clear();
    this._sentStreams.clear();
    this._lastRx = Date.now();
    this._connectTimer = setTimeout(() => {
      if (this._ws === ws && this._phase !== "ready") {
        this._report(new SodpError("connect timed out", "transport"));
        this._drop(ws);
      }
    }, this._opts.connectTimeout ?? 10_000);
    ws.onmessage = (ev) => {
      if (this._ws === ws) this._onMessage(ev.data);
    };
    ws.onclose = () => {
      if (this._ws === ws) this._onSocketGone();
    };
    ws.onerror = () => {
      // A close event follows; browsers say nothing about the cause.
    };
  }

  /** Abandon a socket now (dead, timed out, refused): do not wait for its close handshake. */
  private _drop(ws: WebSocketLike, code = 4000): void {
    try {
      ws.close(code);
    } catch {
      // already closing
    }
    if (this._ws === ws) this._onSocketGone();
  }

  private _onSocketGone(): void {
    const wasLive = this._phase === "ready";
    const ws = this._ws;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onopen = null;
      // Keep a listener: `ws` (Node) emits 'error' when closed while connecting,
      // and an EventEmitter 'error' without one is an uncaught exception.
      ws.onerror = () => {};
    }
    this._ws = undefined;
    this._phase = "closed";
    this._clearConnectionTimers();
    for (const e of this._entries.values()) e._pending = [];
    // Calls in flight: with an idempotency key they are resent on the next
    // session (the server applies them once); without, their fate is unknown.
    const requeue: string[] = [];
    for (const call of this._calls.values()) {
      if (!call._sent) continue;
      call._sent = false;
      if (typeof call.body.idempotency_key === "string") {
        call._resent = true;
        // A presence binding ended with its session: bind it again (a fresh key).
        if (call.method === "state.presence") delete call.body.idempotency_key;
        requeue.push(call.id);
      } else this._failCall(call, new ConnectionLost("connection lost with the call in flight"));
    }
    this._queue = [...requeue, ...this._queue];
    if (wasLive) safely("onDisconnect", () => this._opts.onDisconnect?.());
    if (this._status === "closed") return;
    if (this._fatal) {
      this._giveUp(this._fatal);
      return;
    }
    if (this._opts.reconnect === false) {
      this._giveUp(new ConnectionLost("disconnected (reconnect is off)"));
      return;
    }
    this._scheduleReconnect();
  }

  private _scheduleReconnect(): void {
    this._setStatus(this._hadSession ? "reconnecting" : "connecting");
    const delay = this._backoff.next();
    this._reconnectTimer = setTimeout(() => this._connect(), delay);
  }

  /** No more attempts: fail what waits, settle `ready`, status `disconnected`. */
  private _giveUp(err: SodpError): void {
    for (const call of [...this._calls.values()]) this._failCall(call, err);
    this._queue = [];
    if (!this._readySettled) {
      this._readySettled = true;
      this._rejectReady(err);
    }
    this._setStatus("disconnected");
  }

  private _clearConnectionTimers(): void {
    clearTimeout(this._connectTimer);
    clearInterval(this._livenessTimer);
    clearTimeout(this._refreshTimer);
    this._connectTimer = this._livenessTimer = this._refreshTimer = undefined;
  }

  /** Close the connection and stop reconnecting. Pending calls reject with `ConnectionLost`. */
  close(): void {
    if (this._status === "closed") return;
    this._setStatus("closed");
    wakeEvents(globalThis.removeEventListener, this._wake);
    clearTimeout(this._reconnectTimer);
    const err = new ConnectionLost("client closed");
    for (const call of [...this._calls.values()]) this._failCall(call, err);
    this._queue = [];
    if (!this._readySettled) {
      this._readySettled = true;
      this._rejectReady(err);
    }
    if (this._ws) this._drop(this._ws, 1000);
  }

  private _send(type: number, streamId: number, body: unknown): void {
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN) return;
    this._seq++;
    ws.send(encodeFrame(type, streamId, this._seq, body));
  }

  // ── receiving ─────────────────────────────────────────────────────────────

  private _onMessage(data: unknown): void {
    this._lastRx = Date.now();
    if (typeof data === "string") {
      this._report(new SodpError("text message ignored", "protocol"));
      return;
    }
    let frame: ReturnType<typeof decodeFrame>;
    try {
      frame = decodeFrame(data as ArrayBuffer);
    } catch (err) {
      this._report(err as SodpError);
      return;
    }
    const body = isRecord(frame.body) ? frame.body : {};
    switch (frame.type) {
      case FrameType.DELTA:
        this._onDelta(frame.streamId, body);
        return;
      case FrameType.HEARTBEAT:
        if (this._probeAt === 0) this._send(FrameType.HEARTBEAT, 0, null);
        this._probeAt = 0; // an answer to our probe needs no echo (it would start a ping-pong)
        return;
      case FrameType.STATE_INIT:
        this._onStateInit(frame.streamId, body);
        return;
      case FrameType.RESULT:
        this._onResult(body);
        return;
      case FrameType.ERROR:
        this._onError(frame.streamId, body);
        return;
      case FrameType.HELLO:
        this._onHello(body);
        return;
      case FrameType.AUTH_OK:
        this._onAuthOk(body);
        return;
      default:
        this._report(new SodpError(`unexpected frame type ${frame.type}`, "protocol"));
    }
  }

  private _onHello(body: Record<string, unknown>): void {
    if (this._phase !== "hello") {
      this._report(new SodpError("unexpected HELLO", "protocol"));
      return;
    }
    this.capabilities = isRecord(body.capabilities) ? { ...body.capabilities } : {};
    if (body.auth !== true) {
      this._becomeReady(undefined);
      return;
    }
    this._phase = "auth";
    const ws = this._ws;
    this._fetchToken().then(
      (token) => {
        if (this._ws !== ws || this._phase !== "auth") return;
        if (!token) {
          this._fatal = new AuthError("no token for a server that requires one");
          if (ws) this._drop(ws);
          return;
        }
        this._token = token;
        this._send(FrameType.AUTH, 0, { token });
      },
      (err: unknown) => {
        this._report(new SodpError(`tokenProvider failed: ${err}`, "transport"));
        if (this._ws === ws && ws) this._drop(ws);
      },
    );
  }

  private async _fetchToken(): Promise<string | undefined> {
    if (this._opts.tokenProvider) return await this._opts.tokenProvider();
    return this._opts.token;
  }

  private _onAuthOk(body: Record<string, unknown>): void {
    const sub = typeof body.sub === "string" ? body.sub : undefined;
    if (this._phase === "auth") this._becomeReady(sub);
    else if (this._phase === "ready") {
      this.sub = sub;
      this._scheduleRefresh();
    }
  }

  private _becomeReady(sub: string | undefined): void {
    clearTimeout(this._connectTimer);
    this._connectTimer = undefined;
    this._phase = "ready";
    this.sub = sub;
    this._hadSession = true;
    this._backoff.reset();
    // Known keys resume from their version; the rest go in one multi-key WATCH
    // per params object (the server supports it when `multi_watch` is set).
    const fresh = new Map<Record<string, unknown> | undefined, string[]>();
    for (const e of this._entries.values()) {
      if (e._known && e.version > 0 && this.capabilities.resume !== false) {
        this._sendResume(e);
      } else {
        e._known = false;
        const list = fresh.get(e.params) ?? [];
        list.push(e.key);
        fresh.set(e.params, list);
      }
    }
    for (const [params, keys] of fresh) this._sendWatch(keys, params);
    const queued = this._queue;
    this._queue = [];
    for (const id of queued) {
      const call = this._calls.get(id);
      if (call) this._sendCall(call);
    }
    this._startLiveness();
    this._scheduleRefresh();
    this._setStatus("connected");
    if (!this._readySettled) {
      this._readySettled = true;
      this._resolveReady();
    }
    safely("onConnect", () => this._opts.onConnect?.());
  }

  private _onStateInit(streamId: number, body: Record<string, unknown>): void {
    const key = body.state;
    if (typeof key !== "string") {
      this._report(new SodpError("STATE_INIT without a state key", "protocol"));
      return;
    }
    this._streamKeys.set(streamId, key);
    const e = this._entries.get(key);
    if (!e) return; // unwatched meanwhile
    const version = asNumber(body.version) ?? 0;
    const pending = e._pending;
    e._pending = [];
    // After a RESUME replay (or a shared subscription's fresh STATE_INIT) the
    // cache already holds exactly this version: keep its identity, say nothing.
    // Not a pattern's after a DELTA: a cut may have split that version's
    // DELTAs (one per key of a transaction), and RESUME replays only later ones.
    if (!(e._known && version === e.version && !(e._live && e.key.includes("*")))) {
      const value = body.value === undefined ? null : body.value;
      e.value = value;
      e.version = version;
      e.initialized = typeof body.initialized === "boolean" ? body.initialized : value !== null;
      e._exp = asNumber(body.expires_at) || undefined;
      e._known = true;
      this._notify(e, "init");
    }
    e._live = false;
    for (const d of pending) this._applyDelta(e, d);
  }

  private _onDelta(streamId: number, body: DeltaBody): void {
    // Route by `state`: RESUME replays arrive before the STATE_INIT that maps their stream.
    const key = typeof body.state === "string" ? body.state : this._streamKeys.get(streamId);
    const e = key === undefined ? undefined : this._entries.get(key);
    if (!e) return;
    if (!e._known) {
      e._pending.push(body); // before its STATE_INIT: applied after it if newer
      return;
    }
    this._applyDelta(e, body);
  }

  private _applyDelta(e: Entry, body: DeltaBody): void {
    const version = asNumber(body.version);
    // Already have it — unless, on a pattern, the last change was a DELTA of
    // this version: a transaction sends a pattern one DELTA per key, all at
    // one version (a key's own stream never repeats a version).
    if (version !== undefined && (version < e.version || (version === e.version && !(e._live && e.key.includes("*"))))) return;
    const ops = Array.isArray(body.ops) ? (body.ops as DeltaOp[]) : [];
    let value: unknown;
    try {
      value = applyOps(e.value, ops);
    } catch (err) {
      const msg = err instanceof Error ? err.message.replace("[SODP] ", "") : String(err);
      this._report(new DeltaError(`${e.key}: ${msg}; resyncing`));
      this._resync(e);
      return;
    }
    const before = e.value;
    e.value = value;
    e._live = true;
    if (version !== undefined) e.version = version;
    if (body.expires_at !== undefined) e._exp = asNumber(body.expires_at) || undefined;
    for (const op of ops) {
      e.initialized = op.path === "/" || op.path === "" ? op.op !== "REMOVE" : true;
    }
    if (this._deltaListeners.size > 0) {
      const event: DeltaEvent = { key: e.key, version: e.version, ops, before, after: value };
      for (const l of [...this._deltaListeners]) safely("delta listener", () => l(event));
    }
    this._notify(e, "delta");
  }

  /** The cache of `e` can no longer be trusted: fetch a fresh baseline. */
  private _resync(e: Entry): void {
    e._known = false;
    e._pending = [];
    if (this._phase === "ready") {
      this._send(FrameType.UNWATCH, 0, { state: e.key });
      this._sendWatch([e.key], e.params);
    }
  }

  private _onResult(body: Record<string, unknown>): void {
    const id = body.call_id;
    if (typeof id !== "string") {
      this._report(new SodpError("RESULT without a call_id", "protocol"));
      return;
    }
    const call = this._calls.get(id);
    if (!call) return; // timed out meanwhile
    this._calls.delete(id);
    clearTimeout(call._timer);
    if (body.success === true) {
      call.resolve(body.data);
      return;
    }
    const code = asNumber(body.code) ?? 0;
    const detail = typeof body.data === "string" ? body.data : JSON.stringify(body.data);
    const { call_id: _id, success: _s, data: _d, code: _c, ...rest } = body;
    call.reject(new CallError(code, detail, call.method, rest));
  }

  private _onError(streamId: number, body: Record<string, unknown>): void {
    const code = asNumber(body.code) ?? 0;
    const message = typeof body.message === "string" ? body.message : JSON.stringify(body.message);
    if (code === 401) {
      // At the handshake a 401 is final: the token was refused. On a live
      // session it means the token expired: a reconnect asks the provider again.
      const err = new AuthError(`authentication failed: ${message}`);
      if (this._phase !== "ready" || !this._opts.tokenProvider) this._fatal = err;
      this._report(err);
      if (this._ws) this._drop(this._ws, 1000);
      return;
    }
    const key = streamId ? (this._sentStreams.get(streamId) ?? this._streamKeys.get(streamId)) : undefined;
    this._report(new ServerError(code, message, streamId, key));
  }

  // ── liveness and token refresh ────────────────────────────────────────────

  /**
   * Background tabs run timers late (once a minute when throttled hard), so
   * silence is measured by the wall clock between received frames, never by
   * counting timer ticks; and a long silence first sends a probe (the server
   * answers a HEARTBEAT) rather than dropping a connection that may be fine.
   */
  private _startLiveness(): void {
    const hb = asNumber(this.capabilities.heartbeat_interval_ms) ?? 30_000;
    const silence = this._opts.livenessTimeout ?? 2 * hb + 5000;
    const grace = this._opts.probeTimeout ?? 10_000;
    this._probeAt = 0;
    const check = () => {
      const ws = this._ws;
      if (!ws || this._phase !== "ready") return;
      const now = Date.now();
      if (this._probeAt !== 0) {
        if (this._lastRx < this._probeAt && now - this._probeAt >= grace) {
          this._report(new SodpError("no answer to a probe: reconnecting", "transport"));
          this._drop(ws);
        }
        return;
      }
      if (now - this._lastRx >= silence) {
        this._probeAt = now;
        this._send(FrameType.HEARTBEAT, 0, null);
      }
    };
    this._livenessTimer = setInterval(check, Math.max(50, Math.min(silence, grace) / 2));
  }

  /**
   * Back online, or back to the tab: probe a live connection now (instead of
   * at the next, maybe throttled, tick), or end a reconnect wait (background
   * tabs run the backoff timer late).
   */
  private _onWake(): void {
    if (this._phase === "ready") {
      if (this._probeAt === 0 && Date.now() - this._lastRx >= 5000) {
        this._probeAt = Date.now();
        this._send(FrameType.HEARTBEAT, 0, null);
      }
    } else if (this._reconnectTimer !== undefined) {
      clearTimeout(this._reconnectTimer);
      this._connect();
    }
  }

  private _scheduleRefresh(): void {
    clearTimeout(this._refreshTimer);
    this._refreshTimer = undefined;
    if (this.capabilities.token_refresh !== true || !this._opts.tokenProvider || !this._token) return;
    const exp = jwtExpiryMs(this._token);
    if (exp === undefined) return;
    const ws = this._ws;
    this._refreshTimer = setTimeout(
      () => {
        this._fetchToken().then(
          (token) => {
            if (this._ws !== ws || this._phase !== "ready" || !token) return;
            this._token = token;
            this._send(FrameType.AUTH, 0, { token });
          },
          (err: unknown) => this._report(new SodpError(`token refresh failed: ${err}`, "transport")),
        );
      },
      Math.min(MAX_TIMER, refreshDelayMs(exp, Date.now())),
    );
  }

  // ── subscriptions ─────────────────────────────────────────────────────────

  private _newStream(key: string | undefined): number {
    const sid = this._nextStream++;
    if (key !== undefined) this._sentStreams.set(sid, key);
    return sid;
  }

  private _sendWatch(keys: string[], params: Record<string, unknown> | undefined): void {
    const allowed = keys.filter((k) => {
      if (k.includes("*") && !this.supports("prefix_watch")) {
        this._report(new UnsupportedError("prefix_watch"));
        return false;
      }
      return true;
    });
    if (allowed.length === 0) return;
    if (allowed.length > 1 && this.capabilities.multi_watch === false) {
      for (const k of allowed) this._sendWatch([k], params);
      return;
    }
    const body: Record<string, unknown> = allowed.length === 1 ? { state: allowed[0] } : { states: allowed };
    if (params !== undefined) body.params = params;
    this._send(FrameType.WATCH, this._newStream(allowed.length === 1 ? allowed[0] : undefined), body);
  }

  private _sendResume(e: Entry): void {
    const body: Record<string, unknown> = { state: e.key, since_version: e.version };
    if (e.params !== undefined) body.params = e.params;
    this._send(FrameType.RESUME, this._newStream(e.key), body);
  }

  private _meta(e: Entry, source: WatchMeta["source"]): WatchMeta {
    const meta: WatchMeta = { version: e.version, initialized: e.initialized, source, key: e.key };
    if (e._exp) meta.expiresAt = e._exp;
    return meta;
  }

  private _notify(e: Entry, source: WatchMeta["source"]): void {
    const meta = this._meta(e, source);
    e.meta = meta;
    for (const r of [...e._regs]) this._deliver(r, e.value, meta);
  }

  private _deliver(r: Registration, value: unknown, meta: WatchMeta): void {
    safely("watch callback", () => (r.cb as WatchCallback<unknown>)(value, meta));
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
      let e = this._entries.get(key);
      if (!e) {
        e = { key, params, _regs: new Set(), value: null, version: 0, initialized: false, _known: false, _pending: [], meta: null };
        this._entries.set(key, e);
        fresh.push(key);
      }
      const r: Registration = { cb: cb as WatchCallback<never> };
      e._regs.add(r);
      added.push([e, r]);
    }
    if (fresh.length > 0 && this._phase === "ready") this._sendWatch(fresh, params);
    for (const [e, r] of added) {
      if (e._known) this._deliver(r, e.value, this._meta(e, "cache"));
    }
    let done = false;
    return () => {
      if (done) return;
      done = true;
      for (const [e, r] of added) {
        e._regs.delete(r);
        if (e._regs.size === 0) {
          queueMicrotask(() => {
            if (e._regs.size === 0 && this._entries.get(e.key) === e) this.unwatch(e.key);
          });
        }
      }
    };
  }

  /** Stop watching `key` now: UNWATCH, drop its callbacks and cached value. */
  unwatch(key: string): void {
    if (!this._entries.delete(key)) return;
    if (this._phase === "ready") this._send(FrameType.UNWATCH, 0, { state: key });
    for (const [sid, k] of this._streamKeys) if (k === key) this._streamKeys.delete(sid);
  }

  isWatching(key: string): boolean {
    return this._entries.has(key);
  }

  /** The cached value: `undefined` when not watched, `null` when watched but not (yet) valued. */
  getSnapshot<T = unknown>(key: string): T | null | undefined {
    const e = this._entries.get(key);
    if (!e) return undefined;
    return e.value as T | null;
  }

  /** The meta of the last delivery for `key`, or null before its first. */
  getMeta(key: string): WatchMeta | null {
    return this._entries.get(key)?.meta ?? null;
  }

  state<T = unknown>(key: string): StateRef<T> {
    return new StateRef<T>(this, key);
  }

  // ── calls ─────────────────────────────────────────────────────────────────

  /** Send a CALL (queued until connected); resolves with RESULT `data`. */
  call<D = unknown>(method: string, args: Record<string, unknown>, extra?: Record<string, unknown>, requires: string[] = []): Promise<D> {
    return new Promise<D>((resolve, reject) => {
      if (this._status === "closed" || this._status === "disconnected") {
        reject(this._fatal ?? new ConnectionLost(`client ${this._status}`));
        return;
      }
      if (this._calls.size >= (this._opts.maxPendingCalls ?? 1024)) {
        reject(new ConnectionLost("too many calls pending"));
        return;
      }
      const id = this._ids.next();
      const call: PendingCall = {
        id,
        method,
        body: { ...extra, call_id: id, method, args },
        _requires: requires,
        _mutating: MUTATING.has(method),
        resolve: resolve as (d: unknown) => void,
        reject,
      };
      const ms = this._opts.callTimeout ?? 30_000;
      call._timer = setTimeout(() => this._failCall(call, new CallTimeout(method, ms)), ms);
      this._calls.set(id, call);
      if (this._phase === "ready") this._sendCall(call);
      else this._queue.push(id);
    });
  }

  private _sendCall(call: PendingCall): void {
    for (const cap of call._requires) {
      if (!this.supports(cap)) {
        this._failCall(call, new UnsupportedError(cap));
        return;
      }
    }
    // Exactly-once writes: a generated key stays with the call across resends.
    if (this.supports("idempotency")) {
      if (call._mutating && call.body.idempotency_key === undefined) call.body.idempotency_key = this._ids.next();
    } else if (call._resent) {
      // A server without it would ignore the key: a resend could apply twice.
      this._failCall(call, new ConnectionLost("connection lost with the call in flight"));
      return;
    }
    call._sent = true;
    this._send(FrameType.CALL, 0, call.body);
  }

  private _failCall(call: PendingCall, err: SodpError): void {
    if (!this._calls.delete(call.id)) return;
    clearTimeout(call._timer);
    const i = this._queue.indexOf(call.id);
    if (i >= 0) this._queue.splice(i, 1);
    call.reject(err);
  }

  private _write(method: string, args: Record<string, unknown>, opts?: WriteOptions): Promise<CallResult> {
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
    return this._write("state.set", { state: key, value }, opts);
  }

  /** Deep merge: objects merge recursively; arrays, scalars and null replace. */
  patch(key: string, partial: Record<string, unknown>, opts?: WriteOptions): Promise<CallResult> {
    return this._write("state.patch", { state: key, patch: partial }, opts);
  }

  /** Set one location by JSON Pointer (`/a/b`, `/list/-`), creating intermediates. */
  setIn(key: string, path: string, value: unknown, opts?: WriteOptions): Promise<CallResult> {
    return this._write("state.set_in", { state: key, path, value }, opts);
  }

  delete(key: string, opts?: WriteOptions): Promise<CallResult> {
    return this._write("state.delete", { state: key }, opts);
  }

  /** `setIn`, and the server removes the path when this session ends. */
  presence(key: string, path: string, value: unknown): Promise<CallResult> {
    return this._write("state.presence", { state: key, path, value });
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
    return this.call("state.keys", opts, undefined, ["read"]);
  }

  /** Extension `read`: a key's retained changes after `sinceVersion`. */
  history(
    key: string,
    opts: { sinceVersion?: number; limit?: number } = {},
  ): Promise<{ entries: Array<{ version: number; ops: DeltaOp[] }>; complete: boolean }> {
    // Fields left undefined are not sent (the encoder's `ignoreUndefined`).
    return this.call("state.history", { state: key, since_version: opts.sinceVersion, limit: opts.limit }, undefined, ["read"]);
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
