/**
 * The benchmark: deltas applied per second, ours vs the reference algorithm,
 * same run, same inputs. Besides the reducers alone it measures what a user
 * gets from `SodpClient` (each DELTA frame decoded, applied, and its value
 * read by a watch callback), and the floor any plain-object update of a big
 * map pays: one shallow copy of its top-level keys.
 */
import { SodpClient, type WebSocketLike } from "../packages/client/src/client.ts";
import { applyOps, type DeltaOp } from "../packages/client/src/delta.ts";
import { encodeFrame, FrameType } from "../packages/client/src/frames.ts";
import { clones, referenceApplyOps } from "./reference-reducer.ts";

export interface Row {
  workload: string;
  impl: string;
  deltasPerSec: number;
}

interface Workload {
  name: string;
  value: Record<string, unknown>;
  delta: (i: number) => DeltaOp[];
}

function object100(opsPerDelta: number): Workload {
  const value: Record<string, number> = {};
  for (let i = 0; i < 100; i++) value[`field${i}`] = i;
  const delta = (i: number): DeltaOp[] =>
    Array.from({ length: opsPerDelta }, (_, j) => ({ op: "UPDATE", path: `/field${(i + j * 13) % 100}`, value: i }));
  return { name: `100-field object, ${opsPerDelta} op/delta`, value, delta };
}

function map10k(opsPerDelta: number): Workload {
  const value: Record<string, unknown> = {};
  for (let i = 0; i < 10_000; i++) value[`player${i}`] = { x: i, y: -i, name: `p${i}`, tags: ["a", "b"] };
  const delta = (i: number): DeltaOp[] =>
    Array.from({ length: opsPerDelta }, (_, j) => ({ op: "UPDATE", path: `/player${(i * 7919 + j * 31) % 10_000}/x`, value: i }));
  return { name: `10,000-entry map, ${opsPerDelta} op/delta`, value, delta };
}

/**
 * One implementation under measurement. `run(ms)` applies deltas for about
 * `ms` and returns how many it applied and the time that took; state (the
 * current value, the client) carries over between calls, each delta applied
 * to the previous result as a client does.
 */
interface Runner {
  impl: string;
  run(ms: number): [count: number, elapsed: number];
  close?(): void;
}

/** A reducer fed deltas built beforehand. */
function reducer(impl: string, apply: (v: unknown, ops: DeltaOp[]) => unknown, w: Workload): Runner {
  const deltas = Array.from({ length: 1024 }, (_, i) => w.delta(i));
  let v: unknown = w.value;
  let n = 0;
  for (let i = 0; i < 20; i++) v = apply(v, deltas[n++ & 1023] as DeltaOp[]); // warm-up
  return {
    impl,
    run(ms) {
      let count = 0;
      const t0 = performance.now();
      let t = t0;
      while (t - t0 < ms) {
        for (let k = 0; k < 8; k++) v = apply(v, deltas[n++ & 1023] as DeltaOp[]);
        count += 8;
        t = performance.now();
      }
      if (v === undefined) throw new Error("unreachable"); // keep `v` alive
      return [count, t - t0];
    },
  };
}

/** A socket the benchmark drives by hand: what the client sends is dropped. */
class BenchSocket implements WebSocketLike {
  static last: BenchSocket | undefined;
  binaryType = "arraybuffer";
  readyState = 1;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  constructor(_url: string) {
    BenchSocket.last = this;
  }
  send(): void {}
  close(): void {}
  push(type: number, body: unknown): void {
    this.onmessage?.({ data: encodeFrame(type, 10, 0, body) });
  }
}

/**
 * What a user gets from `SodpClient`: DELTA frames (encoded beforehand, in
 * untimed batches) fed to the client's socket handler — decoded, routed,
 * applied — and a watch callback that reads a member of each new value.
 */
