/**
 * The outbound queue against real peers on loopback: mailstack's own DNS server and receiving
 * SMTP servers (npm smtp-server). Each test has its own data dir, DNS servers and ports.
 *
 * DNS is shaped as in a deployment: the queue resolves through its stack's DNS server (trusting
 * loopback), which forwards names outside queue.test to the remote domain's DNS server, a
 * mailstack DNS built from a stack config for remote.test. The remote names a test needs (MX
 * hosts, hosts without MX, null MX, AAAA only) are `dns.records` of that zone.
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { simpleParser } from "mailparser";
import pino from "pino";
import type { MailConfig } from "../config/schema";
import { deleteQueued, flushQueue, listQueue, type RunningQueue, Spool, startQueue } from "../queue/index";
import { backoffSeconds } from "../queue/manager";
import { listIds, queuePaths, readEntry } from "../queue/spool";
import {
  freePortOn,
  inbox,
  queueConfig,
  type RawSmtp,
  type RawSmtpOptions,
  type RemoteZone,
  type Sink,
  type SinkBehaviour,
  startOwnDns,
  startRawSmtp,
  startRemoteDns,
  startSink,
  type TestDns,
  tempDir,
  waitFor,
} from "./queue-fixtures";

interface Ctx {
  dataDir: string;
  /** The queue stack's DNS server (its resolver) and the remote zone's. */
  dns: TestDns;
  remote: TestDns;
  sinks: Sink[];
  raws: RawSmtp[];
  queue?: RunningQueue;
  config: MailConfig;
  logs: Record<string, unknown>[];
}

let ctx: Ctx;
const cleanups: (() => Promise<void>)[] = [];

function capturingLogger(logs: Record<string, unknown>[]) {
  return pino({ level: "info" }, { write: (line: string) => void logs.push(JSON.parse(line)) });
}

async function setup(zone: RemoteZone, queueRaw: Record<string, unknown> = {}, raw: Record<string, unknown> = {}) {
  const dataDir = await tempDir();
  const remote = await startRemoteDns(zone);
  const { dns, config } = await startOwnDns(
    queueConfig(dataDir, {
      queue: { minBackoff: 0.3, maxBackoff: 1, maxLifetime: 60, scanInterval: 0.2, remotePort: 25, ...queueRaw },
      ...raw,
    }),
    [remote.spec],
  );
  ctx = { dataDir, dns, remote, sinks: [], raws: [], config, logs: [] };
  cleanups.push(async () => {
    await ctx.queue?.close();
    await Promise.all([...ctx.sinks, ...ctx.raws].map((s) => s.close()));
    await Promise.all([dns.close(), remote.close()]);
    await fs.rm(dataDir, { recursive: true, force: true });
  });
  return ctx;
}

async function sink(address: string, port: number, behaviour?: SinkBehaviour): Promise<Sink> {
  const s = await startSink(address, port, behaviour);
  ctx.sinks.push(s);
  return s;
}

async function rawSmtp(address: string, port: number, opts?: RawSmtpOptions): Promise<RawSmtp> {
  const s = await startRawSmtp(address, port, opts);
  ctx.raws.push(s);
  return s;
}

async function start(): Promise<RunningQueue> {
  ctx.queue = await startQueue(ctx.config, { log: capturingLogger(ctx.logs) });
  return ctx.queue;
}

function message(subject: string, extra = "", body = "Hello.\r\n"): Buffer {
  return Buffer.from(
    `Received: from client.example ([127.0.0.1]) by mail.queue.test; Thu, 1 Jan 2025 00:00:00 +0000\r\nFrom: alice@queue.test\r\nTo: someone@remote.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, "")}@queue.test>\r\n${extra}\r\n${body}`,
  );
}

async function queueEmpty(): Promise<boolean> {
  return (await listIds(queuePaths(ctx.config))).length === 0;
}

afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

test("backoff doubles from minBackoff up to maxBackoff", () => {
  expect([1, 2, 3, 4, 5, 6, 7].map((n) => backoffSeconds(n, 300, 4000))).toEqual([300, 600, 1200, 2400, 4000, 4000, 4000]);
});

