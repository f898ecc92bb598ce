/**
 * dnsperf: mailstack's DNS server beside BIND serving the same zones (rendered with renderZone),
 * both on loopback. Not a test (no timing asserts anywhere); run it by hand:
 *
 *   node_modules/.bin/node -r ts-node/register/transpile-only test/dns/bench.ts [seconds] [rounds]
 *
 * Each mailstack server runs in its own process from JavaScript transpiled into
 * node_modules/.cache/mailstack-dnsperf (as the container runs compiled JavaScript; a ts-node
 * process would carry the TypeScript compiler's heap), with NODE_ENV=production.
 *
 * Prints queries/s and CPU time per query (from /proc, so it holds even on a busy machine) per
 * round and server, then a JSON summary with medians and each round's ratio to BIND. Rounds
 * alternate the servers so a busy machine hurts both alike. DNSPERF_ARGS sets dnsperf's options
 * (default: the team benchmark's load, test/helpers/dns-bench-config.ts, which also gives the
 * query mix); MIX=unique sends only fresh NXDOMAIN names (nothing cacheable); THREADS=1,2 runs
 * one mailstack server per variant: a UDP thread count (empty: the server's default), each
 * optionally with environment settings and node options of its own ("1,1:FOO=1,:--some-flag");
 * BASELINE=<git revision> adds a server built from that revision's sources (read with git show;
 * the working tree is not touched). Each round waits until the machine is quiet (see `quiet`),
 * since other work on a 2-core machine swamps any difference between servers.
 */
import { execFile, execFileSync, spawn } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import type { MailConfig } from "../../config/schema";
import { buildZones, renderZone } from "../../dns/zone";
import { DNSPERF_LOAD, dnsQueryFile } from "../helpers/dns-bench-config";
import { prng } from "../helpers/prng";
import { devConfig, freePort, namedOptions, startNamed, tempDir } from "./helpers";

const REPO = path.resolve(__dirname, "..", "..");
const NODE = path.join(REPO, "node_modules", ".bin", "node");
const BUILD = path.join(REPO, "node_modules", ".cache", "mailstack-dnsperf");

/**
 * Transpiles what the DNS service needs (dns/, lib/, config/) to CommonJS under `into`, from the
 * working tree or, with `rev`, from that git revision (BASELINE=HEAD compares with it).
 */
function build(into: string, rev?: string): void {
  const ts = require("typescript") as typeof import("typescript");
  rmSync(into, { recursive: true, force: true });
  for (const dir of ["dns", "lib", "config"]) {
    const files = rev
      ? execFileSync("git", ["ls-tree", "--name-only", `${rev}:${dir}`], { cwd: REPO, encoding: "utf8" }).split("\n")
      : readdirSync(path.join(REPO, dir));
    for (const f of files) {
      if (!f.endsWith(".ts") || f.endsWith(".d.ts")) continue;
      const src = rev
        ? execFileSync("git", ["show", `${rev}:${dir}/${f}`], { cwd: REPO, encoding: "utf8" })
        : readFileSync(path.join(REPO, dir, f), "utf8");
      const out = ts.transpileModule(src, {
        fileName: `${dir}/${f}`,
        compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2023, esModuleInterop: true, resolveJsonModule: true },
      });
      mkdirSync(path.join(into, dir), { recursive: true });
      writeFileSync(path.join(into, dir, f.replace(/\.ts$/, ".js")), out.outputText);
    }
  }
}

interface Server {
  pid: number;
  port: number;
  stop(): Promise<void>;
}

