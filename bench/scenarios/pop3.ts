/**
 * POP3: one session that logs in (USER/PASS), runs STAT, LIST and RETR of every message of a
 * 1,000-message maildrop, then QUIT without deleting. mailstack's POP3 service against Dovecot's
 * pop3d over the same files (hard-linked into each server's Maildir). The first session is
 * reported on its own (the servers build their UID lists and indexes), then the median of three.
 *
 * One client process measures both servers, mailstack first. Its own code (a JIT-compiled
 * line reader) would be cold for mailstack's sessions and warm for Dovecot's, so before either
 * server is measured the client runs the same sessions against a canned in-process responder.
 */
import { once } from "node:events";
import * as net from "node:net";
import * as path from "node:path";
import { Pop3Client } from "../../test/helpers/pop3-client";
import { type Ctx, recordReference, recordService, startService } from "../lib/context";
import { makeMessage, writeFolder } from "../lib/maildir";
import { type BenchUser, benchUsers, writeStackConfig } from "../lib/mailstack";
import { log, median, prng, sleep } from "../lib/util";
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

export async function pop3Scenario(ctx: Ctx): Promise<void> {
  const count = 1000;
  const users = await benchUsers(["pop"]);
  const user = users[0]!;
  const root = path.join(ctx.root, "pop3");
  const msData = path.join(root, "mailstack", "data");
  const dvMail = path.join(root, "dovecot", "mail");
  const uid = await uidOf("nobody");
  const gid = await gidOf("nobody");
  await writeFolder(
    [path.join(dvMail, user.name), path.join(msData, "mail", user.name)],
    { count, minSize: 1024, maxSize: 8192, seenFraction: 0, seed: 99 },
    uid,
    gid,
  );

  const cfg = await writeStackConfig(path.join(root, "mailstack", "config.json"), {
    dataDir: msData,
    users,
    listen: { pop3: 0 },
    ...ctx.cert,
  });
  const repeats = ctx.quick ? 2 : 3;
  await warmUpClient(count, user, repeats + 1);
  const ms = await startService(ctx, "pop3", cfg, "pop3");
  await sleep(300);
  const msIdle = ms.mem();
  log(`pop3: mailstack, ${count} messages`);
  const msFirst = await session(ms.port("pop3"), user);
  const msAgain: Session[] = [];
  for (let i = 0; i < repeats; i++) msAgain.push(await session(ms.port("pop3"), user));
  recordService(ctx, ms, "pop3", msIdle);
  await ms.stop();
  log(
    `  mailstack: first ${msFirst.ms.toFixed(0)} ms, again ${median(msAgain.map((s) => s.ms)).toFixed(0)} ms (${msFirst.messages} msgs, ${msFirst.bytes} bytes)`,
  );

  const {
    dv,
    idle: dvIdle,
    stopSampling,
  } = await startSampledDovecot(
    ctx,
    { root: path.join(root, "dovecot"), mailDir: dvMail, users, uid, gid },
    { settleMs: 300, sampleMs: 100, refreshMs: 100 },
  );
  log(`pop3: Dovecot, ${count} messages`);
  const dvFirst = await session(dv.o.pop3Port, user);
  const dvAgain: Session[] = [];
  for (let i = 0; i < repeats; i++) dvAgain.push(await session(dv.o.pop3Port, user));
  recordReference(ctx, "dovecot", "pop3", dvIdle, stopSampling());
  await dv.stop();
  log(
    `  Dovecot:   first ${dvFirst.ms.toFixed(0)} ms, again ${median(dvAgain.map((s) => s.ms)).toFixed(0)} ms (${dvFirst.messages} msgs, ${dvFirst.bytes} bytes)`,
  );

  const refName = `Dovecot ${ctx.versions.dovecot ?? ""}`.trim();
  const note =
    msFirst.messages !== dvFirst.messages || msFirst.bytes !== dvFirst.bytes
      ? `answers differ: mailstack ${msFirst.messages} msgs/${msFirst.bytes} B, Dovecot ${dvFirst.messages} msgs/${dvFirst.bytes} B`
      : undefined;
  ctx.rows.push({
    scenario: "POP3",
    metric: `login, LIST, RETR ×${count}, first session`,
    unit: "ms",
    mailstack: msFirst.ms,
    reference: dvFirst.ms,
    refName,
    better: "lower",
    goalRatio: 1.0,
    ...(note ? { note } : {}),
  });
  ctx.rows.push({
    scenario: "POP3",
    metric: `login, LIST, RETR ×${count}, again (median of ${repeats})`,
    unit: "ms",
    mailstack: median(msAgain.map((s) => s.ms)),
    reference: median(dvAgain.map((s) => s.ms)),
    refName,
    better: "lower",
    goalRatio: 1.0,
  });
}
