/**
 * Memory. Per service: the RSS of each mailstack service process idle (its process in the whole
 * stack idle, below: each service measured the same way, on an empty data directory; the queue's
 * own scenario starts it on a full spool) and at its peak (the kernel's VmHWM at the end of its
 * scenario), beside the reference's processes (sum of
 * the RSS of the master and all its children, sampled; PSS, which divides shared pages among the
 * processes, is given in the JSON). Then the whole stack idle: every service as its own process,
 * as the containers run them (goal: under 150 MB together), and `mailstack start` (all services in
 * one process), beside Postfix + Dovecot + BIND idle.
 */
import { spawn } from "node:child_process";
import { closeSync, promises as fs, openSync } from "node:fs";
import * as path from "node:path";
import { type Ctx, onCleanup, startService } from "../lib/context";
import {
  BUILD_DIR,
  benchUsers,
  NODE,
  type ServiceName,
  type ServiceProcess,
  serviceAvailable,
  stackConfig,
  writeStackConfig,
} from "../lib/mailstack";
import { MB, memOf, residentUnion } from "../lib/procmem";
import { freePort, log, REPO, sleep, waitUntil } from "../lib/util";
import { BindInstance } from "../refs/bind";
import { DovecotInstance } from "../refs/dovecot";
import { gidOf, PostfixInstance, uidOf } from "../refs/postfix";

const REF_FOR: Record<ServiceName, string> = { smtp: "postfix", queue: "postfix (relay)", dns: "named", imap: "dovecot", pop3: "dovecot" };
const ORDER: ServiceName[] = ["dns", "smtp", "queue", "pop3", "imap"];
/**
 * "Idle" is measured once a process has been idle for a while: V8's memory reducer gives back
 * the young generation and compacts the heap about 8–9 s after the last allocation burst, as
 * it does on a server that waits for clients. The references get the same wait. `--quick` takes
 * its sample 2 s after start, before the reducer has run (it must stay under 2 minutes).
 */
const IDLE_SETTLE_MS = 11_000;
const QUICK_SETTLE_MS = 2_000;

/**
 * 1. Per service. Idle: mailstack's process as measured in the whole stack idle (every service
 *    the same way: started on an empty data directory, sampled after the settle time), or else
 *    its scenario's sample at start. Peak: the highest during its scenarios. The references:
 *    PSS summed over their processes (shared pages counted once), which is what their process
 *    groups cost; their RSS sums (larger) are in the JSON.
 */
function perServiceRows(ctx: Ctx, idleInStack: Map<string, number>, settleS: number): void {
  for (const svc of ORDER) {
    const mine = ctx.memory.filter((m) => m.system === "mailstack" && m.who === svc);
    if (mine.length === 0) continue;
    const refWho = REF_FOR[svc];
    const refScen = svc === "imap" ? ["imap mix", "imap big folder"] : svc === "pop3" ? ["pop3"] : null;
    const refs = ctx.memory.filter((m) => m.system === "reference" && m.who === refWho && (!refScen || refScen.includes(m.scenario)));
    const refName = `${refWho.startsWith("postfix") ? `Postfix ${ctx.versions.postfix}` : refWho === "named" ? `BIND ${ctx.versions.bind}` : `Dovecot ${ctx.versions.dovecot}`} (PSS)`;
    const scenarios = [...new Set(mine.map((m) => m.scenario.split(" ")[0]))].join(", ");
    const stackIdle = idleInStack.get(svc);
    const idle = stackIdle ?? Math.min(...mine.map((m) => m.idleRss)) / MB;
    const peak = Math.max(...mine.map((m) => m.peakRss)) / MB;
    const refIdle = refs.length ? Math.min(...refs.map((m) => m.idlePss)) / MB : null;
    const refPeak = refs.length ? Math.max(...refs.map((m) => m.peakPss)) / MB : null;
    const refPeakRss = refs.length ? Math.max(...refs.map((m) => m.peakRss)) / MB : null;
    const procs = refs.length ? Math.max(...refs.map((m) => m.processes ?? 0)) : 0;
    ctx.rows.push({
      scenario: "Memory",
      metric: `${svc} idle RSS`,
      unit: "MB",
      mailstack: idle,
      reference: refIdle,
      refName,
      better: "lower",
      ...(stackIdle !== undefined ? { note: `mailstack: its process in the whole stack idle, ${settleS} s after start` } : {}),
    });
    ctx.rows.push({
      scenario: "Memory",
      metric: `${svc} peak RSS (during ${scenarios})`,
      unit: "MB",
      mailstack: peak,
      reference: refPeak,
      refName,
      better: "lower",
      ...(refPeakRss ? { note: `reference: up to ${procs} processes, RSS sum ${refPeakRss.toFixed(0)} MB` } : {}),
    });
  }
}

