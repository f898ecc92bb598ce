/**
 * The seed's example, end to end: the `sina` and `sohu` stacks side by side on 127.0.0.2 and
 * 127.0.0.3, each with its own DNS, SMTP, POP3, IMAP and queue, from stacks/Pulumi.{sina,sohu}.yaml
 * (only dataDir, ports, resolvers and DNS upstreams are overridden).
 *
 * Resolution works as on the internet: each MTA asks its own DNS server, which forwards names
 * outside its zone to the other domain's DNS (the "resolver that knows the other zone").
 * Both SMTP servers listen on the same port P, and both queues deliver to port P (queue.remotePort).
 *
 * Real clients throughout: nodemailer submits (STARTTLS + AUTH), Python's poplib and imapflow read.
 */
import { execFile } from "node:child_process";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { ImapFlow } from "imapflow";
import { simpleParser } from "mailparser";
import nodemailer from "nodemailer";
import pino from "pino";
import { loadStack } from "../config/load";
import type { MailConfig } from "../config/schema";
import { type DnsService, startDns } from "../dns";
import { startImap } from "../imap";
import type { RunningService } from "../lib/service";
import { startPop3 } from "../pop3";
import { listQueue, type RunningQueue, startQueue } from "../queue";
import { startSmtp } from "../smtp";
import { listenAll } from "./helpers/stack";
import { freePortOn, tempDir, waitFor } from "./queue-fixtures";

const PASSWORDS: Record<string, string> = { lisi: "lisi-password", wangwu: "wangwu-password" };

interface Stack {
  name: string;
  address: string;
  config: MailConfig;
  dns: DnsService;
  smtp: RunningService | null;
  pop3: RunningService;
  imap: RunningService;
  queue: RunningQueue;
  logs: Record<string, unknown>[];
  port(service: string): number;
}

const silent = pino({ level: "silent" });
let sina: Stack;
let sohu: Stack;
let smtpPort: number;
const dataDirs: string[] = [];
const latencies: number[] = [];

function overrides(dataDir: string, address: string, dnsPort: number, upstream: string[]): Record<string, unknown> {
  return {
    "mailstack:dataDir": dataDir,
    "mailstack:listen": listenAll(address, { smtp: smtpPort, dns: dnsPort }),
    "mailstack:resolvers": dnsPort ? [`${address}:${dnsPort}`] : [],
    "mailstack:dns": { reverseNetwork: "127.0.0.0/24", upstream },
    "mailstack:queue": { minBackoff: 0.5, maxBackoff: 1, maxLifetime: 120, scanInterval: 0.5, remotePort: smtpPort },
    "mailstack:limits": { authFailureDelay: 0.05 },
  };
}

/** Starts one domain's stack: DNS first (ephemeral port), then everything that resolves through it. */
async function startStack(name: "sina" | "sohu", address: string): Promise<Stack> {
  const dataDir = await tempDir(`mailstack-e2e-${name}-`);
  dataDirs.push(dataDir);
  const dns = await startDns(loadStack(name, overrides(dataDir, address, 0, [])), { log: silent });
  const dnsPort = dns.listeners[0]!.port;
  const config = loadStack(name, overrides(dataDir, address, dnsPort, []));
  const logs: Record<string, unknown>[] = [];
  const queueLog = pino({ level: "info" }, { write: (l: string) => void logs.push(JSON.parse(l)) });
  // One after the other: the first creates the self-signed certificate the others then read.
  const smtp = await startSmtp(config, { log: silent });
  const pop3 = await startPop3(config, { log: silent });
  const imap = await startImap(config, { log: silent });
  const queue = await startQueue(config, { log: queueLog });
  const stack: Stack = {
    name,
    address,
    config,
    dns,
    smtp,
    pop3,
    imap,
    queue,
    logs,
    port(service) {
      const all = [...(this.smtp?.listeners ?? []), ...this.pop3.listeners, ...this.imap.listeners, ...this.dns.listeners];
      const l = all.find((x) => x.name === service);
      if (!l) throw new Error(`${name} has no ${service} listener`);
      return l.port;
    },
  };
  return stack;
}

/** Points each DNS server's forwarding at the other's (their ports are known only now). */
async function linkDns(a: Stack, b: Stack): Promise<void> {
  for (const [x, y] of [
    [a, b],
    [b, a],
  ] as const) {
    const next = { ...x.config, dns: { ...x.config.dns, upstream: [`${y.address}:${y.port("dns")}`] } };
    await x.dns.reload(next);
    x.config = next;
  }
}

function transport(stack: Stack, user: string) {
  // From 127.0.0.1: not a trusted network for either stack, so submission needs STARTTLS and AUTH.
  return nodemailer.createTransport({
    host: stack.address,
    port: stack.port("submission"),
    secure: false,
    requireTLS: true,
    auth: { user: `${user}@${stack.config.domain}`, pass: PASSWORDS[user]! },
    tls: { rejectUnauthorized: false },
  });
}

