/**
 * dnsperf: mailstack's DNS server beside BIND serving the same zones (rendered with renderZone),
 * both on loopback. Not a test (no timing asserts anywhere); run it by hand:
 *
 *   node_modules/.bin/node -r ts-node/register/transpile-only test/dns/bench.ts [seconds] [rounds]
 *
 * Prints queries/s and CPU time per query (from /proc, so it holds even on a busy machine) per
 * round and server, then a JSON summary. Rounds alternate the servers so a busy machine hurts
 * both alike. DNSPERF_ARGS adds dnsperf options (e.g. "-c 4 -q 200 -t 2", the team benchmark's);
 * MIX=unique sends only fresh NXDOMAIN names (nothing cacheable).
 */
import { execFile } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { startDns } from "../../dns";
import { renderZone } from "../../dns/zone";
import { silentLogger } from "../../lib/log";
import { devConfig, freePort, namedOptions, startNamed, tempDir } from "./helpers";

/**
 * The query mix (the same as the team benchmark's bench/scenarios/dns.ts): A 30 %, MX 20 %,
 * TXT 15 % (SPF, DMARC), SOA 10 %, NXDOMAIN 25 % with fresh random names, so the answer cache
 * cannot serve everything.
 */
function queryFile(n: number): string {
  let seed = 53;
  const rnd = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x80000000;
  };
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const x = rnd();
    if (x < 0.2) lines.push("mail.lx.com A");
    else if (x < 0.3) lines.push("ns1.lx.com A");
    else if (x < 0.5) lines.push("lx.com MX");
    else if (x < 0.58) lines.push("lx.com TXT");
    else if (x < 0.65) lines.push("_dmarc.lx.com TXT");
    else if (x < 0.75) lines.push("lx.com SOA");
    else lines.push(`nx${Math.floor(rnd() * 1e9).toString(36)}.lx.com A`);
  }
  return `${lines.join("\n")}\n`;
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
        ...(process.env.DNSPERF_ARGS ?? "").split(" ").filter(Boolean),
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

/** CPU seconds (user + system) a process has used so far, from /proc. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

async function main() {
  const seconds = Number(process.argv[2] ?? 10);
  const rounds = Number(process.argv[3] ?? 1);
  const tmp = tempDir("mailstack-dnsperf-");
  // rateLimit 0: a benchmark measures serving, not the limiter (the dev stack trusts loopback anyway).
  const config = devConfig(path.join(tmp.dir, "data"), { dns: { rateLimit: 0 } });
  const ours = await startDns(config, { log: silentLogger });
  const ourPort = ours.listeners[0]!.port;

  const zoneConf = ours
    .zones()
    .map((z) => {
      writeFileSync(path.join(tmp.dir, `${z.origin}.zone`), renderZone(z));
      return `zone "${z.origin}" { type primary; file "${z.origin}.zone"; };`;
    })
    .join("\n");
  const bindPort = await freePort();
  const named = await startNamed(tmp.dir, `${namedOptions()}\n${zoneConf}\n`, bindPort, config.domain);
  // MIX=unique: every query a fresh NXDOMAIN name, the answer cache's worst case.
  const qfile = path.join(tmp.dir, "queries.txt");
  writeFileSync(
    qfile,
    process.env.MIX === "unique"
      ? Array.from({ length: 1_000_000 }, (_, i) => `u${i.toString(36)}.lx.com A\n`).join("")
      : queryFile(20_000),
  );

  const results: Record<string, number[]> = { mailstack: [], bind: [] };
  const cpuPerQuery: Record<string, number[]> = { mailstack: [], bind: [] };
  try {
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? (["mailstack", "bind"] as const) : (["bind", "mailstack"] as const);
      for (const who of order) {
        const pid = who === "mailstack" ? process.pid : named.pid;
        const cpu0 = cpuSeconds(pid);
        const res = await dnsperf(who === "mailstack" ? ourPort : bindPort, qfile, seconds);
        const usPerQuery = ((cpuSeconds(pid) - cpu0) / (res.qps * seconds)) * 1e6;
        results[who]!.push(res.qps);
        cpuPerQuery[who]!.push(usPerQuery);
        console.log(
          `round ${r + 1} ${who}: ${res.qps.toFixed(0)} q/s, lost ${res.lost}, avg latency ${res.latencyMs.toFixed(3)} ms, ${usPerQuery.toFixed(1)} CPU-µs/query`,
        );
      }
    }
  } finally {
    await named.stop();
    await ours.close();
    tmp.cleanup();
  }
  const avg = (xs: number[]) => Math.round(xs.reduce((a, b) => a + b, 0) / xs.length);
  const avgF = (xs: number[]) => Number((xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(1));
  console.log(
    JSON.stringify({
      seconds,
      rounds,
      qps: { mailstack: avg(results.mailstack!), bind: avg(results.bind!) },
      cpuUsPerQuery: { mailstack: avgF(cpuPerQuery.mailstack!), bind: avgF(cpuPerQuery.bind!) },
      raw: results,
    }),
  );
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