export async function memoryScenario(ctx: Ctx): Promise<void> {
  // 2. The whole stack idle, one process per service.
  const available = ORDER.filter(serviceAvailable);
  const settleS = (ctx.quick ? QUICK_SETTLE_MS : IDLE_SETTLE_MS) / 1000;
  if (available.length === 0) {
    perServiceRows(ctx, new Map(), settleS);
    ctx.skipped.push({ scenario: "Memory (whole stack)", reason: "no mailstack service present yet" });
    return;
  }
  const root = path.join(ctx.root, "memory");
  const users = await benchUsers(["lx", "lei"]);
  const opts = {
    dataDir: path.join(root, "mailstack", "data"),
    users,
    listen: { smtp: 0, submission: 0, smtps: 0, pop3: 0, pop3s: 0, imap: 0, imaps: 0, dns: 0 },
    ...ctx.cert,
  };
  const cfg = await writeStackConfig(path.join(root, "mailstack", "config.json"), opts);
  const procs: ServiceProcess[] = [];
  for (const s of available) procs.push(await startService(ctx, s, cfg, "stack"));
  await sleep(ctx.quick ? QUICK_SETTLE_MS : IDLE_SETTLE_MS);
  const mems = procs.map((p) => p.mem());
  const per = procs.map((p, i) => `${p.name} ${(mems[i]!.rss / MB).toFixed(1)}`);
  const total = mems.reduce((a, m) => a + m.rss, 0) / MB;
  const totalPss = mems.reduce((a, m) => a + m.pss, 0) / MB;
  const union = residentUnion(procs.map((p) => p.child.pid!));
  for (const p of procs) await p.stop();
  log(
    `memory: whole stack idle (${available.length} processes): resident set ${union === null ? "n/a" : (union / MB).toFixed(1)} MB, RSS sum ${total.toFixed(1)} MB (${per.join(", ")}), PSS ${totalPss.toFixed(1)} MB`,
  );

  // All services in one process (`mailstack start`).
  let single: number | null = null;
  let singlePss: number | null = null;
  if (ctx.runtime === "js") {
    const logFile = path.join(root, "start.log");
    const fd = openSync(logFile, "a");
    const child = spawn(NODE, [path.join(BUILD_DIR, "cli", "main.js"), "start", "--config", cfg], {
      cwd: REPO,
      stdio: ["ignore", fd, fd],
      env: { ...process.env, NODE_ENV: "production" },
    });
    closeSync(fd);
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    onCleanup(ctx, async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        await Promise.race([exited, sleep(5000)]);
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      }
    });
    try {
      await waitUntil(async () => (await fs.readFile(logFile, "utf8")).includes("mailstack is running"), "mailstack start", 60_000, 100);
      await sleep(ctx.quick ? QUICK_SETTLE_MS : IDLE_SETTLE_MS);
      single = memOf([child.pid!]).rss / MB;
      singlePss = memOf([child.pid!]).pss / MB;
    } catch (err) {
      log(`memory: mailstack start failed: ${(err as Error).message}`);
    }
    child.kill("SIGTERM");
    await Promise.race([exited, sleep(5000)]);
  }

  // The references idle together: Postfix (Maildir delivery), Dovecot (IMAP+POP3), BIND.
  const uid = await uidOf("nobody");
  const gid = await gidOf("nobody");
  const pf = new PostfixInstance({
    root: path.join(root, "postfix"),
    port: await freePort(),
    role: "deliver",
    mailDir: path.join(root, "postfix", "mail"),
    uid,
    gid,
  });
  const dv = new DovecotInstance({
    root: path.join(root, "dovecot"),
    mailDir: path.join(root, "dovecot", "mail"),
    imapPort: await freePort(),
    pop3Port: await freePort(),
    users,
    uid,
    gid,
  });
  let zones: Array<{ origin: string; text: string }> = [];
  try {
    const { parseConfig } = require(path.join(REPO, "config", "schema")) as typeof import("../../config/schema");
    const zone = require(path.join(REPO, "dns", "zone")) as {
      buildZones(c: unknown): Array<{ origin: string }>;
      renderZone(z: unknown): string;
    };
    zones = zone
      .buildZones(parseConfig((stackConfig(opts) as { config: Record<string, unknown> }).config))
      .map((z) => ({ origin: z.origin, text: zone.renderZone(z) }));
  } catch {
    zones = [];
  }
  const bind = zones.length ? new BindInstance(path.join(root, "bind"), await freePort(true), zones) : null;
  onCleanup(ctx, () => pf.stop());
  onCleanup(ctx, () => dv.stop());
  if (bind) onCleanup(ctx, () => bind.stop());
  await pf.start();
  await dv.start();
  if (bind) await bind.start();
  await sleep(ctx.quick ? QUICK_SETTLE_MS : IDLE_SETTLE_MS);
  const refPids = [...(await pf.pids()), ...(await dv.pids()), ...(bind ? bind.pids() : [])];
  const refMem = memOf(refPids);
  const refUnion = residentUnion(refPids);
  await pf.stop();
  await dv.stop();
  if (bind) await bind.stop();
  log(
    `memory: Postfix + Dovecot${bind ? " + BIND" : ""} idle: RSS ${(refMem.rss / MB).toFixed(1)} MB, PSS ${(refMem.pss / MB).toFixed(1)} MB (${refMem.processes} processes)`,
  );

  perServiceRows(ctx, new Map(procs.map((p, i) => [p.name, mems[i]!.rss / MB])), settleS);
  const refName = `Postfix + Dovecot${bind ? " + BIND" : ""}`;
  const stackName = `whole stack idle, ${available.length} processes (${available.join(", ")})`;
  if (union !== null)
    ctx.rows.push({
      scenario: "Memory",
      metric: `${stackName}: resident set (distinct pages)`,
      unit: "MB",
      mailstack: union / MB,
      reference: refUnion === null ? null : refUnion / MB,
      refName,
      better: "lower",
      goalAbsolute: 150,
      note: `pages shared by several processes (the node binary, libc) counted once; reference: ${refMem.processes} processes`,
    });
  ctx.rows.push({
    scenario: "Memory",
    metric: `${stackName}: RSS sum`,
    unit: "MB",
    mailstack: total,
    reference: refMem.rss / MB,
    refName,
    better: "lower",
    ...(union === null ? { goalAbsolute: 150 } : {}),
    note: `${per.join(", ")}; every process counts the shared node binary again; reference: RSS sum of ${refMem.processes} processes`,
  });
  ctx.rows.push({
    scenario: "Memory",
    metric: `${stackName}: PSS`,
    unit: "MB",
    mailstack: totalPss,
    reference: refMem.pss / MB,
    refName: `${refName} (PSS)`,
    better: "lower",
  });
  if (single !== null)
    ctx.rows.push({
      scenario: "Memory",
      metric: "whole stack idle, one process (mailstack start)",
      unit: "MB",
      mailstack: single,
      reference: refMem.rss / MB,
      refName,
      better: "lower",
      ...(singlePss !== null ? { note: `PSS ${singlePss.toFixed(1)} MB` } : {}),
    });
}