async function maildirFiles(stack: Stack, user: string): Promise<string[]> {
  const root = path.join(stack.config.dataDir, "mail", user);
  const out: string[] = [];
  for (const d of ["new", "cur"])
    for (const f of await fs.readdir(path.join(root, d)).catch(() => [] as string[])) out.push(path.join(root, d, f));
  return out;
}

/** Waits until a message whose content matches `marker` is in the user's Maildir; returns the time it appeared. */
async function arrival(stack: Stack, user: string, marker: string, timeoutMs = 30_000): Promise<number> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    for (const f of await maildirFiles(stack, user)) {
      const text = await fs.readFile(f, "utf8").catch(() => "");
      if (text.includes(marker)) return Date.now();
    }
    if (Date.now() > end) throw new Error(`${marker} never reached ${user}@${stack.config.domain}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function python(script: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile("python3", ["-c", script, ...args], { timeout: 20_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
    );
  });
}

/** Python's poplib: STLS (the client is not on a trusted network), USER/PASS, then every message. */
const POP3_READ = `
import poplib, ssl, sys
host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
p = poplib.POP3(host, port, timeout=10)
p.stls(context=ctx)
p.user(user); p.pass_(password)
count, size = p.stat()
for i in range(1, count + 1):
    sys.stdout.write("=====MESSAGE=====\\n" + b"\\n".join(p.retr(i)[1]).decode("utf-8", "replace") + "\\n")
p.quit()
`;

async function pop3Messages(stack: Stack, user: string): Promise<string[]> {
  const out = await python(POP3_READ, [stack.address, String(stack.port("pop3")), user, PASSWORDS[user]!]);
  return out.split("=====MESSAGE=====\n").filter((m) => m.trim() !== "");
}

async function imapMessages(stack: Stack, user: string): Promise<{ subject: string; source: string }[]> {
  const client = new ImapFlow({
    host: stack.address,
    port: stack.port("imap"),
    secure: false,
    auth: { user, pass: PASSWORDS[user]! },
    tls: { rejectUnauthorized: false },
    logger: false,
  });
  await client.connect();
  const out: { subject: string; source: string }[] = [];
  const lock = await client.getMailboxLock("INBOX");
  try {
    for await (const m of client.fetch("1:*", { envelope: true, source: true }))
      out.push({ subject: m.envelope?.subject ?? "", source: m.source?.toString() ?? "" });
  } finally {
    lock.release();
  }
  await client.logout();
  return out;
}

beforeAll(async () => {
  smtpPort = await freePortOn(["127.0.0.2", "127.0.0.3"]);
  [sina, sohu] = await Promise.all([startStack("sina", "127.0.0.2"), startStack("sohu", "127.0.0.3")]);
  await linkDns(sina, sohu);
}, 60_000);

afterAll(async () => {
  for (const s of [sina, sohu]) {
    if (!s) continue;
    await s.queue.close();
    await Promise.all([s.smtp?.close(), s.pop3.close(), s.imap.close()]);
    await s.dns.close();
  }
  for (const d of dataDirs) await fs.rm(d, { recursive: true, force: true });
  if (latencies.length > 0) {
    const sorted = [...latencies].sort((a, b) => a - b);
    process.stdout.write(
      `sina→sohu delivery latency (submission 250 → wangwu's Maildir), ms: ${sorted.join(", ")}; median ${sorted[Math.floor(sorted.length / 2)]}\n`,
    );
  }
});

test("lisi@sina.com → sina's MTA looks up sohu.com MX → sohu → wangwu reads it over POP3 and IMAP", async () => {
  const mail = transport(sina, "lisi");
  const sent = Date.now();
  const info = await mail.sendMail({
    from: "lisi@sina.com",
    to: "wangwu@sohu.com",
    subject: "Hello from sina",
    text: "Hi wangwu, this is lisi. Marker e2e-first.\n",
  });
  expect(info.accepted).toEqual(["wangwu@sohu.com"]);
  const t250 = Date.now();
  const got = await arrival(sohu, "wangwu", "e2e-first");
  latencies.push(got - t250);
  expect(got).toBeGreaterThanOrEqual(sent);

  // The relay went by MX, through sina's own resolver, from sina's address.
  const sentLog = await waitFor(() => sina.logs.find((l) => l.status === "sent" && l.to === "wangwu@sohu.com"), "sina's delivery log");
  expect(sentLog.relay).toBe("mail.sohu.com");
  expect(sentLog.dsn).toBe("2.0.0");

  const pop = await pop3Messages(sohu, "wangwu");
  const viaPop = pop.find((m) => m.includes("e2e-first"));
  expect(viaPop).toBeDefined();
  expect(viaPop).toContain("Subject: Hello from sina");
  expect(viaPop).toMatch(/Return-Path: <lisi@sina\.com>/);
  // Two Received: headers, sina's (from the submission client) and sohu's: sina connected from its
  // own address, said EHLO mail.sina.com and used STARTTLS.
  expect(viaPop).toMatch(
    /^Received: from mail\.sina\.com \([^)]*\[127\.0\.0\.2\]\)\n\t\(using TLS[^\n]*\n\tby mail\.sohu\.com [^\n]* with ESMTPS /m,
  );
  expect((viaPop!.match(/^Received:/gm) ?? []).length).toBe(2);

  const imap = await imapMessages(sohu, "wangwu");
  expect(imap.map((m) => m.subject)).toContain("Hello from sina");
});

