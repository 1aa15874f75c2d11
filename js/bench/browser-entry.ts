import { format, runBench } from "./workloads.ts";

(globalThis as Record<string, unknown>).sodpBench = (ms: number, where: string) => format(runBench(ms), where);
