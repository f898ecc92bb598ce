/**
 * Relay throughput: how fast the outbound queue empties into `smtp-sink`.
 *
 * Both MTAs first accept N messages for a remote domain from smtp-source (20 sessions, 1 KiB,
 * from 127.0.0.1, a trusted network) and hold them: Postfix in its hold queue
 * (`check_client_access static:HOLD`), mailstack in its spool with the queue service not yet
 * running. Then the clock starts: Postfix's held mail is released and flushed
 * (`postsuper -H ALL; postqueue -f`), and mailstack's queue service process is started. The
 * clock stops when smtp-sink has received all N. Both send to smtp-sink as their relayhost.
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { type Ctx, onCleanup, recordReference, recordService, startService } from "../lib/context";
import { benchUsers, writeStackConfig } from "../lib/mailstack";
import { MemSampler, memOf } from "../lib/procmem";
import { exec, freePort, log, sleep, waitUntil } from "../lib/util";
import { PostfixInstance } from "../refs/postfix";
import { SmtpSink } from "../refs/smtpsink";

async function inject(port: number, messages: number): Promise<void> {
  const r = await exec(
    "smtp-source",
    ["-s", "20", "-l", "1024", "-m", String(messages), "-f", "sender@lx.com", "-t", "rcpt@remote.example", `127.0.0.1:${port}`],
    { timeoutMs: 600_000 },
  );
  if (r.code !== 0) throw new Error(`smtp-source: ${(r.stderr || r.stdout).trim().slice(-500)}`);
}

/** Waits until the sink has `n` messages or has not grown for `stallS` seconds. */
async function drain(sink: SmtpSink, n: number, t0: bigint, stallS = 15): Promise<{ received: number; seconds: number }> {
  let last = await sink.count();
  let lastChange = process.hrtime.bigint();
  while (last < n) {
    await sleep(20);
    const c = await sink.count();
    if (c !== last) {
      last = c;
      lastChange = process.hrtime.bigint();
    } else if (Number(process.hrtime.bigint() - lastChange) / 1e9 > stallS) break;
  }
  return { received: last, seconds: Number(lastChange - t0) / 1e9 };
}

async function countDir(dir: string): Promise<number> {
  return (await fs.readdir(dir).catch(() => [])).length;
}

export async function relayScenario(ctx: Ctx): Promise<void> {
  const n = ctx.quick ? 1000 : 5000;
  const root = path.join(ctx.root, "relay");
  await fs.mkdir(root, { recursive: true });

  // mailstack: SMTP accepts into the spool; then the queue service delivers.
  const msSink = new SmtpSink(await freePort(), path.join(root, "sink-mailstack.out"));
  onCleanup(ctx, () => msSink.stop());
  await msSink.start();
  const users = await benchUsers(["lx"]);
  const dataDir = path.join(root, "mailstack", "data");
  const cfg = await writeStackConfig(path.join(root, "mailstack", "config.json"), {
    dataDir,
    users,
    listen: { smtp: 0 },
    ...ctx.cert,
    extra: { queue: { relayhost: { host: "127.0.0.1", port: msSink.port }, scanInterval: 1, minBackoff: 5, maxBackoff: 10 } },
  });
  const smtp = await startService(ctx, "smtp", cfg, "relay");
  log(`relay: mailstack, accepting ${n} messages into the spool`);
  await inject(smtp.port("smtp"), n);
  const queued = await waitUntil(
    async () => ((await countDir(path.join(dataDir, "queue", "msg"))) >= n ? n : 0),
    "the spool to hold every message",
    30_000,
  ).catch(async () => countDir(path.join(dataDir, "queue", "msg")));
  await smtp.stop();
  log(`  ${queued} in the spool; starting the queue service`);
  const t0 = process.hrtime.bigint();
  const queue = await startService(ctx, "queue", cfg, "relay");
  await sleep(200);
  const queueIdle = queue.mem();
  const ms = await drain(msSink, n, t0);
  recordService(ctx, queue, "relay", queueIdle);
  await queue.stop();
  await msSink.stop();
  log(`  mailstack: ${ms.received}/${n} at smtp-sink in ${ms.seconds.toFixed(2)} s = ${(ms.received / ms.seconds).toFixed(0)} msg/s`);

  // Postfix: smtpd puts everything on hold; release and flush starts the clock.
  const pfSink = new SmtpSink(await freePort(), path.join(root, "sink-postfix.out"));
  onCleanup(ctx, () => pfSink.stop());
  await pfSink.start();
  const pf = new PostfixInstance({
    root: path.join(root, "postfix"),
    port: await freePort(),
    role: "relay",
    relayhost: `127.0.0.1:${pfSink.port}`,
    hold: true,
  });
  onCleanup(ctx, () => pf.stop());
  await pf.start();
  await sleep(500);
  const idle = memOf(await pf.pids());
  log(`relay: Postfix, accepting ${n} messages into the hold queue`);
  await inject(pf.o.port, n);
  await waitUntil(async () => (await pf.heldCount()) >= n, "Postfix to hold every message", 60_000);
  let pids = await pf.pids();
  const sampler = new MemSampler(() => pids, 200).start();
  const refresh = setInterval(async () => (pids = await pf.pids()), 200);
  const t1 = process.hrtime.bigint();
  await pf.release();
  const ref = await drain(pfSink, n, t1);
  clearInterval(refresh);
  const peak = sampler.stop();
  recordReference(ctx, "postfix (relay)", "relay", idle, peak);
  await pf.stop();
  await pfSink.stop();
  log(`  Postfix:   ${ref.received}/${n} at smtp-sink in ${ref.seconds.toFixed(2)} s = ${(ref.received / ref.seconds).toFixed(0)} msg/s`);

  const notes: string[] = [];
  if (queued < n) notes.push(`mailstack spooled ${queued}/${n}`);
  if (ms.received < n) notes.push(`mailstack delivered ${ms.received}/${n}`);
  if (ref.received < n) notes.push(`Postfix delivered ${ref.received}/${n}`);
  notes.push("mailstack's time includes starting the queue process");
  ctx.rows.push({
    scenario: "Relay to smtp-sink",
    metric: `${n} × 1 KiB from a full queue`,
    unit: "msg/s",
    mailstack: ms.received / ms.seconds,
    reference: ref.received / ref.seconds,
    refName: `Postfix ${ctx.versions.postfix ?? ""}`.trim(),
    better: "higher",
    note: notes.join("; "),
  });
}