describe("next hop", () => {
  test("delivers to the most preferred MX, and falls back to the next when it is down", async () => {
    const port = await freePortOn(["127.0.0.10", "127.0.0.11"]);
    // remote.test's stack: MX 10 mx1 (its hostname, 127.0.0.10), plus MX 20 mx2 from dns.records.
    await setup(
      {
        hostname: "mx1.remote.test",
        address: "127.0.0.10",
        mxPreference: 10,
        records: [
          { name: "@", type: "MX", value: "20 mx2.remote.test" },
          { name: "mx2", type: "A", value: "127.0.0.11" },
        ],
      },
      { remotePort: port },
    );
    const mx1 = await sink("127.0.0.10", port);
    const mx2 = await sink("127.0.0.11", port);
    await start();
    const spool = new Spool(ctx.config);
    await spool.enqueue({ from: "alice@queue.test", to: ["bob@remote.test"], data: message("first") });
    await waitFor(() => mx1.messages.length === 1, "delivery to mx1");
    expect(mx2.messages).toHaveLength(0);

    await mx1.close();
    ctx.sinks = ctx.sinks.filter((s) => s !== mx1);
    await spool.enqueue({ from: "alice@queue.test", to: ["bob@remote.test"], data: message("second") });
    await waitFor(() => mx2.messages.length === 1, "fallback delivery to mx2");
    expect(mx2.messages[0]!.to).toEqual(["bob@remote.test"]);
    await waitFor(queueEmpty, "empty queue");
    const sent = ctx.logs.filter((l) => l.status === "sent");
    expect(sent.map((l) => l.relay)).toEqual(["mx1.remote.test", "mx2.remote.test"]);
    // All DNS went to the queue's own DNS server, which forwarded it to remote.test's.
    expect(ctx.dns.service.stats.forwarded).toBeGreaterThan(0);
    expect(ctx.remote.service.stats.queries).toBeGreaterThanOrEqual(ctx.dns.service.stats.forwarded);
  });

  test("no MX: the domain's own A record is the implicit MX", async () => {
    await setup({ records: [{ name: "amx", type: "A", value: "127.0.0.12" }] });
    const s = await sink("127.0.0.12", 0);
    ctx.config.queue.remotePort = s.port;
    await start();
    await new Spool(ctx.config).enqueue({ from: "alice@queue.test", to: ["carol@amx.remote.test"], data: message("implicit mx") });
    await waitFor(() => s.messages.length === 1, "delivery by A record");
    expect(s.messages[0]!.from).toBe("alice@queue.test");
  });

  test("no MX and no A: the domain's AAAA is the implicit MX (a server on ::1)", async () => {
    await setup({ records: [{ name: "v6only", type: "AAAA", value: "::1" }] });
    const s = await sink("::1", 0);
    ctx.config.queue.remotePort = s.port;
    await start();
    await new Spool(ctx.config).enqueue({ from: "alice@queue.test", to: ["dave@v6only.remote.test"], data: message("over ipv6") });
    await waitFor(() => s.messages.length === 1, "delivery over IPv6");
    expect(s.messages[0]!.to).toEqual(["dave@v6only.remote.test"]);
    const sent = ctx.logs.find((l) => l.status === "sent");
    expect(sent?.relay).toBe("v6only.remote.test");
  });

  test("null MX (RFC 7505) bounces at once with 5.1.10, to the local sender", async () => {
    await setup({ records: [{ name: "nullmx", type: "MX", value: "0 ." }] });
    await start();
    await new Spool(ctx.config).enqueue({ from: "alice@queue.test", to: ["x@nullmx.remote.test"], data: message("to null mx") });
    const [dsn] = await waitFor(async () => {
      const m = await inbox(ctx.dataDir, "alice");
      return m.length > 0 ? m : null;
    }, "the DSN in alice's inbox");
    const text = dsn!.toString();
    expect(text).toMatch(/^Return-Path: <>\r\n/);
    expect(text).toContain("Status: 5.1.10");
    expect(text).toContain("Final-Recipient: rfc822; x@nullmx.remote.test");
    await waitFor(queueEmpty, "empty queue");
  });

  test("a domain that does not exist bounces (5.1.2); no resolvers and no relayhost defers with a clear reason", async () => {
    await setup({});
    await start();
    // NXDOMAIN from remote.test's server, passed on by ours.
    await new Spool(ctx.config).enqueue({ from: "alice@queue.test", to: ["x@nowhere.remote.test"], data: message("nxdomain") });
    const [dsn] = await waitFor(async () => {
      const m = await inbox(ctx.dataDir, "alice");
      return m.length > 0 ? m : null;
    }, "the DSN");
    expect(dsn!.toString()).toContain("Status: 5.1.2");
    await ctx.queue!.close();

    const noDns = queueConfig(ctx.dataDir, { resolvers: [], queue: { minBackoff: 60, scanInterval: 0.2 } });
    const logs: Record<string, unknown>[] = [];
    ctx.queue = await startQueue(noDns, { log: capturingLogger(logs) });
    const id = await new Spool(noDns).enqueue({ from: "alice@queue.test", to: ["x@remote.test"], data: message("no dns") });
    const entry = await waitFor(async () => (await listQueue(noDns)).find((e) => e.id === id && e.attempts > 0), "a deferred attempt");
    expect(entry.recipients[0]!.reason).toMatch(/no DNS resolvers configured/);
    expect(logs.some((l) => l.status === "deferred" && String(l.response).includes("mailstack:resolvers"))).toBe(true);
  });
});

