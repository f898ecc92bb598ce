/**
 * Interop with Postfix (Debian's `postfix` package), run as a private instance: its own config,
 * queue and data directories in a temp dir, listening on 127.0.0.1 on an ephemeral port, never
 * the system service. It delivers its own domain (pf.test) into a Maildir (virtual delivery) and
 * relays everything else to mailstack through `relayhost = [127.0.0.1]:<mailstack smtp port>`.
 *
 * - Postfix relays a message to mailstack (Postfix's SMTP client → our SMTP server → Maildir).
 * - mailstack relays to Postfix (our queue → MX lookup in our test DNS → Postfix's smtpd → Maildir),
 *   including 8-bit content, STARTTLS both ways, and a 550 from Postfix that we bounce.
 */
import { execFile } from "node:child_process";
import { existsSync, promises as fs } from "node:fs";
import * as path from "node:path";
import nodemailer from "nodemailer";
import pino from "pino";
import { loadStack } from "../config/load";
import type { MailConfig } from "../config/schema";
import type { RunningService } from "../lib/service";
import { loadTls } from "../lib/tls";
import { type RunningQueue, startQueue } from "../queue";
import { startSmtp } from "../smtp";
import { freePortOn, inbox, startZoneServer, tempDir, waitFor, type ZoneServer } from "./queue-fixtures";

const POSTFIX = "/usr/sbin/postfix";

function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: `${stdout}${stderr}` }),
    );
  });
}

interface Postfix {
  dir: string;
  port: number;
  maildir(user: string): string;
  log(): Promise<string>;
  stop(): Promise<void>;
}

/** A private Postfix instance under `dir` (which must be traversable by the postfix user). */
async function startPostfix(dir: string, port: number, relayPort: number): Promise<Postfix> {
  const etc = path.join(dir, "etc");
  const spool = path.join(dir, "spool");
  const data = path.join(dir, "data");
  const mail = path.join(dir, "mail");
  await Promise.all([etc, spool, data, mail].map((d) => fs.mkdir(d, { recursive: true })));
  await fs.chmod(dir, 0o755);
  // Postfix's own directories belong to its user; the virtual Maildirs to the uid it delivers as.
  await run("chown", ["postfix", data]);
  await run("chown", ["65534:65534", mail]);
  const pem = await loadTls({
    dataDir: dir,
    hostname: "postfix.test",
    domain: "postfix.test",
    destinations: ["postfix.test"],
    publicAddress: "127.0.0.1",
    tls: {},
  } as unknown as MailConfig);
  await fs.writeFile(path.join(etc, "cert.pem"), pem.cert);
  await fs.writeFile(path.join(etc, "key.pem"), pem.key, { mode: 0o600 });
  const main = [
    "compatibility_level = 3.6",
    `queue_directory = ${spool}`,
    `data_directory = ${data}`,
    `maillog_file = ${path.join(dir, "postfix.log")}`,
    `maillog_file_prefixes = ${dir}`,
    "myhostname = postfix.test",
    "mydomain = postfix.test",
    "myorigin = postfix.test",
    "inet_interfaces = 127.0.0.1",
    "inet_protocols = ipv4",
    "mydestination =",
    "mynetworks = 127.0.0.0/8",
    "append_dot_mydomain = no",
    // No DNS at all: the client's name is not looked up, and the relayhost is an address literal.
    "smtpd_peername_lookup = no",
    "smtp_dns_support_level = disabled",
    `relayhost = [127.0.0.1]:${relayPort}`,
    "virtual_mailbox_domains = pf.test",
    `virtual_mailbox_base = ${mail}`,
    "virtual_mailbox_maps = inline:{ wang@pf.test=pf.test/wang/ }",
    "virtual_uid_maps = static:65534",
    "virtual_gid_maps = static:65534",
    `smtpd_tls_cert_file = ${path.join(etc, "cert.pem")}`,
    `smtpd_tls_key_file = ${path.join(etc, "key.pem")}`,
    "smtpd_tls_security_level = may",
    "smtpd_tls_received_header = yes",
    "smtp_tls_security_level = may",
    "smtputf8_enable = yes",
    "",
  ].join("\n");
  await fs.writeFile(path.join(etc, "main.cf"), main);
  // Debian's master.cf without chroot (a private instance has no chroot jail set up).
  const master = [
    `127.0.0.1:${port} inet n - n - - smtpd`,
    "pickup unix n - n 60 1 pickup",
    "cleanup unix n - n - 0 cleanup",
    "qmgr unix n - n 300 1 qmgr",
    "tlsmgr unix - - n 1000? 1 tlsmgr",
    "rewrite unix - - n - - trivial-rewrite",
    "bounce unix - - n - 0 bounce",
    "defer unix - - n - 0 bounce",
    "trace unix - - n - 0 bounce",
    "verify unix - - n - 1 verify",
    "flush unix n - n 1000? 0 flush",
    "proxymap unix - - n - - proxymap",
    "proxywrite unix - - n - 1 proxymap",
    "smtp unix - - n - - smtp",
    "relay unix - - n - - smtp",
    "showq unix n - n - - showq",
    "error unix - - n - - error",
    "retry unix - - n - - error",
    "discard unix - - n - - discard",
    "local unix - n n - - local",
    "virtual unix - n n - - virtual",
    "anvil unix - - n - 1 anvil",
    "scache unix - - n - 1 scache",
    "postlog unix-dgram n - n - 1 postlogd",
    "",
  ].join("\n");
  await fs.writeFile(path.join(etc, "master.cf"), master);
  const started = await run(POSTFIX, ["-c", etc, "start"]);
  const log = () => fs.readFile(path.join(dir, "postfix.log"), "utf8").catch(() => "");
  if (started.code !== 0) throw new Error(`postfix -c ${etc} start failed (${started.code}): ${started.out}\n${await log()}`);
  return {
    dir,
    port,
    maildir: (user) => path.join(mail, "pf.test", user),
    log,
    stop: async () => {
      await run(POSTFIX, ["-c", etc, "stop"]);
    },
  };
}