/** A DNS service in its own process from the transpiled JavaScript; `threads` as udpThreads. */
function startServer(
  config: MailConfig,
  threads: number | undefined,
  from = BUILD,
  extraEnv: Record<string, string> = {},
  nodeArgs: string[] = [],
): Promise<Server> {
  const script = `
    const { startDns } = require(${JSON.stringify(path.join(from, "dns"))});
    const { silentLogger } = require(${JSON.stringify(path.join(from, "lib", "log"))});
    const t = process.env.DNS_THREADS;
    startDns(JSON.parse(process.env.DNS_CONFIG), { log: silentLogger, ...(t ? { udpThreads: Number(t) } : {}) }).then(
      (s) => {
        process.stdout.write(s.listeners[0].port + "\\n");
        process.on("SIGTERM", () => s.close().then(() => process.exit(0)));
      },
      (e) => { console.error(e); process.exit(1); },
    );`;
  const env = {
    ...process.env,
    NODE_ENV: "production",
    DNS_CONFIG: JSON.stringify(config),
    DNS_THREADS: threads ? String(threads) : "",
    ...extraEnv,
  };
  const child = spawn(NODE, [...nodeArgs, "-e", script], { env, stdio: ["ignore", "pipe", "inherit"] });
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  return new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`DNS server exited with ${code}`)));
    child.stdout!.once("data", (d: Buffer) =>
      resolve({
        pid: child.pid!,
        port: Number(d.toString().trim()),
        stop: async () => {
          child.kill("SIGTERM");
          await exited;
        },
      }),
    );
  });
}

function dnsperf(port: number, file: string, seconds: number): Promise<{ qps: number; lost: number; latencyMs: number; out: string }> {
  return new Promise((resolve, reject) => {
    execFile(
      "dnsperf",
      [
        "-s",
        "127.0.0.1",
        "-p",
        String(port),
        "-d",
        file,
        "-l",
        String(seconds),
        ...(process.env.DNSPERF_ARGS === undefined ? DNSPERF_LOAD : process.env.DNSPERF_ARGS.split(" ").filter(Boolean)),
      ],
      { timeout: (seconds + 30) * 1000 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`dnsperf failed: ${err.message}\n${stdout}\n${stderr}`));
        const qps = Number(/Queries per second:\s+([\d.]+)/.exec(stdout)?.[1] ?? NaN);
        const lost = Number(/Queries lost:\s+(\d+)/.exec(stdout)?.[1] ?? NaN);
        const latencyMs = Number(/Average Latency \(s\):\s+([\d.]+)/.exec(stdout)?.[1] ?? NaN) * 1000;
        resolve({ qps, lost, latencyMs, out: stdout });
      },
    );
  });
}

/** CPU seconds (user, system) of a process so far, from /proc. */
function cpuSplit(pid: number): [number, number] {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return [Number(fields[11]) / 100, Number(fields[12]) / 100];
}

/** Share of CPU time idle over the next `ms` (all CPUs), from /proc/stat. */
async function idleShare(ms: number): Promise<number> {
  const read = () => {
    const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    return { idle: f[3]! + f[4]!, total: f.reduce((a, b) => a + b, 0) };
  };
  const a = read();
  await new Promise((r) => setTimeout(r, ms));
  const b = read();
  return (b.idle - a.idle) / Math.max(1, b.total - a.total);
}

/**
 * Waits (up to QUIET_MAX seconds, default 120; QUIET_MAX=0 turns it off) until the machine is at
 * least 90 % idle for a second, so that a round is not measured while other work (another
 * benchmark) runs. Returns the seconds waited, or -1 if it never got quiet.
 */