describe("delivery", () => {
  test("one transaction for all recipients of a destination, with per-recipient results", async () => {
    await setup({});
    const s = await sink("127.0.0.1", 0, {
      rcpt: (a) =>
        a.startsWith("nobody") ? { code: 550, message: "5.1.1 <nobody@remote.test>: Recipient address rejected: User unknown" } : undefined,
    });
    ctx.config.queue.remotePort = s.port;
    await start();
    const data = message("three recipients", "", "line one\r\n.\r\n..two dots\r\n.leading dot\r\nlast\r\n");
    await new Spool(ctx.config).enqueue({
      from: "alice@queue.test",
      to: ["bob@remote.test", "nobody@remote.test", "carol@remote.test"],
      data,
    });
    await waitFor(() => s.messages.length === 1, "delivery");
    await waitFor(queueEmpty, "empty queue");
    expect(s.transactions).toBe(1);
    expect(s.messages[0]!.to).toEqual(["bob@remote.test", "carol@remote.test"]);
    // Dot-stuffing round trip: the receiver sees exactly what was queued.
    expect(s.messages[0]!.data.equals(data)).toBe(true);
    // Opportunistic STARTTLS was used (smtp-server offers it with its own certificate).
    expect(s.messages[0]!.secure).toBe(true);

    // The rejected recipient bounced, alone, with the remote's reply.
    const [dsnRaw] = await waitFor(async () => {
      const m = await inbox(ctx.dataDir, "alice");
      return m.length > 0 ? m : null;
    }, "the DSN");
    const dsn = await simpleParser(dsnRaw!);
    expect(dsn.from?.text).toContain("MAILER-DAEMON@mail.queue.test");
    expect(dsn.headers.get("auto-submitted")).toBe("auto-replied");
    const ct = dsn.headers.get("content-type") as { value: string; params: Record<string, string> };
    expect(ct.value).toBe("multipart/report");
    expect(ct.params["report-type"]).toBe("delivery-status");
    const raw = dsnRaw!.toString();
    expect(raw).toContain("Content-Type: message/delivery-status");
    expect(raw).toContain("Reporting-MTA: dns; mail.queue.test");
    expect(raw).toContain("Final-Recipient: rfc822; nobody@remote.test");
    expect(raw).toContain("Action: failed");
    expect(raw).toContain("Status: 5.1.1");
    expect(raw).toContain("Remote-MTA: dns; mail.remote.test");
    expect(raw).toMatch(/Diagnostic-Code: smtp; 550 5\.1\.1 <nobody@remote\.test>: Recipient address rejected/);
    expect(raw).not.toContain("Final-Recipient: rfc822; bob@remote.test");
    expect(raw).toContain("Content-Type: text/rfc822-headers");
    expect(raw).toContain("Subject: three recipients");
    expect(raw).not.toContain("line one"); // headers only, not the body
    const logged = ctx.logs.filter((l) => l.msg === "delivery attempt").map((l) => [l.to, l.status, l.dsn]);
    expect(logged).toEqual(
      expect.arrayContaining([
        ["bob@remote.test", "sent", "2.0.0"],
        ["carol@remote.test", "sent", "2.0.0"],
        ["nobody@remote.test", "bounced", "5.1.1"],
      ]),
    );
  });

  test("a 4xx is retried with backoff and then delivered; the attempt state is persisted", async () => {
    await setup({}, { minBackoff: 0.5, maxBackoff: 1 });
    let refusals = 2;
    const s = await sink("127.0.0.1", 0, {
      rcpt: () => (refusals-- > 0 ? { code: 451, message: "4.3.0 Try again later" } : undefined),
    });
    ctx.config.queue.remotePort = s.port;
    await start();
    const id = await new Spool(ctx.config).enqueue({ from: "alice@queue.test", to: ["bob@remote.test"], data: message("retry") });
    const listed = await waitFor(async () => (await listQueue(ctx.config)).find((e) => e.attempts >= 1), "a deferred entry");
    expect(listed.id).toBe(id);
    expect(listed.recipients[0]!.reason).toContain("451 4.3.0 Try again later");
    const state = (await readEntry(queuePaths(ctx.config), id))!.state;
    expect(state.attempts).toBeGreaterThanOrEqual(1);
    expect(state.nextAttempt).toBeGreaterThan(Date.now() - 1000);
    await waitFor(() => s.messages.length === 1, "delivery after retries");
    await waitFor(queueEmpty, "empty queue");
    expect(ctx.logs.filter((l) => l.status === "deferred").length).toBe(2);
    expect(await inbox(ctx.dataDir, "alice")).toHaveLength(0);
  });

  test("mail that stays undeliverable past maxLifetime bounces with 4.4.7 and the last error", async () => {
    // The MX host has an address where nothing listens: connection refused every time.
    const port = await freePortOn(["127.0.0.13"]);
    await setup(
      {
        records: [
          { name: "down", type: "MX", value: "10 mx.down.remote.test" },
          { name: "mx.down", type: "A", value: "127.0.0.13" },
        ],
      },
      { minBackoff: 0.3, maxBackoff: 0.5, maxLifetime: 1.5, remotePort: port },
    );
    await start();
    await new Spool(ctx.config).enqueue({ from: "alice@queue.test", to: ["bob@down.remote.test"], data: message("expires") });
    const [dsn] = await waitFor(async () => {
      const m = await inbox(ctx.dataDir, "alice");
      return m.length > 0 ? m : null;
    }, "the expiry DSN");
    const raw = dsn!.toString();
    expect(raw).toContain("Status: 4.4.7");
    expect(raw).toContain("Action: failed");
    expect(raw).toMatch(/connect to mx\.down\.remote\.test\[127\.0\.0\.13\]:\d+: Connection refused/);
    expect(raw).toContain("Subject: Undelivered Mail Returned to Sender (delivery time expired)");
    await waitFor(queueEmpty, "empty queue");
    expect(ctx.logs.filter((l) => l.status === "deferred").length).toBeGreaterThanOrEqual(2);
  });

  test("a message with a null sender is never bounced", async () => {
    await setup({});
    const s = await sink("127.0.0.1", 0, { rcpt: () => ({ code: 550, message: "5.1.1 no such user" }) });
    ctx.config.queue.remotePort = s.port;
    await start();
    await new Spool(ctx.config).enqueue({ from: "", to: ["nobody@remote.test"], data: message("a bounce itself") });
    await waitFor(queueEmpty, "the entry to be discarded");
    expect(await inbox(ctx.dataDir, "alice")).toHaveLength(0);
    expect(ctx.logs.some((l) => String(l.msg).includes("null sender discarded"))).toBe(true);
  });

  test("more Received: headers than limits.hopCount bounce as a loop (5.4.6) without being sent", async () => {
    await setup({}, {}, { limits: { hopCount: 5 } });
    const s = await sink("127.0.0.1", 0);
    ctx.config.queue.remotePort = s.port;
    await start();
    const loops = Array.from(
      { length: 6 },
      (_, i) => `Received: from hop${i}.example by hop${i + 1}.example; Thu, 1 Jan 2025 00:00:0${i} +0000\r\n`,
    ).join("");
    await new Spool(ctx.config).enqueue({
      from: "alice@queue.test",
      to: ["bob@remote.test"],
      data: Buffer.from(`${loops}Subject: looping\r\n\r\nx\r\n`),
    });
    const [dsn] = await waitFor(async () => {
      const m = await inbox(ctx.dataDir, "alice");
      return m.length > 0 ? m : null;
    }, "the loop DSN");
    expect(dsn!.toString()).toContain("Status: 5.4.6");
    expect(dsn!.toString()).toMatch(/forwarding loop/);
    expect(s.transactions).toBe(0);
    // At the limit exactly, it goes out.
    await new Spool(ctx.config).enqueue({
      from: "alice@queue.test",
      to: ["bob@remote.test"],
      data: Buffer.from(`${loops.split("\r\n").slice(1).join("\r\n")}Subject: fine\r\n\r\nx\r\n`),
    });
    await waitFor(() => s.messages.length === 1, "delivery at the hop limit");
  });
});