let dir: string;
let postfix: Postfix | null = null;
let dns: ZoneServer;
let smtp: RunningService;
let queue: RunningQueue;
let config: MailConfig;
const queueLogs: Record<string, unknown>[] = [];

beforeAll(async () => {
  if (!existsSync(POSTFIX))
    throw new Error(
      "Postfix is not installed: apt-get install -y postfix (with /usr/sbin/policy-rc.d exiting 101 so the system service never starts)",
    );
  dir = await tempDir("mailstack-postfix-");
  // Postfix's daemons run as the postfix user and must reach their directories below this one.
  await fs.chmod(dir, 0o755);
  const [pfPort, msPort] = [await freePortOn(["127.0.0.1"]), await freePortOn(["127.0.0.1"])];
  dns = await startZoneServer({ "pf.test": { MX: [{ preference: 10, exchange: "mx.pf.test" }] }, "mx.pf.test": { A: ["127.0.0.1"] } });
  config = loadStack("dev", {
    "mailstack:dataDir": path.join(dir, "mailstack"),
    "mailstack:listen": {
      address: "127.0.0.1",
      smtp: msPort,
      submission: false,
      smtps: false,
      pop3: false,
      pop3s: false,
      imap: false,
      imaps: false,
      dns: false,
    },
    "mailstack:resolvers": [dns.spec],
    "mailstack:queue": { minBackoff: 0.5, maxBackoff: 1, maxLifetime: 120, scanInterval: 0.5, remotePort: pfPort },
  });
  smtp = await startSmtp(config, { log: pino({ level: "silent" }) });
  queue = await startQueue(config, { log: pino({ level: "info" }, { write: (l: string) => void queueLogs.push(JSON.parse(l)) }) });
  postfix = await startPostfix(path.join(dir, "postfix"), pfPort, msPort);
}, 60_000);

afterAll(async () => {
  await postfix?.stop();
  await queue?.close();
  await smtp?.close();
  await dns?.close();
  if (dir) await fs.rm(dir, { recursive: true, force: true });
});

async function postfixMaildir(user: string): Promise<string[]> {
  const d = path.join(postfix!.maildir(user), "new");
  const files = await fs.readdir(d).catch(() => [] as string[]);
  return Promise.all(files.map((f) => fs.readFile(path.join(d, f), "utf8")));
}