test("a reply the other way: wangwu@sohu.com → lisi@sina.com", async () => {
  const mail = transport(sohu, "wangwu");
  await mail.sendMail({
    from: "wangwu@sohu.com",
    to: "lisi@sina.com",
    subject: "Re: Hello from sina",
    text: "Got it. Marker e2e-reply.\n",
  });
  await arrival(sina, "lisi", "e2e-reply");
  const imap = await imapMessages(sina, "lisi");
  expect(imap.map((m) => m.subject)).toContain("Re: Hello from sina");
  const pop = await pop3Messages(sina, "lisi");
  expect(pop.some((m) => m.includes("e2e-reply"))).toBe(true);
});

test("mail to a nonexistent user at sohu.com bounces back to lisi as a DSN", async () => {
  const mail = transport(sina, "lisi");
  await mail.sendMail({ from: "lisi@sina.com", to: "ghost@sohu.com", subject: "Anyone there?", text: "Marker e2e-ghost.\n" });
  const pop = await waitFor(async () => {
    const msgs = await pop3Messages(sina, "lisi");
    return msgs.find((m) => m.includes("Final-Recipient: rfc822; ghost@sohu.com")) ?? null;
  }, "the DSN in lisi's maildrop");
  expect(pop).toContain("Return-Path: <>");
  expect(pop).toContain("From: Mail Delivery System <MAILER-DAEMON@mail.sina.com>");
  expect(pop).toMatch(/Content-Type: multipart\/report; report-type=delivery-status/);
  expect(pop).toContain("Reporting-MTA: dns; mail.sina.com");
  expect(pop).toContain("Action: failed");
  expect(pop).toMatch(/Status: 5\.1\.1/);
  expect(pop).toContain("Remote-MTA: dns; mail.sohu.com");
  expect(pop).toMatch(/Diagnostic-Code: smtp; 55\d/);
  expect(pop).toContain("Subject: Anyone there?");
  const parsed = await simpleParser(Buffer.from(pop.replace(/\n/g, "\r\n")));
  expect(parsed.subject).toBe("Undelivered Mail Returned to Sender");
  // Nothing is left in sina's queue.
  await waitFor(async () => (await listQueue(sina.config)).length === 0, "sina's queue to drain");
});

test("sohu down for a while: the mail stays queued and is delivered when sohu comes back", async () => {
  await sohu.smtp!.close();
  sohu.smtp = null;
  const mail = transport(sina, "lisi");
  await mail.sendMail({ from: "lisi@sina.com", to: "wangwu@sohu.com", subject: "While you were down", text: "Marker e2e-down.\n" });
  const queued = await waitFor(async () => (await listQueue(sina.config)).find((e) => e.attempts >= 2) ?? null, "two failed attempts");
  expect(queued.recipients[0]!.address).toBe("wangwu@sohu.com");
  expect(queued.recipients[0]!.reason).toMatch(/connect to mail\.sohu\.com\[127\.0\.0\.3\]:\d+: Connection refused/);
  expect(await maildirFiles(sohu, "wangwu").then((fs_) => Promise.all(fs_.map((f) => fs.readFile(f, "utf8"))))).not.toContainEqual(
    expect.stringContaining("e2e-down"),
  );

  sohu.smtp = await startSmtp(sohu.config, { log: silent });
  await arrival(sohu, "wangwu", "e2e-down");
  await waitFor(async () => (await listQueue(sina.config)).length === 0, "sina's queue to drain");
  const imap = await imapMessages(sohu, "wangwu");
  expect(imap.map((m) => m.subject)).toContain("While you were down");
});

test("sina→sohu latency, a few more samples", async () => {
  const mail = transport(sina, "lisi");
  for (let i = 0; i < 5; i++) {
    await mail.sendMail({ from: "lisi@sina.com", to: "wangwu@sohu.com", subject: `latency ${i}`, text: `Marker e2e-lat-${i}.\n` });
    const t250 = Date.now();
    latencies.push((await arrival(sohu, "wangwu", `e2e-lat-${i}`)) - t250);
  }
  expect(latencies.length).toBe(6);
});