describe("the SMTP conversation", () => {
  /** Per connection, the envelope commands (MAIL, RCPT, DATA) of each read, by verb. */
  const envelopeReads = (raw: RawSmtp) =>
    raw.connections.map((c) =>
      c.batches
        .map((b) => b.map((l) => l.slice(0, 4).toUpperCase()).filter((v) => ["MAIL", "RCPT", "DATA"].includes(v)))
        .filter((b) => b.length > 0),
    );

  test("PIPELINING (RFC 2920): MAIL, the RCPTs and DATA in one write where offered, one command per write where not", async () => {
    const port = await freePortOn(["127.0.0.17", "127.0.0.18"]);
    await setup(
      {
        records: [
          { name: "piped", type: "A", value: "127.0.0.17" },
          { name: "lockstep", type: "A", value: "127.0.0.18" },
        ],
      },
      { remotePort: port },
    );
    const piped = await rawSmtp("127.0.0.17", port, { extensions: ["PIPELINING"] });
    const lockstep = await rawSmtp("127.0.0.18", port);
    await start();
    const spool = new Spool(ctx.config);
    const data = message("pipelining", "", "line one\r\n.dot line\r\n");
    for (const d of ["piped", "lockstep"])
      await spool.enqueue({ from: "alice@queue.test", to: ["a", "b", "c"].map((u) => `${u}@${d}.remote.test`), data });
    await waitFor(() => piped.messages.length === 1 && lockstep.messages.length === 1, "both deliveries");
    expect(envelopeReads(piped)).toEqual([[["MAIL", "RCPT", "RCPT", "RCPT", "DATA"]]]);
    expect(envelopeReads(lockstep)).toEqual([[["MAIL"], ["RCPT"], ["RCPT"], ["RCPT"], ["DATA"]]]);
    for (const [raw, d] of [
      [piped, "piped"],
      [lockstep, "lockstep"],
    ] as const) {
      expect(raw.messages[0]!.from).toBe("alice@queue.test");
      expect(raw.messages[0]!.to).toEqual(["a", "b", "c"].map((u) => `${u}@${d}.remote.test`));
      expect(raw.messages[0]!.data).toBe(data.toString("latin1"));
    }
  });

  test.each(["garbage", "close"] as const)(
    "a STARTTLS handshake that fails (%s) is retried at once in plaintext, as Postfix does",
    async (how) => {
      await setup({});
      const raw = await rawSmtp("127.0.0.1", 0, { brokenStartTls: how, extensions: ["PIPELINING"] });
      ctx.config.queue.remotePort = raw.port;
      await start();
      await new Spool(ctx.config).enqueue({ from: "alice@queue.test", to: ["bob@remote.test"], data: message(`tls ${how}`) });
      await waitFor(() => raw.messages.length === 1, "the plaintext delivery");
      // First connection: STARTTLS, broken. Second: no STARTTLS, the message in the clear.
      expect(raw.connections.map((c) => c.startTls)).toEqual([true, false]);
      expect(raw.connections[1]!.batches.flat().some((l) => /^STARTTLS/i.test(l))).toBe(false);
      expect(raw.messages[0]!.to).toEqual(["bob@remote.test"]);
      await waitFor(queueEmpty, "empty queue");
      // In the same attempt: nothing was deferred.
      expect(ctx.logs.filter((l) => l.msg === "delivery attempt").map((l) => l.status)).toEqual(["sent"]);
    },
  );
});

