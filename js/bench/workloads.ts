/** The benchmark: deltas applied per second, ours vs the reference algorithm, same run, same inputs. */
import { applyOps, type DeltaOp } from "../packages/client/src/delta.ts";
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

/** Apply as many deltas as fit in `ms`, each to the previous result (as a client does). Deltas are built beforehand. */
function measure(apply: (v: unknown, ops: DeltaOp[]) => unknown, start: unknown, delta: (i: number) => DeltaOp[], ms: number): number {
  const deltas = Array.from({ length: 1024 }, (_, i) => delta(i));
  let v = start;
  for (let i = 0; i < 20; i++) v = apply(v, deltas[i] as DeltaOp[]); // warm-up
  let n = 0;
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < ms) {
    for (let k = 0; k < 8; k++) v = apply(v, deltas[n++ & 1023] as DeltaOp[]);
    t = performance.now();
  }
  if (v === undefined) throw new Error("unreachable"); // keep `v` alive
  return (n / (t - t0)) * 1000;
}

export function runBench(ms = 1000): Row[] {
  const rows: Row[] = [];
  for (const w of [object100(1), map10k(1), object100(10), map10k(10)]) {
    rows.push({ workload: w.name, impl: "ours", deltasPerSec: measure(applyOps, w.value, w.delta, ms) });
    for (const [name, clone] of Object.entries(clones)) {
      rows.push({
        workload: w.name,
        impl: name,
        deltasPerSec: measure((v, ops) => referenceApplyOps(v, ops, clone), w.value, w.delta, ms),
      });
    }
  }
  return rows;
}

export function format(rows: Row[], where: string): string {
  const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
  const lines = [`deltas applied per second — ${where}`, "  reference algorithm = deep clone per op, with each of the usual clones"];
  const byWorkload = new Map<string, Row[]>();
  for (const r of rows) byWorkload.set(r.workload, [...(byWorkload.get(r.workload) ?? []), r]);
  for (const [name, rs] of byWorkload) {
    const ours = rs.find((r) => r.impl === "ours") as Row;
    lines.push(`  ${name}: ours ${fmt(ours.deltasPerSec)}/s`);
    for (const r of rs) {
      if (r !== ours)
        lines.push(`      vs reference (${r.impl}) ${fmt(r.deltasPerSec)}/s → ${(ours.deltasPerSec / r.deltasPerSec).toFixed(1)}×`);
    }
  }
  return lines.join("\n");
}