function viaClient(w: Workload): Runner {
  const client = new SodpClient("ws://bench", { WebSocket: BenchSocket, reconnect: false });
  const ws = BenchSocket.last as BenchSocket;
  ws.push(FrameType.HELLO, { protocol: "sodp", version: "1.0", auth: false, capabilities: {} });
  let observed = 0;
  client.watch<Record<string, unknown>>("bench", (v) => {
    if (v && (v.field0 !== undefined || v.player0 !== undefined)) observed++;
  });
  ws.push(FrameType.STATE_INIT, { state: "bench", version: 1, value: w.value, initialized: true });
  let version = 1;
  let fed = 0;
  const batch = () =>
    Array.from({ length: 64 }, () => encodeFrame(FrameType.DELTA, 10, 0, { state: "bench", version: ++version, ops: w.delta(version) }));
  const feed = (frames: Uint8Array[]) => {
    for (const f of frames) ws.onmessage?.({ data: f });
    fed += frames.length;
  };
  feed(batch().slice(0, 20)); // warm-up
  return {
    impl: "ours via SodpClient",
    run(ms) {
      let count = 0;
      let spent = 0;
      while (spent < ms) {
        const frames = batch();
        const t0 = performance.now();
        feed(frames);
        spent += performance.now() - t0;
        count += frames.length;
      }
      if (observed !== fed + 1) throw new Error(`the callback saw ${observed} values for ${fed} deltas`);
      return [count, spent];
    },
    close: () => client.close(),
  };
}

/** The floor of any plain-object update of a big map: one shallow copy of its top-level keys (key list known, no op applied). */
function floorCopy(w: Workload): (v: unknown) => unknown {
  const keys = Object.keys(w.value);
  return (v) => {
    const src = v as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i] as string;
      out[k] = src[k];
    }
    return out;
  };
}

/**
 * `ms` per implementation, in 10 interleaved slices: a machine whose load
 * changes during the run (other builds) slows every implementation alike,
 * so the ratios hold even when the absolute figures do not. The order
 * rotates every slice, so no implementation always runs right after the
 * one leaving the most garbage (a deep clone per op) for the collector.
 */
export function runBench(ms = 1000): Row[] {
  const rows: Row[] = [];
  const slices = 10;
  for (const w of [object100(1), map10k(1), object100(10), map10k(10)]) {
    const runners = [
      reducer("ours", applyOps, w),
      viaClient(w),
      reducer("floor", floorCopy(w), w),
      ...Object.entries(clones).map(([name, clone]) => reducer(name, (v, ops) => referenceApplyOps(v, ops, clone), w)),
    ];
    const totals = runners.map(() => [0, 0]);
    for (let s = 0; s < slices; s++) {
      for (let j = 0; j < runners.length; j++) {
        const i = (s + j) % runners.length;
        const [count, elapsed] = (runners[i] as Runner).run(ms / slices);
        const t = totals[i] as number[];
        t[0] = (t[0] as number) + count;
        t[1] = (t[1] as number) + elapsed;
      }
    }
    runners.forEach((r, i) => {
      r.close?.();
      const [count, elapsed] = totals[i] as [number, number];
      rows.push({ workload: w.name, impl: r.impl, deltasPerSec: (count / elapsed) * 1000 });
    });
  }
  return rows;
}

export function format(rows: Row[], where: string): string {
  const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
  const lines = [`deltas applied per second — ${where}`, "  reference algorithm = deep clone per op, with each of the usual clones"];
  const byWorkload = new Map<string, Row[]>();
  for (const r of rows) byWorkload.set(r.workload, [...(byWorkload.get(r.workload) ?? []), r]);
  for (const [name, rs] of byWorkload) {
    const find = (impl: string) => rs.find((r) => r.impl === impl) as Row;
    const ours = find("ours");
    const client = find("ours via SodpClient");
    const floor = find("floor");
    const refs = rs.filter((r) => r !== ours && r !== client && r !== floor);
    const vs = (r: Row) => refs.map((ref) => `${(r.deltasPerSec / ref.deltasPerSec).toFixed(1)}×`).join(" / ");
    lines.push(`  ${name}: ours ${fmt(ours.deltasPerSec)}/s`);
    for (const r of refs) {
      lines.push(`      vs reference (${r.impl}) ${fmt(r.deltasPerSec)}/s → ${(ours.deltasPerSec / r.deltasPerSec).toFixed(1)}×`);
    }
    lines.push(`      ours via SodpClient (frame decoded, applied, value read) ${fmt(client.deltasPerSec)}/s → ${vs(client)}`);
    lines.push(`      floor (one shallow copy of the top-level keys) ${fmt(floor.deltasPerSec)}/s → ${vs(floor)}`);
  }
  lines.push("  (× after the last two: against the reference's recursive clone / JSON round trip / structuredClone)");
  return lines.join("\n");
}
