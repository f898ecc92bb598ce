/**
 * SMTP durable delivery: Postfix's own load generator, `smtp-source -s 20 -l 1024 -m 5000`,
 * against mailstack's SMTP service and against a private Postfix delivering with virtual(8) into
 * a Maildir (fsync as shipped). Repeated with reused connections (`-d`) and with 5 KiB messages.
 *
 * Only messages verified in the Maildir afterwards count: a distinct Message-Id and a body of
 * exactly the bytes smtp-source sent. The clock runs from the first connection until the last
 * verified message is in the Maildir (for Postfix, that includes the queue manager's delivery
 * after smtp-source has finished; for mailstack, 250 already means delivered).
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { type Ctx, onCleanup, recordReference, recordService, startService } from "../lib/context";
import { countMaildir, verifySmtpSource } from "../lib/maildir";
import { benchUsers, writeStackConfig } from "../lib/mailstack";
import { MemSampler, memOf } from "../lib/procmem";
import { exec, freePort, log, sleep } from "../lib/util";
import { gidOf, PostfixInstance, uidOf } from "../refs/postfix";

interface Variant {
  label: string;
  bodyBytes: number;
  reuse: boolean;
}

const VARIANTS: Variant[] = [
  { label: "1 KiB, 1 msg/connection", bodyBytes: 1024, reuse: false },
  { label: "1 KiB, reused connections (-d)", bodyBytes: 1024, reuse: true },
  { label: "5 KiB, 1 msg/connection", bodyBytes: 5120, reuse: false },
];

interface Outcome {
  verified: number;
  seconds: number;
  rate: number;
  incomplete: number;
  sourceErrors: string;
}

/** Runs smtp-source, then waits until the Maildir stops growing, and verifies it. */
async function drive(port: number, maildir: string, v: Variant, messages: number): Promise<Outcome> {
  const args = ["-s", "20", "-l", String(v.bodyBytes), "-m", String(messages), "-f", "bench@example.org", "-t", "lx@lx.com"];
  if (v.reuse) args.push("-d");
  args.push(`127.0.0.1:${port}`);
  const t0 = process.hrtime.bigint();
  const r = await exec("smtp-source", args, { timeoutMs: 600_000 });
  // Wait for the Maildir to reach the count, or to stop growing for 5 s.
  let last = await countMaildir(maildir);
  let lastChange = process.hrtime.bigint();
  for (;;) {
    if (last >= messages) break;
    await sleep(20);
    const n = await countMaildir(maildir);
    if (n !== last) {
      last = n;
      lastChange = process.hrtime.bigint();
    } else if (Number(process.hrtime.bigint() - lastChange) / 1e9 > 5) break;
  }
  const seconds = Number((last >= messages ? process.hrtime.bigint() : lastChange) - t0) / 1e9;
  const v2 = await verifySmtpSource(maildir, v.bodyBytes);
  return {
    verified: v2.verified,
    seconds,
    rate: v2.verified / seconds,
    incomplete: v2.incomplete,
    sourceErrors: r.code === 0 ? "" : (r.stderr || r.stdout).trim().split("\n").slice(-2).join(" / "),
  };
}

export async function smtpScenario(ctx: Ctx): Promise<void> {
  const messages = ctx.quick ? 1000 : 5000;
  const [user] = await benchUsers(["lx"]);
  const nobodyUid = await uidOf("nobody");
  const nobodyGid = await gidOf("nobody");
  const rounds = ctx.quick ? 1 : 2;
  const best = (xs: Outcome[]) => xs.reduce((a, b) => (b.rate > a.rate ? b : a));
  for (const [i, v] of VARIANTS.entries()) {
    const msRuns: Outcome[] = [];
    const pfRuns: Outcome[] = [];
    // Alternate mailstack and Postfix; each run starts from an empty Maildir and a fresh server.
    for (let round = 0; round < rounds; round++) {
      const msRoot = path.join(ctx.root, `smtp-${i}-${round}-mailstack`);
      const cfg = await writeStackConfig(path.join(msRoot, "config.json"), {
        dataDir: path.join(msRoot, "data"),
        users: [user!],
        listen: { smtp: 0 },
        ...ctx.cert,
      });
      const svc = await startService(ctx, "smtp", cfg, `smtp-${i}-${round}`);
      await sleep(500);
      const idle = svc.mem();
      log(`smtp ${v.label}: mailstack, ${messages} messages`);
      const ms = await drive(svc.port("smtp"), path.join(msRoot, "data", "mail", "lx"), v, messages);
      recordService(ctx, svc, `smtp ${v.label}`, idle);
      await svc.stop();
      await fs.rm(msRoot, { recursive: true, force: true });
      msRuns.push(ms);
      log(
        `  mailstack: ${ms.verified} verified in ${ms.seconds.toFixed(2)} s = ${ms.rate.toFixed(0)} msg/s${ms.incomplete ? `, ${ms.incomplete} incomplete` : ""}`,
      );

      const pfRoot = path.join(ctx.root, `smtp-${i}-${round}-postfix`);
      await fs.mkdir(pfRoot, { recursive: true });
      const pf = new PostfixInstance({
        root: pfRoot,
        port: await freePort(),
        role: "deliver",
        mailDir: path.join(pfRoot, "mail"),
        uid: nobodyUid,
        gid: nobodyGid,
      });
      onCleanup(ctx, () => pf.stop());
      await pf.start();
      await sleep(500);
      const pfIdle = memOf(await pf.pids());
      let pfPids = await pf.pids();
      const sampler = new MemSampler(() => pfPids, 200);
      const refresh = setInterval(async () => (pfPids = await pf.pids()), 200);
      sampler.start();
      log(`smtp ${v.label}: Postfix, ${messages} messages`);
      const ref = await drive(pf.o.port, path.join(pfRoot, "mail", "lx"), v, messages);
      clearInterval(refresh);
      const pfPeak = sampler.stop();
      await pf.stop();
      await fs.rm(pfRoot, { recursive: true, force: true });
      recordReference(ctx, "postfix", `smtp ${v.label}`, pfIdle, pfPeak);
      pfRuns.push(ref);
      log(
        `  Postfix:   ${ref.verified} verified in ${ref.seconds.toFixed(2)} s = ${ref.rate.toFixed(0)} msg/s${ref.incomplete ? `, ${ref.incomplete} incomplete` : ""}`,
      );
    }
    const ms = best(msRuns);
    const ref = best(pfRuns);
    const notes: string[] = [];
    if (rounds > 1)
      notes.push(
        `best of ${rounds}: mailstack ${msRuns.map((r) => r.rate.toFixed(0)).join("/")}, Postfix ${pfRuns.map((r) => r.rate.toFixed(0)).join("/")}`,
      );
    for (const r of msRuns)
      if (r.verified < messages)
        notes.push(`mailstack ${r.verified}/${messages} verified${r.sourceErrors ? `; smtp-source: ${r.sourceErrors}` : ""}`);
    for (const r of pfRuns) if (r.verified < messages) notes.push(`Postfix ${r.verified}/${messages} verified`);
    ctx.rows.push({
      scenario: "SMTP durable delivery",
      metric: `${v.label}, ${messages} msgs`,
      unit: "msg/s",
      mailstack: ms.rate,
      reference: ref.rate,
      refName: `Postfix ${ctx.versions.postfix ?? ""}`.trim(),
      better: "higher",
      goalRatio: 1.5,
      ...(notes.length ? { note: notes.join("; ") } : {}),
    });
  }
}
