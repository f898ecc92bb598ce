/**
 * POP3: one session that logs in (USER/PASS), runs STAT, LIST and RETR of every message of a
 * 1,000-message maildrop, then QUIT without deleting. mailstack's POP3 service against Dovecot's
 * pop3d over the same files (hard-linked into each server's Maildir). The first session is
 * reported on its own (the servers build their UID lists and indexes): the median over three fresh
 * starts on fresh maildrops, in alternating order (one with --quick). Then the median of three
 * more sessions after the first start's.
 *
 * One client process measures both servers, mailstack first. Its own code (a JIT-compiled
 * line reader) would be cold for mailstack's sessions and warm for Dovecot's, so before either
 * server is measured the client runs the same sessions against a canned in-process responder.
 */
import { once } from "node:events";
import { promises as fs } from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { Pop3Client } from "../../test/helpers/pop3-client";
import { type Ctx, recordReference, recordService, startService } from "../lib/context";
import { makeMessage, writeFolder } from "../lib/maildir";
import { type BenchUser, benchUsers, writeStackConfig } from "../lib/mailstack";
import { log, median, prng, rangeMs, sleep } from "../lib/util";
import { startSampledDovecot } from "../refs/dovecot";
import { gidOf, uidOf } from "../refs/postfix";

interface Session {
  ms: number;
  messages: number;
  bytes: number;
}

async function session(port: number, user: BenchUser): Promise<Session> {
  const t0 = process.hrtime.bigint();
  const c = await Pop3Client.connect(port);
  try {
    await c.command(`USER ${user.name}`);
    await c.command(`PASS ${user.password}`);
    const stat = await c.command("STAT");
    const n = Number(stat.split(" ")[1]);
    const list = await c.multi("LIST");
    if (list.count !== n) throw new Error(`LIST has ${list.count} lines, STAT says ${n}`);
    let bytes = 0;
    for (let i = 1; i <= n; i++) bytes += (await c.multi(`RETR ${i}`)).bytes;
    await c.quit();
    return { ms: Number(process.hrtime.bigint() - t0) / 1e6, messages: n, bytes };
  } finally {
    c.destroy();
  }
}

/**
 * A POP3 responder with canned answers (no files, no checks), in this process: only for warming
 * up the client. Messages are made like the benchmark's (1–8 KiB, CRLF).
 */