describe("8BITMIME and SMTPUTF8", () => {
  const eightBit = Buffer.from(
    'From: alice@queue.test\r\nTo: bob@remote.test\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nCafé crème, naïve façade = 100%\r\n.a line with a dot\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\u00ff\u00fe binary-ish\r\n--b1--\r\n',
    "utf8",
  );

  test("an 8-bit message goes as BODY=8BITMIME where offered, and is downgraded to 7-bit where not", async () => {
    await setup({ records: [{ name: "old", type: "A", value: "127.0.0.14" }] });
    const modern = await sink("127.0.0.1", 0);
    const old = await sink("127.0.0.14", modern.port, { options: { hide8BITMIME: true, hideSMTPUTF8: true } });
    ctx.config.queue.remotePort = modern.port;
    await start();
    const spool = new Spool(ctx.config);
    await spool.enqueue({ from: "alice@queue.test", to: ["bob@remote.test"], data: eightBit });
    await spool.enqueue({ from: "alice@queue.test", to: ["bob@old.remote.test"], data: eightBit });
    await waitFor(() => modern.messages.length === 1 && old.messages.length === 1, "both deliveries");
    expect(modern.messages[0]!.mailParams.BODY).toBe("8BITMIME");
    expect(modern.messages[0]!.data.equals(eightBit)).toBe(true);

    const down = old.messages[0]!;
    expect(down.mailParams.BODY).toBeUndefined();
    expect([...down.data].every((b) => b < 0x80)).toBe(true);
    const parsed = await simpleParser(down.data);
    expect(parsed.text).toContain("Café crème, naïve façade = 100%");
    expect(parsed.text).toContain(".a line with a dot");
    expect(parsed.attachments[0]!.content.equals(Buffer.from("\u00ff\u00fe binary-ish", "utf8"))).toBe(true);
    expect(down.data.toString()).toContain("Content-Transfer-Encoding: quoted-printable");
    expect(down.data.toString()).toContain("Content-Transfer-Encoding: base64");
  });

  test("8-bit headers need SMTPUTF8 or 8BITMIME, and UTF-8 addresses need SMTPUTF8: otherwise a 5.6.7 bounce", async () => {
    await setup({ records: [{ name: "old", type: "A", value: "127.0.0.14" }] });
    const old = await sink("127.0.0.14", 0, { options: { hide8BITMIME: true, hideSMTPUTF8: true } });
    ctx.config.queue.remotePort = old.port;
    await start();
    const spool = new Spool(ctx.config);
    await spool.enqueue({
      from: "alice@queue.test",
      to: ["bob@old.remote.test"],
      data: Buffer.from("Subject: Grüße\r\n\r\nx\r\n", "utf8"),
    });
    await spool.enqueue({ from: "alice@queue.test", to: ["jürgen@old.remote.test"], data: Buffer.from("Subject: hi\r\n\r\nx\r\n") });
    const dsns = await waitFor(async () => {
      const m = await inbox(ctx.dataDir, "alice");
      return m.length === 2 ? m : null;
    }, "two DSNs");
    const all = dsns.map((d) => d.toString()).join("\n");
    expect(all.match(/Status: 5\.6\.7/g)).toHaveLength(2);
    expect(all).toContain("SMTPUTF8 is required, but was not offered");
    expect(old.transactions).toBe(0);
  });
});

