/**
 * Relay throughput (issue 6, scenario 2), not a test: mailstack's queue and a private Postfix
 * each deliver N queued 1 KiB messages to Postfix's `smtp-sink` on loopback; the clock runs from
 * "queue full, sink up, go" (mailstack: start the manager; Postfix: `postqueue -f` of the deferred
 * queue) until the queue is empty.
 *
 *   N=3000 node_modules/.bin/node -r ts-node/register/transpile-only test/queue-relay-bench.ts [mailstack|postfix|both]
 *
 * Needs Debian's postfix (smtp-sink, smtp-source). PD=<n> sets mailstack's sessions per destination.
 */
import { execFile, spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import pino from "pino";
import { startQueue } from "../queue";
import { listIds, queuePaths, Spool } from "../queue/spool";
import { privateMasterCf } from "./helpers/postfix";
import { freePortOn, queueConfig, startOwnDns, startRemoteDns, tempDir } from "./queue-fixtures";

const N = Number(process.env.N ?? 3000);
const run = (cmd: string, args: string[]) =>
  new Promise<string>((r) => execFile(cmd, args, { maxBuffer: 64 << 20 }, (_e, o, e) => r(`${o}${e}`)));
const msg = (i: number) => {
  const head = `From: a@bench.test\r\nTo: r@sink.test\r\nSubject: ${i}\r\nMessage-ID: <${i}@bench.test>\r\n\r\n`;
  return Buffer.from(`${head.padEnd(1022, "y")}\r\n`);
};

async function sink(port: number) {
  const p = spawn("smtp-sink", ["-u", "postfix", `127.0.0.1:${port}`, "1000"], { stdio: "ignore" });
  await new Promise((r) => setTimeout(r, 300));
  return p;
}

async function mailstack() {
  const dir = await tempDir("relaybench-ms-");
  const port = await freePortOn(["127.0.0.1"]);
  // sink.test's DNS (MX mail.sink.test → 127.0.0.1), reached through the queue stack's own.
  const remote = await startRemoteDns({ domain: "sink.test" });
  const { dns, config } = await startOwnDns(queueConfig(dir, { queue: { remotePort: port, minBackoff: 1, scanInterval: 1 } }), [
    remote.spec,
  ]);
  const spool = new Spool(config);
  for (let i = 0; i < N; i += 50)
    await Promise.all(
      Array.from({ length: Math.min(50, N - i) }, (_, j) => spool.enqueue({ from: "a@bench.test", to: ["r@sink.test"], data: msg(i + j) })),
    );
  const s = await sink(port);
  const t0 = Date.now();
  const q = await startQueue(config, {
    log: pino({ level: "silent" }),
    tuning: process.env.PD ? { perDestination: Number(process.env.PD) } : {},
  });
  while ((await listIds(queuePaths(config))).length > 0) await new Promise((r) => setTimeout(r, 20));
  const dt = (Date.now() - t0) / 1000;
  await q.close();
  s.kill();
  await Promise.all([dns.close(), remote.close()]);
  await fs.rm(dir, { recursive: true, force: true });
  return dt;
}

async function postfix() {
  const dir = await tempDir("relaybench-pf-");
  await fs.chmod(dir, 0o755);
  const etc = path.join(dir, "etc"),
    spool = path.join(dir, "spool"),
    data = path.join(dir, "data");
  for (const d of [etc, spool, data]) await fs.mkdir(d, { recursive: true });
  await run("chown", ["postfix", data]);
  const inPort = await freePortOn(["127.0.0.1"]);
  const sinkPort = await freePortOn(["127.0.0.1"]);
  await fs.writeFile(
    path.join(etc, "main.cf"),
    [
      "compatibility_level = 3.6",
      `queue_directory = ${spool}`,
      `data_directory = ${data}`,
      `maillog_file = ${dir}/pf.log`,
      `maillog_file_prefixes = ${dir}`,
      "myhostname = postfix.test",
      "inet_interfaces = 127.0.0.1",
      "inet_protocols = ipv4",
      "mydestination =",
      "mynetworks = 127.0.0.0/8",
      "smtpd_peername_lookup = no",
      "smtp_dns_support_level = disabled",
      `relayhost = [127.0.0.1]:${sinkPort}`,
      "",
    ].join("\n"),
  );
  await fs.writeFile(path.join(etc, "master.cf"), privateMasterCf(`127.0.0.1:${inPort}`));
  console.log(await run("postfix", ["-c", etc, "start"]));
  // Sink down: everything is deferred; then the sink comes up and the queue is flushed.
  await run("smtp-source", ["-s", "20", "-l", "1024", "-m", String(N), "-f", "a@bench.test", "-t", "r@sink.test", `127.0.0.1:${inPort}`]);
  for (;;) {
    const o = await run("postqueue", ["-c", etc, "-p"]);
    const m = /in (\d+) Request/.exec(o);
    if (m && Number(m[1]) >= N) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const s = await sink(sinkPort);
  const t0 = Date.now();
  await run("postqueue", ["-c", etc, "-f"]);
  for (;;) {
    const o = await run("postqueue", ["-c", etc, "-p"]);
    if (o.includes("Mail queue is empty")) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  const dt = (Date.now() - t0) / 1000;
  await run("postfix", ["-c", etc, "stop"]);
  s.kill();
  await fs.rm(dir, { recursive: true, force: true });
  return dt;
}

void (async () => {
  const which = process.argv[2] ?? "both";
  if (which !== "postfix") {
    const t = await mailstack();
    console.log(`mailstack queue: ${N} msgs in ${t.toFixed(2)} s = ${(N / t).toFixed(0)} msg/s`);
  }
  if (which !== "mailstack") {
    const t = await postfix();
    console.log(`postfix: ${N} msgs in ${t.toFixed(2)} s = ${(N / t).toFixed(0)} msg/s`);
  }
  process.exit(0);
})();
