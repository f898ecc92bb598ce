/**
 * Process memory from /proc: RSS (what `ps` shows) and PSS (RSS with shared pages divided among
 * the processes sharing them, the fair number for multi-process servers like Postfix and
 * Dovecot, whose children share libraries). A sampler records the peak of a process tree.
 */
import { readdirSync, readFileSync } from "node:fs";

export interface Mem {
  /** Sum of VmRSS over the processes, bytes. */
  rss: number;
  /** Sum of Pss over the processes, bytes. */
  pss: number;
  processes: number;
}

function readStat(pid: number): { ppid: number } | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    // comm may contain spaces and parentheses: fields start after the last ')'.
    const rest = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return { ppid: Number(rest[1]) };
  } catch {
    return null;
  }
}

/** `pid` and every descendant of it. */
export function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const p = Number(name);
    const st = readStat(p);
    if (!st) continue;
    const list = children.get(st.ppid) ?? [];
    list.push(p);
    children.set(st.ppid, list);
  }
  const out: number[] = [];
  const stack = [pid];
  while (stack.length) {
    const p = stack.pop()!;
    out.push(p);
    for (const c of children.get(p) ?? []) stack.push(c);
  }
  return out;
}

function kbField(text: string, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
  return m ? Number(m[1]) * 1024 : 0;
}

export function memOf(pids: number[]): Mem {
  let rss = 0;
  let pss = 0;
  let processes = 0;
  for (const pid of pids) {
    try {
      const status = readFileSync(`/proc/${pid}/status`, "utf8");
      if (/^State:\s+Z/m.test(status)) continue;
      rss += kbField(status, "VmRSS");
      try {
        pss += kbField(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"), "Pss");
      } catch {
        pss += kbField(status, "VmRSS");
      }
      processes++;
    } catch {
      // gone
    }
  }
  return { rss, pss, processes };
}

/** The kernel's own peak RSS of one process (VmHWM), bytes. */
export function peakRssOf(pid: number): number {
  try {
    return kbField(readFileSync(`/proc/${pid}/status`, "utf8"), "VmHWM");
  } catch {
    return 0;
  }
}

/** Samples a process tree's memory every `intervalMs` and keeps the peak. */
export class MemSampler {
  private timer: NodeJS.Timeout | null = null;
  peak: Mem = { rss: 0, pss: 0, processes: 0 };
  last: Mem = { rss: 0, pss: 0, processes: 0 };

  constructor(
    private readonly pids: () => number[],
    private readonly intervalMs = 250,
  ) {}

  sample(): Mem {
    const m = memOf(this.pids());
    this.last = m;
    if (m.rss > this.peak.rss) this.peak = { ...this.peak, rss: m.rss, processes: Math.max(this.peak.processes, m.processes) };
    if (m.pss > this.peak.pss) this.peak = { ...this.peak, pss: m.pss };
    return m;
  }

  start(): this {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
    return this;
  }

  stop(): Mem {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.sample();
    return this.peak;
  }
}

export const MB = 1024 * 1024;
