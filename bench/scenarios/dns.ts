/**
 * DNS: `dnsperf` for 10 s (3 s with --quick) against mailstack's DNS service and against BIND
 * (`named`, authoritative only), both serving the zones mailstack builds from one stack config
 * (BIND gets them as master files from dns/zone.ts `renderZone`). The load and the query mix
 * (A, MX, TXT, SOA and fresh NXDOMAIN names) are test/helpers/dns-bench-config.ts's, which
 * test/dns/bench.ts uses too. Before the run, a sample of the queries is sent
 * to both servers and their answers compared (rcode, answer count, AA).
 */
import { createSocket } from "node:dgram";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { DNSPERF_LOAD, dnsQueryFile } from "../../test/helpers/dns-bench-config";
import { type Ctx, onCleanup, recordReference, recordService, startService } from "../lib/context";
import { benchUsers, stackConfig, writeStackConfig } from "../lib/mailstack";
import { MemSampler, memOf } from "../lib/procmem";
import { exec, freePort, log, prng, REPO, sleep } from "../lib/util";
import { BindInstance, type ZoneFile } from "../refs/bind";

/** The zones as BIND master files, rendered by mailstack's own dns/zone.ts from the same config. */
function renderZones(raw: Record<string, unknown>): ZoneFile[] {
  const { parseConfig } = require(path.join(REPO, "config", "schema")) as typeof import("../../config/schema");
  const zone = require(path.join(REPO, "dns", "zone")) as {
    buildZones(c: unknown): Array<{ origin: string }>;
    renderZone(z: unknown): string;
  };
  const config = parseConfig((raw as { config: Record<string, unknown> }).config);
  return zone.buildZones(config).map((z) => ({ origin: z.origin, text: zone.renderZone(z) }));
}

interface PerfResult {
  qps: number;
  lost: number;
  sent: number;
  latencyMs: number;
  raw: string;
}

async function dnsperf(port: number, file: string, seconds: number): Promise<PerfResult> {
  const r = await exec("dnsperf", ["-s", "127.0.0.1", "-p", String(port), "-d", file, "-l", String(seconds), ...DNSPERF_LOAD], {
    timeoutMs: (seconds + 30) * 1000,
  });
  const out = r.stdout + r.stderr;
  const num = (re: RegExp) => Number(re.exec(out)?.[1] ?? Number.NaN);
  const res = {
    qps: num(/Queries per second:\s+([\d.]+)/),
    sent: num(/Queries sent:\s+(\d+)/),
    lost: num(/Queries lost:\s+(\d+)/),
    latencyMs: num(/Average Latency \(s\):\s+([\d.]+)/) * 1000,
    raw: out,
  };
  if (!Number.isFinite(res.qps)) throw new Error(`dnsperf gave no result: ${out.slice(-1000)}`);
  return res;
}

/** Sends one query over UDP and returns a compact description of the answer. */
async function ask(port: number, name: string, type: string): Promise<string> {
  const packet = require("dns-packet") as typeof import("dns-packet");
  const sock = createSocket("udp4");
  try {
    const q = packet.encode({ type: "query", id: 7, flags: 0, questions: [{ name, type: type as "A" }] });
    const reply = await new Promise<Buffer>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("timeout")), 2000);
      sock.once("message", (m) => {
        clearTimeout(t);
        resolve(m);
      });
      sock.send(q, port, "127.0.0.1");
    });
    const d = packet.decode(reply);
    const answers = (d.answers ?? []).map((a) => `${a.type}`).sort();
    return `${(d as { rcode?: string }).rcode} aa=${Boolean((d.flags ?? 0) & (1 << 10))} an=[${answers.join(",")}] ns=${(d.authorities ?? []).length}`;
  } catch (err) {
    return `error ${(err as Error).message}`;
  } finally {
    sock.close();
  }
}

const SAMPLE: Array<[string, string]> = [
  ["mail.lx.com", "A"],
  ["lx.com", "MX"],
  ["lx.com", "TXT"],
  ["_dmarc.lx.com", "TXT"],
  ["lx.com", "SOA"],
  ["nosuchname.lx.com", "A"],
  ["mail.lx.com", "MX"],
];

