/**
 * What every view shares: the client (the project's own `@sodp/client`,
 * connected to `/inspector/ws`), the server's last `admin.stats`, and the
 * writer lookup (`admin.writers`, batched).
 */

import { CallError, type SodpClient } from "@sodp/client";

/** A CALL's answer exactly as the server gave it (RESULT fields, or the failure's code and `data`). */
export interface Answer {
  success: boolean;
  code?: number;
  data: unknown;
  extra?: Record<string, unknown>;
}

export interface Writer {
  version: number;
  session: number;
  subject: string | null;
  method: string;
  at: number;
}

export interface Stats {
  connections: number;
  keys: number;
  version: number;
  counters: Record<string, number>;
  memory: { used: number; values: number; history: number; max: number; rss: number | null };
  storage: { engine: string; durable: boolean; ready: boolean; problem: string | null };
  cluster: { mode: string; redis?: string; nodes: Array<{ addr?: string; id?: string; self: boolean; alive: boolean }> };
  inspector: { enabled: boolean; writes: boolean; public: boolean; writers_recorded: boolean };
  server: { version: string; commit: string; started_at: number; now: number; uptime_ms: number };
}

export class App {
  stats: Stats | undefined;
  private readonly _writers = new Map<number, Writer | null>();
  private readonly _wanted = new Set<number>();
  private readonly _waiters = new Set<() => void>();
  private _flush: ReturnType<typeof setTimeout> | undefined;

  constructor(readonly client: SodpClient) {}

  /** A CALL whose failure is an answer too (never thrown): what the server said, verbatim. */
  async ask(method: string, args: Record<string, unknown>): Promise<Answer> {
    try {
      return { success: true, data: await this.client.call(method, args) };
    } catch (err) {
      if (err instanceof CallError) {
        const data = err.message.replace(/^\[SODP\] call failed: /, "");
        return { success: false, code: err.code, data, extra: { ...err.result } };
      }
      return { success: false, data: String(err instanceof Error ? err.message : err) };
    }
  }

  /** The writer of `version` if known (`null`: asked, unknown; `undefined`: not yet known — `onWriters` fires when it is). */
  writer(version: number): Writer | null | undefined {
    const w = this._writers.get(version);
    if (w === undefined && !this._wanted.has(version)) {
      this._wanted.add(version);
      this._flush ??= setTimeout(() => void this._lookup(), 150);
    }
    return w;
  }

  /** Called after each batch of writers arrives; returns the unsubscribe function. */
  onWriters(fn: () => void): () => void {
    this._waiters.add(fn);
    return () => {
      this._waiters.delete(fn);
    };
  }

  private async _lookup(): Promise<void> {
    this._flush = undefined;
    const versions = [...this._wanted].slice(0, 1000);
    for (const v of versions) this._wanted.delete(v);
    const a = await this.ask("admin.writers", { versions });
    if (!a.success) return;
    const found = new Map<number, Writer>();
    for (const w of (a.data as { writers: Writer[] }).writers) found.set(Number(w.version), w);
    for (const v of versions) this._writers.set(v, found.get(v) ?? null);
    if (this._writers.size > 20_000) this._writers.clear(); // bounded
    for (const fn of [...this._waiters]) fn();
    if (this._wanted.size > 0) this._flush ??= setTimeout(() => void this._lookup(), 150);
  }
}

export function writerLabel(w: Writer | null | undefined): string {
  if (w === undefined) return "…";
  if (w === null) return "unknown";
  return `#${w.session}${w.subject ? ` ${w.subject}` : ""}`;
}

/** A view: built once, told when it is shown and hidden (it polls only while shown). */
export interface View {
  readonly name: string;
  readonly root: HTMLElement;
  show(): void;
  hide(): void;
}
