/**
 * Process memory from /proc: RSS (what `ps` shows) and PSS (RSS with shared pages divided among
 * the processes sharing them, the fair number for multi-process servers like Postfix and
 * Dovecot, whose children share libraries). A sampler records the peak of a process tree.
 */
import { closeSync, openSync, readdirSync, readFileSync, readSync } from "node:fs";

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

/**
 * The resident set of a group of processes: how many distinct physical pages they hold
 * together, in bytes. Summing RSS counts a page shared by five processes (the node binary's
 * code, libc) five times; PSS divides it among its sharers, some of which may be outside the
 * group. This counts it once, which is what "the RSS of the whole stack" means when the stack is
 * several processes. It reads the page frame numbers from /proc/<pid>/pagemap, which needs root
 * (CAP_SYS_ADMIN); without it, null.
 */
export function residentUnion(pids: number[]): number | null {
  const PAGE = 4096;
  const frames = new Set<bigint>();
  const buf = Buffer.alloc(8 * 4096);
  for (const pid of pids) {
    let smaps: string;
    let fd: number;
    try {
      smaps = readFileSync(`/proc/${pid}/smaps`, "utf8");
      fd = openSync(`/proc/${pid}/pagemap`, "r");
    } catch {
      continue;
    }
    try {
      // Only mappings with resident pages: V8 reserves gigabytes of address space it never touches.
      for (const block of smaps.split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/)) {
        const m = /^([0-9a-f]+)-([0-9a-f]+) /.exec(block);
        const rss = /\nRss:\s+(\d+) kB/.exec(block);
        if (!m || !rss || rss[1] === "0" || block.includes("[vsyscall]")) continue;
        const first = Number.parseInt(m[1]!, 16) / PAGE;
        const end = Number.parseInt(m[2]!, 16) / PAGE;
        for (let page = first; page < end; page += 4096) {
          const n = Math.min(4096, end - page);
          const got = readSync(fd, buf, 0, n * 8, page * 8) / 8;
          for (let i = 0; i < got; i++) {
            const entry = buf.readBigUInt64LE(i * 8);
            if (entry >> 63n === 0n) continue; // not present (swapped or never touched)
            const pfn = entry & ((1n << 55n) - 1n);
            if (pfn === 0n) return null; // PFNs hidden: not root
            frames.add(pfn);
          }
        }
      }
    } finally {
      closeSync(fd);
    }
  }
  return frames.size * PAGE;
}

export const MB = 1024 * 1024;