describe("operations", () => {
  test("queued mail survives a restart of the queue manager", async () => {
    const port = await freePortOn(["127.0.0.15"]);
    await setup({ records: [{ name: "later", type: "A", value: "127.0.0.15" }] }, { minBackoff: 30, maxBackoff: 60, remotePort: port });
    await start();
    const id = await new Spool(ctx.config).enqueue({ from: "alice@queue.test", to: ["bob@later.remote.test"], data: message("persist") });
    await waitFor(async () => (await listQueue(ctx.config)).find((e) => e.attempts === 1), "the first (failed) attempt");
    await ctx.queue!.close();
    const s = await sink("127.0.0.15", port);
    // A new manager reads the state: the entry is not due for 30 s, so flush makes it due.
    await start();
    expect((await listQueue(ctx.config)).map((e) => e.id)).toEqual([id]);
    expect(s.messages).toHaveLength(0);
    expect(await flushQueue(ctx.config)).toBe(1);
    await waitFor(() => s.messages.length === 1, "delivery after flush");
    await waitFor(queueEmpty, "empty queue");
  });

  test("queue delete removes an entry without delivering or bouncing it", async () => {
    const port = await freePortOn(["127.0.0.16"]);
    await setup({ records: [{ name: "later", type: "A", value: "127.0.0.16" }] }, { minBackoff: 30, remotePort: port });
    await start();
    const id = await new Spool(ctx.config).enqueue({ from: "alice@queue.test", to: ["bob@later.remote.test"], data: message("delete me") });
    await waitFor(async () => (await listQueue(ctx.config)).find((e) => e.attempts === 1), "the first attempt");
    expect(await deleteQueued(ctx.config, id)).toBe(true);
    expect(await deleteQueued(ctx.config, id)).toBe(false);
    await expect(deleteQueued(ctx.config, "../etc/passwd")).rejects.toThrow(/not a queue id/);
    expect(await listQueue(ctx.config)).toEqual([]);
    await ctx.queue!.scan();
    expect(await fs.readdir(path.join(ctx.dataDir, "queue", "state"))).toEqual([]);
    expect(await inbox(ctx.dataDir, "alice")).toHaveLength(0);
  });

  test("a queue file that cannot be parsed is set aside in queue/corrupt, not retried in a loop", async () => {
    await setup({});
    await start();
    const paths = queuePaths(ctx.config);
    await fs.writeFile(path.join(paths.msg, "0BROKEN0ENTRY0001"), "garbage, not a queue file");
    await ctx.queue!.scan();
    await waitFor(queueEmpty, "the corrupt entry to leave msg/");
    expect(await fs.readdir(path.join(ctx.dataDir, "queue", "corrupt"))).toEqual(["0BROKEN0ENTRY0001"]);
    expect(ctx.logs.some((l) => l.msg === "corrupt queue file set aside" && l.queueId === "0BROKEN0ENTRY0001")).toBe(true);
  });

  test("relayhost: everything goes to the smarthost, over STARTTLS, with AUTH", async () => {
    await setup({});
    const auths: string[] = [];
    const smarthost = await sink("127.0.0.1", 0, {
      options: {
        authOptional: false,
        authMethods: ["PLAIN", "LOGIN"],
        onAuth(auth, _session, cb) {
          auths.push(`${auth.username}:${auth.password}`);
          if (auth.username === "relayuser" && auth.password === "s3cret") cb(null, { user: auth.username });
          else cb(new Error("Invalid username or password"));
        },
      },
    });
    ctx.config.queue.relayhost = { host: "127.0.0.1", port: smarthost.port, username: "relayuser", password: "s3cret" };
    await start();
    await new Spool(ctx.config).enqueue({
      from: "alice@queue.test",
      to: ["x@anywhere.example", "y@elsewhere.example"],
      data: message("via relayhost"),
    });
    await waitFor(() => smarthost.messages.length === 1, "relay via smarthost");
    expect(smarthost.messages[0]!.to).toEqual(["x@anywhere.example", "y@elsewhere.example"]);
    expect(smarthost.messages[0]!.secure).toBe(true);
    expect(auths).toEqual(["relayuser:s3cret"]);
    // No DNS was needed, and the password never reached the logs.
    expect(ctx.dns.service.stats.queries).toBe(0);
    expect(JSON.stringify(ctx.logs)).not.toContain("s3cret");
  });

  test("mail for a local user arriving through the queue is delivered into the Maildir, aliases expanded; the bounce for an unknown one goes to the remote sender with MAIL FROM:<>", async () => {
    await setup({}, {}, { aliases: { team: ["alice"] } });
    // remote.test's MX (mail.remote.test → 127.0.0.1), where the DSN to bob goes.
    const bobs = await sink("127.0.0.1", 0);
    ctx.config.queue.remotePort = bobs.port;
    await start();
    await new Spool(ctx.config).enqueue({
      from: "bob@remote.test",
      to: ["team@queue.test", "ghost@queue.test"],
      data: message("local via queue"),
    });
    const msgs = await waitFor(async () => {
      const m = await inbox(ctx.dataDir, "alice");
      return m.length > 0 ? m : null;
    }, "local delivery");
    expect(msgs[0]!.toString()).toMatch(/^Return-Path: <bob@remote\.test>\r\n/);
    await waitFor(
      () => ctx.logs.some((l) => l.to === "ghost@queue.test" && l.status === "bounced" && l.dsn === "5.1.1"),
      "the bounce of the unknown user",
    );
    const [dsn] = await waitFor(() => (bobs.messages.length > 0 ? bobs.messages : null), "the DSN at remote.test's MX");
    // RFC 5321 §4.5.5 / RFC 3464: a DSN has the null reverse-path, so it can never bounce back.
    expect(dsn!.from).toBe("");
    expect(dsn!.to).toEqual(["bob@remote.test"]);
    const text = dsn!.data.toString();
    expect(text).toContain("Final-Recipient: rfc822; ghost@queue.test");
    expect(text).toContain("Status: 5.1.1");
    expect(text).not.toContain("Final-Recipient: rfc822; team@queue.test");
    await waitFor(queueEmpty, "empty queue");
  });
});