export async function dnsScenario(ctx: Ctx): Promise<void> {
  const seconds = ctx.quick ? 3 : 10;
  const root = path.join(ctx.root, "dns");
  await fs.mkdir(root, { recursive: true });
  const users = await benchUsers(["lx"]);
  const opts = { dataDir: path.join(root, "mailstack", "data"), users, listen: { dns: 0 }, ...ctx.cert };
  const cfg = await writeStackConfig(path.join(root, "mailstack", "config.json"), opts);
  const qfile = path.join(root, "queries.txt");
  await fs.writeFile(qfile, dnsQueryFile(20_000, prng(53)));

  const ms = await startService(ctx, "dns", cfg, "dns");
  await sleep(300);
  const msIdle = ms.mem();
  const msPort = ms.port("dns");

  const zones = renderZones(stackConfig(opts));
  const bindPort = await freePort(true);
  const bind = new BindInstance(path.join(root, "bind"), bindPort, zones);
  onCleanup(ctx, () => bind.stop());
  await bind.start();

  const mismatches: string[] = [];
  for (const [name, type] of SAMPLE) {
    const a = await ask(msPort, name, type);
    const b = await ask(bindPort, name, type);
    if (a !== b) mismatches.push(`${name} ${type}: mailstack ${a} / BIND ${b}`);
  }
  if (mismatches.length) log(`  answers differ: ${mismatches.join("; ")}`);

  // Alternate the two servers (both stay up; only the one being measured gets queries), and
  // keep each one's best run: other load on the machine only ever makes a run slower.
  const rounds = 2;
  const msRuns: PerfResult[] = [];
  const bindRuns: PerfResult[] = [];
  await sleep(300);
  const bindIdle = memOf(bind.pids());
  const sampler = new MemSampler(() => bind.pids(), 200).start();
  for (let round = 0; round < rounds; round++) {
    log(`dns: mailstack, dnsperf ${seconds} s`);
    const a = await dnsperf(msPort, qfile, seconds);
    msRuns.push(a);
    log(`  mailstack: ${a.qps.toFixed(0)} q/s, lost ${a.lost}/${a.sent}, latency ${a.latencyMs.toFixed(2)} ms`);
    log(`dns: BIND, dnsperf ${seconds} s`);
    const b = await dnsperf(bindPort, qfile, seconds);
    bindRuns.push(b);
    log(`  BIND:      ${b.qps.toFixed(0)} q/s, lost ${b.lost}/${b.sent}, latency ${b.latencyMs.toFixed(2)} ms`);
  }
  const bindPeak = sampler.stop();
  recordService(ctx, ms, "dns", msIdle);
  recordReference(ctx, "named", "dns", bindIdle, bindPeak);
  await ms.stop();
  await bind.stop();
  const best = (xs: PerfResult[]) => xs.reduce((x, y) => (y.qps > x.qps ? y : x));
  const a = best(msRuns);
  const b = best(bindRuns);

  const refName = `BIND ${ctx.versions.bind ?? ""}`.trim();
  const notes: string[] = [];
  if (rounds > 1)
    notes.push(
      `best of ${rounds}: mailstack ${msRuns.map((r) => r.qps.toFixed(0)).join("/")}, BIND ${bindRuns.map((r) => r.qps.toFixed(0)).join("/")}`,
    );
  if (a.lost) notes.push(`mailstack lost ${a.lost} of ${a.sent}`);
  if (b.lost) notes.push(`BIND lost ${b.lost} of ${b.sent}`);
  if (mismatches.length) notes.push(`answers differ: ${mismatches.join("; ")}`);
  ctx.rows.push({
    scenario: "DNS (dnsperf)",
    metric: `A/MX/TXT/SOA/NXDOMAIN mix, ${seconds} s`,
    unit: "queries/s",
    mailstack: a.qps,
    reference: b.qps,
    refName,
    better: "higher",
    goalRatio: 1.0,
    ...(notes.length ? { note: notes.join("; ") } : {}),
  });
  ctx.rows.push({
    scenario: "DNS (dnsperf)",
    metric: "average latency",
    unit: "ms",
    mailstack: a.latencyMs,
    reference: b.latencyMs,
    refName,
    better: "lower",
  });
}