async function quiet(): Promise<number> {
  const max = Number(process.env.QUIET_MAX ?? 120);
  const started = Date.now();
  while ((Date.now() - started) / 1000 < max) {
    if ((await idleShare(1000)) >= 0.9) return Math.round((Date.now() - started) / 1000) - 1;
  }
  return max > 0 ? -1 : 0;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main() {
  const seconds = Number(process.argv[2] ?? 10);
  const rounds = Number(process.argv[3] ?? 1);
  const tmp = tempDir("mailstack-dnsperf-");
  // rateLimit 0: a benchmark measures serving, not the limiter (the dev stack trusts loopback anyway).
  const config = devConfig(path.join(tmp.dir, "data"), { dns: { rateLimit: 0 } });
  build(BUILD);
  const variants = (process.env.THREADS ?? "").split(",").filter(Boolean);
  const servers = new Map<string, Server>();
  const baseline = process.env.BASELINE;
  if (baseline) {
    build(`${BUILD}-baseline`, baseline);
    const c = devConfig(path.join(tmp.dir, "data-baseline"), { dns: { rateLimit: 0 } });
    servers.set(`baseline(${baseline})`, await startServer(c, undefined, `${BUILD}-baseline`));
  }
  // A variant is a thread count (empty: the default), then, after colons, environment settings
  // and node options for that server: "1", "2:FOO=1", "1:--test-udp-no-try-send", ":FOO=1".
  for (const [i, v] of (variants.length ? variants : [""]).entries()) {
    const [t, ...extra] = v.split(":");
    const c = devConfig(path.join(tmp.dir, `data${i}`), { dns: { rateLimit: 0 } });
    const env = Object.fromEntries(extra.filter((e) => !e.startsWith("-")).map((e) => e.split("=") as [string, string]));
    const args = extra.filter((e) => e.startsWith("-"));
    servers.set(v === "" ? "mailstack" : `mailstack/${v}`, await startServer(c, t ? Number(t) : undefined, BUILD, env, args));
  }

  // BIND with minimal-responses, as the team benchmark (bench/refs/bind.ts) runs it.
  const zoneConf = buildZones(config)
    .map((z) => {
      writeFileSync(path.join(tmp.dir, `${z.origin}.zone`), renderZone(z));
      return `zone "${z.origin}" { type primary; file "${z.origin}.zone"; };`;
    })
    .join("\n");
  const bindPort = await freePort();
  const named = await startNamed(tmp.dir, `${namedOptions("minimal-responses yes;")}\n${zoneConf}\n`, bindPort, config.domain);
  // MIX=unique: every query a fresh NXDOMAIN name, the answer cache's worst case.
  const qfile = path.join(tmp.dir, "queries.txt");
  writeFileSync(
    qfile,
    process.env.MIX === "unique"
      ? Array.from({ length: 1_000_000 }, (_, i) => `u${i.toString(36)}.lx.com A\n`).join("")
      : dnsQueryFile(20_000, prng(53)),
  );

  const names = ["bind", ...servers.keys()];
  const results: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  const latency: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  const cpuPerQuery: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  const ratios: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  try {
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? names : [...names].reverse();
      for (const who of order) {
        const pid = who === "bind" ? named.pid : servers.get(who)!.pid;
        const waited = await quiet();
        if (waited !== 0)
          console.log(waited < 0 ? "  (the machine stayed busy: measuring anyway)" : `  (waited ${waited} s for a quiet machine)`);
        const [u0, s0] = cpuSplit(pid);
        const res = await dnsperf(who === "bind" ? bindPort : servers.get(who)!.port, qfile, seconds);
        const [u1, s1] = cpuSplit(pid);
        const n = res.qps * seconds;
        const us = ((u1 - u0 + (s1 - s0)) / n) * 1e6;
        results[who]!.push(res.qps);
        latency[who]!.push(res.latencyMs);
        cpuPerQuery[who]!.push(us);
        console.log(
          `round ${r + 1} ${who}: ${res.qps.toFixed(0)} q/s, lost ${res.lost}, avg latency ${res.latencyMs.toFixed(3)} ms, ${us.toFixed(1)} CPU-µs/query (user ${(((u1 - u0) / n) * 1e6).toFixed(1)})`,
        );
      }
      for (const n of names) ratios[n]!.push(results[n]![r]! / results.bind![r]!);
    }
  } finally {
    await named.stop();
    for (const s of servers.values()) await s.stop();
    tmp.cleanup();
  }
  const summary = Object.fromEntries(
    names.map((n) => [
      n,
      {
        qpsMedian: Math.round(median(results[n]!)),
        qpsBest: Math.round(Math.max(...results[n]!)),
        ratioMedian: Number(median(ratios[n]!).toFixed(3)),
        latencyMsMedian: Number(median(latency[n]!).toFixed(2)),
        cpuUsPerQueryMedian: Number(median(cpuPerQuery[n]!).toFixed(1)),
      },
    ]),
  );
  console.log(JSON.stringify({ seconds, rounds, summary, raw: results }));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
