/**
 * What every scenario gets: options, a temp root, result collectors, and starters for mailstack
 * service processes that are always stopped at the end (by PID), even when a scenario fails.
 */
import * as path from "node:path";
import { type RunOptions, type ServiceName, ServiceProcess } from "./mailstack";
import type { Mem } from "./procmem";
import type { Row, Skip } from "./report";

export interface MemoryRecord {
  /** mailstack service (`smtp`) or reference role (`postfix`, `dovecot`, `named`). */
  who: string;
  system: "mailstack" | "reference";
  /** The scenario it was measured in. */
  scenario: string;
  /** Bytes, summed over the processes (one for a mailstack service). */
  idleRss: number;
  peakRss: number;
  idlePss: number;
  peakPss: number;
  processes?: number;
}

export interface Ctx {
  quick: boolean;
  root: string;
  resultsDir: string;
  runtime: RunOptions["runtime"];
  /** When set, mailstack services run with --cpu-prof into this directory. */
  profileDir?: string;
  cert: { certFile: string; keyFile: string };
  rows: Row[];
  skipped: Skip[];
  findings: string[];
  memory: MemoryRecord[];
  versions: Record<string, string>;
  cleanups: Array<() => Promise<void>>;
}

/** Starts a mailstack service whose stop is registered with the context. */
export async function startService(ctx: Ctx, name: ServiceName, configFile: string, label: string): Promise<ServiceProcess> {
  const opts: RunOptions = {
    runtime: ctx.runtime,
    logFile: path.join(path.dirname(configFile), `${label}.${name}.log`),
  };
  if (ctx.profileDir) opts.cpuProfDir = path.join(ctx.profileDir, label);
  const sp = await ServiceProcess.start(name, configFile, opts);
  ctx.cleanups.push(() => sp.stop());
  return sp;
}

/** Records a mailstack service's idle memory (given) and its peak so far (sampled and VmHWM). */
export function recordService(ctx: Ctx, sp: ServiceProcess, scenario: string, idle: Mem): void {
  const peak = sp.peak();
  ctx.memory.push({
    who: sp.name,
    system: "mailstack",
    scenario,
    idleRss: idle.rss,
    idlePss: idle.pss,
    peakRss: peak.rss,
    peakPss: peak.pss,
    processes: 1,
  });
}

/** Records a reference server's memory (sums over its processes). */
export function recordReference(ctx: Ctx, who: string, scenario: string, idle: Mem, peak: Mem): void {
  ctx.memory.push({
    who,
    system: "reference",
    scenario,
    idleRss: idle.rss,
    idlePss: idle.pss,
    peakRss: Math.max(peak.rss, idle.rss),
    peakPss: Math.max(peak.pss, idle.pss),
    processes: Math.max(peak.processes, idle.processes),
  });
}

/** Registers any stop function (reference servers, sinks). */
export function onCleanup(ctx: Ctx, fn: () => Promise<void>): void {
  ctx.cleanups.push(fn);
}