test("Postfix relays a message to mailstack (relayhost), over STARTTLS, into lx's Maildir", async () => {
  const client = nodemailer.createTransport({ host: "127.0.0.1", port: postfix!.port, secure: false, ignoreTLS: true });
  await client.sendMail({
    envelope: { from: "someone@postfix.test", to: ["lx@lx.com"] },
    raw: "From: someone@postfix.test\r\nTo: lx@lx.com\r\nSubject: from Postfix\r\n\r\nMarker pf-to-ms.\r\n",
  });
  const msg = await waitFor(
    async () => (await inbox(config.dataDir, "lx")).map((b) => b.toString()).find((t) => t.includes("pf-to-ms")) ?? null,
    "the message from Postfix",
    30_000,
  );
  expect(msg).toMatch(/^Return-Path: <someone@postfix\.test>/);
  // Our Received: header names Postfix's EHLO and shows that Postfix used STARTTLS.
  expect(msg).toMatch(/Received: from postfix\.test \([^)]*\[127\.0\.0\.1\]\)\r?\n\t\(using TLS/);
  const log = await waitFor(async () => ((await postfix!.log()).includes("status=sent") ? postfix!.log() : null), "Postfix's delivery log");
  expect(log).toMatch(
    new RegExp(
      `to=<lx@lx\\.com>, relay=127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${config.listen.smtp!.port}, .*status=sent \\(250 2\\.0\\.0 Ok: queued as [A-Z0-9]+\\)`,
    ),
  );
});

test("mailstack relays to Postfix by MX: 8-bit content, STARTTLS, delivered into Postfix's Maildir", async () => {
  const client = nodemailer.createTransport({
    host: "127.0.0.1",
    port: config.listen.smtp!.port,
    secure: false,
    tls: { rejectUnauthorized: false },
  });
  const body = "Grüße aus mailstack — naïve café. Marker ms-to-pf.\r\n";
  await client.sendMail({
    envelope: { from: "lx@lx.com", to: ["wang@pf.test"] },
    raw: Buffer.from(
      `From: lx@lx.com\r\nTo: wang@pf.test\r\nSubject: to Postfix\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n${body}`,
      "utf8",
    ),
  });
  const msg = await waitFor(
    async () => (await postfixMaildir("wang")).find((t) => t.includes("ms-to-pf")) ?? null,
    "the message in Postfix's Maildir",
    30_000,
  );
  expect(msg).toContain(body.replace(/\r\n/g, "\n"));
  // Postfix's Received: names our EHLO (mail.lx.com), shows TLS and ESMTPS.
  expect(msg).toMatch(
    /Received: from mail\.lx\.com \([^)]*\[127\.0\.0\.1\]\)\n\t\(using TLS[\s\S]*?by postfix\.test \(Postfix\) with ESMTPS/,
  );
  const sent = await waitFor(() => queueLogs.find((l) => l.to === "wang@pf.test" && l.status === "sent"), "our delivery log");
  expect(sent.relay).toBe("mx.pf.test");
  expect(String(sent.response)).toMatch(/^250 2\.0\.0 Ok: queued as/);
});

test("Postfix refusing an unknown recipient (550 5.1.1) makes mailstack bounce to the local sender", async () => {
  const client = nodemailer.createTransport({
    host: "127.0.0.1",
    port: config.listen.smtp!.port,
    secure: false,
    tls: { rejectUnauthorized: false },
  });
  await client.sendMail({
    envelope: { from: "lei@lx.com", to: ["wang@pf.test", "nosuch@pf.test"] },
    raw: "From: lei@lx.com\r\nTo: wang@pf.test, nosuch@pf.test\r\nSubject: half right\r\n\r\nMarker ms-half.\r\n",
  });
  await waitFor(async () => (await postfixMaildir("wang")).some((t) => t.includes("ms-half")), "delivery of the good recipient", 30_000);
  const dsn = await waitFor(
    async () => (await inbox(config.dataDir, "lei")).map((b) => b.toString()).find((t) => t.includes("nosuch@pf.test")) ?? null,
    "the DSN to lei",
  );
  expect(dsn).toContain("Final-Recipient: rfc822; nosuch@pf.test");
  expect(dsn).toContain("Status: 5.1.1");
  expect(dsn).toMatch(/Diagnostic-Code: smtp; 550 5\.1\.1 <nosuch@pf\.test>: Recipient address rejected/);
  expect(dsn).not.toContain("Final-Recipient: rfc822; wang@pf.test");
});