async function cannedServer(count: number): Promise<net.Server> {
  const rnd = prng(7);
  const bodies = Array.from({ length: count }, (_, i) => makeMessage(i + 1, 1024 + Math.floor(rnd() * 7169), rnd));
  const total = bodies.reduce((n, m) => n + m.length, 0);
  const server = net.createServer((sock) => {
    sock.setNoDelay(true);
    sock.on("error", () => undefined);
    sock.write("+OK canned\r\n");
    let pending = "";
    sock.on("data", (d: Buffer) => {
      pending += d.toString("latin1");
      for (let eol = pending.indexOf("\r\n"); eol >= 0; eol = pending.indexOf("\r\n")) {
        const [cmd = "", arg] = pending.slice(0, eol).split(" ");
        pending = pending.slice(eol + 2);
        if (cmd === "STAT") sock.write(`+OK ${count} ${total}\r\n`);
        else if (cmd === "LIST") sock.write(`+OK\r\n${bodies.map((m, i) => `${i + 1} ${m.length}\r\n`).join("")}.\r\n`);
        else if (cmd === "RETR") {
          const m = bodies[Number(arg) - 1]!;
          sock.write(Buffer.concat([Buffer.from(`+OK ${m.length} octets\r\n`), m, Buffer.from(".\r\n")]));
        } else if (cmd === "QUIT") sock.end("+OK\r\n");
        else sock.write("+OK\r\n");
      }
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return server;
}

/** Runs the benchmark's session against the canned responder, untimed, to compile the client. */
async function warmUpClient(count: number, user: BenchUser, sessions: number): Promise<void> {
  const server = await cannedServer(count);
  try {
    const port = (server.address() as net.AddressInfo).port;
    for (let i = 0; i < sessions; i++) await session(port, user);
  } finally {
    server.close();
  }
}

/** Both servers' maildrops, written afresh (a first session renames every message to \\Seen). */
async function freshMaildrops(dirs: string[], count: number, uid: number, gid: number): Promise<void> {
  for (const d of dirs) await fs.rm(d, { recursive: true, force: true });
  await writeFolder(dirs, { count, minSize: 1024, maxSize: 8192, seenFraction: 0, seed: 99 }, uid, gid);
}

export async function pop3Scenario(ctx: Ctx): Promise<void> {
  const count = 1000;
  const users = await benchUsers(["pop"]);
  const user = users[0]!;
  const root = path.join(ctx.root, "pop3");
  const msData = path.join(root, "mailstack", "data");
  const dvMail = path.join(root, "dovecot", "mail");
  const uid = await uidOf("nobody");
  const gid = await gidOf("nobody");
  const maildrops = [path.join(dvMail, user.name), path.join(msData, "mail", user.name)];

  const cfg = await writeStackConfig(path.join(root, "mailstack", "config.json"), {
    dataDir: msData,
    users,
    listen: { pop3: 0 },
    ...ctx.cert,
  });
  const repeats = ctx.quick ? 2 : 3;
  // The first session after a start is one sample and swings with the machine's load, so each
  // server is started afresh `rounds` times on a fresh maildrop, in alternating order, and the
  // median first session is reported (the range goes in the row's note).
  const rounds = ctx.quick ? 1 : 3;
  await warmUpClient(count, user, repeats + 1);
  const refName = `Dovecot ${ctx.versions.dovecot ?? ""}`.trim();

  const msFirst: Session[] = [];
  const dvFirst: Session[] = [];
  const msAgain: Session[] = [];
  const dvAgain: Session[] = [];
  const runMailstack = async (round: number) => {
    // A log (and CPU profile) per start: the service's port is read from its log.
    const ms = await startService(ctx, "pop3", cfg, round === 0 ? "pop3" : `pop3-${round + 1}`);
    await sleep(300);
    const msIdle = ms.mem();
    msFirst.push(await session(ms.port("pop3"), user));
    if (round === 0) {
      for (let i = 0; i < repeats; i++) msAgain.push(await session(ms.port("pop3"), user));
      recordService(ctx, ms, "pop3", msIdle);
    }
    await ms.stop();
  };
  const runDovecot = async (round: number) => {
    const { dv, idle, stopSampling } = await startSampledDovecot(
      ctx,
      { root: path.join(root, "dovecot"), mailDir: dvMail, users, uid, gid },
      { settleMs: 300, sampleMs: 100, refreshMs: 100 },
    );
    dvFirst.push(await session(dv.o.pop3Port, user));
    if (round === 0) {
      for (let i = 0; i < repeats; i++) dvAgain.push(await session(dv.o.pop3Port, user));
      recordReference(ctx, "dovecot", "pop3", idle, stopSampling());
    } else stopSampling();
    await dv.stop();
  };
  for (let round = 0; round < rounds; round++) {
    await freshMaildrops(maildrops, count, uid, gid);
    log(`pop3: round ${round + 1}/${rounds}, ${count} messages, ${round % 2 ? "Dovecot" : "mailstack"} first`);
    if (round % 2) {
      await runDovecot(round);
      await runMailstack(round);
    } else {
      await runMailstack(round);
      await runDovecot(round);
    }
    log(`  first session: mailstack ${msFirst[round]!.ms.toFixed(0)} ms, Dovecot ${dvFirst[round]!.ms.toFixed(0)} ms`);
  }
  log(
    `  again (median of ${repeats}): mailstack ${median(msAgain.map((x) => x.ms)).toFixed(0)} ms, Dovecot ${median(dvAgain.map((x) => x.ms)).toFixed(0)} ms`,
  );

  const differ = [...msFirst, ...dvFirst].find((x) => x.messages !== msFirst[0]!.messages || x.bytes !== msFirst[0]!.bytes);
  const notes = [
    rounds > 1 ? `range over the starts: mailstack ${rangeMs(msFirst.map((x) => x.ms))}, Dovecot ${rangeMs(dvFirst.map((x) => x.ms))}` : "",
    differ
      ? `answers differ: mailstack ${msFirst[0]!.messages} msgs/${msFirst[0]!.bytes} B, another session ${differ.messages} msgs/${differ.bytes} B`
      : "",
  ].filter(Boolean);
  ctx.rows.push({
    scenario: "POP3",
    metric: `login, LIST, RETR ×${count}, first session${rounds > 1 ? ` (median of ${rounds} starts)` : ""}`,
    unit: "ms",
    mailstack: median(msFirst.map((x) => x.ms)),
    reference: median(dvFirst.map((x) => x.ms)),
    refName,
    better: "lower",
    goalRatio: 1.0,
    ...(notes.length ? { note: notes.join("; ") } : {}),
  });
  ctx.rows.push({
    scenario: "POP3",
    metric: `login, LIST, RETR ×${count}, again (median of ${repeats})`,
    unit: "ms",
    mailstack: median(msAgain.map((x) => x.ms)),
    reference: median(dvAgain.map((x) => x.ms)),
    refName,
    better: "lower",
    goalRatio: 1.0,
  });
}
