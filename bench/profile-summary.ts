/**
 * Summarises V8 CPU profiles (`node --cpu-prof`, as `npm run bench -- --profile` writes them):
 * the heaviest functions by self time, by inclusive time, and the heaviest source files.
 *
 *   node -r ts-node/register/transpile-only bench/profile-summary.ts FILE.cpuprofile... [--top N]
 */
import { readFileSync } from "node:fs";
import * as path from "node:path";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

function label(cf: CallFrame): string {
  const file = cf.url
    ? cf.url
        .replace(/^file:\/\//, "")
        .replace(/.*\/(node_modules\/)/, "$1")
        .replace(/.*mailstack-bench(-\d+)?\//, "")
    : "";
  return `${cf.functionName || "(anonymous)"} ${file ? `${file}:${cf.lineNumber + 1}` : ""}`.trim();
}

function fileOf(cf: CallFrame): string {
  if (!cf.url) return cf.functionName.startsWith("(") ? cf.functionName : "(native)";
  const u = cf.url.replace(/^file:\/\//, "");
  const nm = u.indexOf("node_modules/");
  if (nm >= 0)
    return u
      .slice(nm)
      .split("/")
      .slice(0, u.slice(nm).startsWith("node_modules/@") ? 3 : 2)
      .join("/");
  if (u.startsWith("node:")) return u;
  return u.replace(/.*mailstack-bench(-\d+)?\//, "").replace(/.*\/work\/main\//, "");
}

export function summarise(file: string, top = 25): string {
  const p = JSON.parse(readFileSync(file, "utf8")) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const selfUs = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + (p.timeDeltas[i] ?? 0));
  }
  const total = [...selfUs.values()].reduce((a, b) => a + b, 0);
  const self = new Map<string, number>();
  const incl = new Map<string, number>();
  const files = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const n = byId.get(id)!;
    const l = label(n.callFrame);
    self.set(l, (self.get(l) ?? 0) + us);
    const f = fileOf(n.callFrame);
    files.set(f, (files.get(f) ?? 0) + us);
    // Inclusive: every distinct function on the stack gets the sample once.
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const lab = label(byId.get(cur)!.callFrame);
      if (seen.has(lab)) continue;
      seen.add(lab);
      incl.set(lab, (incl.get(lab) ?? 0) + us);
    }
  }
  const pct = (us: number) => `${((100 * us) / total).toFixed(1).padStart(5)}%`;
  const ms = (us: number) => `${(us / 1000).toFixed(0).padStart(7)} ms`;
  const list = (m: Map<string, number>, n: number) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([k, v]) => `  ${pct(v)} ${ms(v)}  ${k}`)
      .join("\n");
  const idle = self.get("(idle)") ?? 0;
  return [
    `${path.basename(file)}: ${(total / 1000).toFixed(0)} ms sampled, ${pct(total - idle).trim()} busy`,
    `top self time:\n${list(self, top)}`,
    `top inclusive time:\n${list(incl, top)}`,
    `by file/package (self):\n${list(files, 15)}`,
  ].join("\n");
}

if (require.main === module) {
  const args = process.argv.slice(2);
  let top = 25;
  const files: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--top") top = Number(args[++i]);
    else files.push(args[i]!);
  }
  for (const f of files) process.stdout.write(`${summarise(f, top)}\n\n`);
}
