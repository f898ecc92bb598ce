/**
 * Benchmark results: one row per measured quantity, mailstack beside its reference, with the
 * ratio mailstack ÷ reference and, where the issue sets one, the goal and whether it was met.
 */
import { fmt } from "./util";

export interface Row {
  /** Scenario id, e.g. `smtp`. */
  scenario: string;
  /** What was measured, e.g. `1 KiB, 1 msg/connection`. */
  metric: string;
  unit: string;
  mailstack: number | null;
  reference: number | null;
  /** Reference software and version, e.g. `Postfix 3.7.11`. */
  refName: string;
  /** Which direction is good for this quantity. */
  better: "higher" | "lower";
  /** Goal on the ratio mailstack ÷ reference (≥ goal when higher is better, ≤ goal when lower). */
  goalRatio?: number;
  /** Goal on mailstack's own number (≤ for lower-is-better, ≥ otherwise). */
  goalAbsolute?: number;
  note?: string;
}

export interface Skip {
  scenario: string;
  reason: string;
}

export interface Results {
  date: string;
  quick: boolean;
  runtime: string;
  machine: { cpus: number; model: string; memMB: number; kernel: string; node: string; loadavg: { start: number[]; end: number[] } };
  versions: Record<string, string>;
  durationSeconds: number;
  rows: Array<Row & { ratio: number | null; met: boolean | null }>;
  skipped: Skip[];
  findings: string[];
}

export function ratioOf(r: Row): number | null {
  if (r.mailstack === null || r.reference === null || r.reference === 0 || !Number.isFinite(r.mailstack) || !Number.isFinite(r.reference))
    return null;
  return r.mailstack / r.reference;
}

export function metOf(r: Row): boolean | null {
  const ratio = ratioOf(r);
  const checks: boolean[] = [];
  if (r.goalRatio !== undefined) {
    if (ratio === null) return null;
    checks.push(r.better === "higher" ? ratio >= r.goalRatio : ratio <= r.goalRatio);
  }
  if (r.goalAbsolute !== undefined) {
    if (r.mailstack === null) return null;
    checks.push(r.better === "higher" ? r.mailstack >= r.goalAbsolute : r.mailstack <= r.goalAbsolute);
  }
  return checks.length ? checks.every(Boolean) : null;
}

function digitsFor(unit: string, v: number | null): number {
  if (v === null) return 0;
  if (unit === "ms" && Math.abs(v) < 100) return 1;
  if (unit === "MB") return 1;
  return Math.abs(v) < 10 ? 2 : 0;
}

export function markdown(res: Results): string {
  const out: string[] = [];
  out.push(`# mailstack benchmark, ${res.date}${res.quick ? " (--quick)" : ""}`);
  out.push("");
  out.push(
    `Machine: ${res.machine.cpus} CPU (${res.machine.model}), ${fmt(res.machine.memMB)} MB RAM, Linux ${res.machine.kernel}, Node ${res.machine.node}. ` +
      `mailstack runtime: ${res.runtime}. Run time ${fmt(res.durationSeconds)} s. ` +
      `Load average ${res.machine.loadavg.start.map((x) => x.toFixed(1)).join(" ")} at the start, ${res.machine.loadavg.end.map((x) => x.toFixed(1)).join(" ")} at the end` +
      `${res.machine.loadavg.start[0]! > 1 || res.machine.loadavg.end[0]! > 2.5 ? " (other work was running: expect noise)" : ""}.`,
  );
  out.push(
    `References: ${Object.entries(res.versions)
      .map(([k, v]) => `${k} ${v}`)
      .join(", ")}.`,
  );
  out.push("");
  out.push("Ratio = mailstack ÷ reference. ↑ = higher is better, ↓ = lower is better.");
  out.push("");
  out.push("| Scenario | Measure | Unit | mailstack | Reference | Ref. value | Ratio | Goal | Met |");
  out.push("|---|---|---|---:|---|---:|---:|---|:-:|");
  for (const r of res.rows) {
    const goal =
      r.goalRatio !== undefined
        ? `${r.better === "higher" ? "≥" : "≤"} ${r.goalRatio}×`
        : r.goalAbsolute !== undefined
          ? `${r.better === "higher" ? "≥" : "<"} ${r.goalAbsolute} ${r.unit}`
          : "";
    out.push(
      `| ${r.scenario} | ${r.metric}${r.note ? ` (${r.note})` : ""} | ${r.unit} ${r.better === "higher" ? "↑" : "↓"} | ${fmt(r.mailstack, digitsFor(r.unit, r.mailstack))} | ${r.refName} | ${fmt(
        r.reference,
        digitsFor(r.unit, r.reference),
      )} | ${r.ratio === null ? "–" : `${r.ratio.toFixed(2)}×`} | ${goal} | ${r.met === null ? "" : r.met ? "yes" : "**no**"} |`,
    );
  }
  if (res.skipped.length) {
    out.push("");
    out.push("Skipped:");
    for (const s of res.skipped) out.push(`- ${s.scenario}: ${s.reason}`);
  }
  if (res.findings.length) {
    out.push("");
    out.push("Notes:");
    for (const f of res.findings) out.push(`- ${f}`);
  }
  return `${out.join("\n")}\n`;
}
