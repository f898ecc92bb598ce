/**
 * Interop with Postfix (Debian's `postfix` package), run as private instances: their own config,
 * queue and data directories in a temp dir, never the system service. Postfix delivers its own
 * domain (pf.test) into a Maildir (virtual delivery).
 *
 * - mailstack relays to Postfix (our queue → MX lookup through the dev stack's DNS server, which
 *   forwards pf.test to pf.test's own mailstack DNS → Postfix's smtpd on 127.0.0.1, ephemeral
 *   port → Maildir), including 8-bit content, STARTTLS, and a 550 from Postfix that we bounce.
 * - Postfix relays to mailstack by MX lookup of lx.com, with nothing but DNS to route it. Postfix
 *   uses the system resolver library (resolv.conf, port 53, port 25 for MX delivery), so this runs
 *   in a network namespace of its own with only a loopback interface: mailstack's DNS (127.0.0.1:53)
 *   and SMTP (127.0.0.1:25) in a child process, Postfix on 127.0.0.2:2525 with
 *   `/etc/netns/<ns>/resolv.conf` naming our DNS, and swaks as the client, all inside it.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
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
import { privateMasterCf } from "./helpers/postfix";
import { listenAll } from "./helpers/stack";
import { freePortOn, inbox, startOwnDns, startRemoteDns, type TestDns, tempDir, waitFor } from "./queue-fixtures";

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

interface PostfixOptions {
  address: string;
  port: number;
  /** Run every Postfix command (and so every daemon) inside this network namespace. */
  netns?: string;
  /** Route remote mail by DNS (MX); otherwise DNS is off and Postfix sends nothing remote. */
  dns?: boolean;
}

/** A private Postfix instance under `dir` (which must be traversable by the postfix user). */
async function startPostfix(dir: string, opts: PostfixOptions): Promise<Postfix> {
  const { address, port } = opts;
  const postfixCmd = (args: string[]) => (opts.netns ? run("ip", ["netns", "exec", opts.netns, POSTFIX, ...args]) : run(POSTFIX, args));
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
    `inet_interfaces = ${address}`,
    "inet_protocols = ipv4",
    "mydestination =",
    "mynetworks = 127.0.0.0/8",
    "append_dot_mydomain = no",
    "smtpd_peername_lookup = no",
    // Remote mail goes by MX through resolv.conf (in the namespace: our DNS), or nowhere.
    ...(opts.dns ? ["smtp_dns_support_level = enabled", "smtp_host_lookup = dns"] : ["smtp_dns_support_level = disabled"]),
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
  await fs.writeFile(path.join(etc, "master.cf"), privateMasterCf(`${address}:${port}`));
  const started = await postfixCmd(["-c", etc, "start"]);
  const log = () => fs.readFile(path.join(dir, "postfix.log"), "utf8").catch(() => "");
  if (started.code !== 0) throw new Error(`postfix -c ${etc} start failed (${started.code}): ${started.out}\n${await log()}`);
  return {
    dir,
    port,
    maildir: (user) => path.join(mail, "pf.test", user),
    log,
    stop: async () => {
      await postfixCmd(["-c", etc, "stop"]);
    },
  };
}

let dir: string;
let postfix: Postfix | null = null;
let dns: TestDns;
let pfDns: TestDns;
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
  // pf.test's DNS: MX 10 mx.pf.test, mx.pf.test A 127.0.0.1.
  pfDns = await startRemoteDns({ domain: "pf.test", hostname: "mx.pf.test", address: "127.0.0.1" });
  const base = loadStack("dev", {
    "mailstack:dataDir": path.join(dir, "mailstack"),
    "mailstack:listen": listenAll("127.0.0.1", { smtp: msPort }, false),
    "mailstack:queue": { minBackoff: 0.5, maxBackoff: 1, maxLifetime: 120, scanInterval: 0.5, remotePort: pfPort },
  });
  // The dev stack's own DNS (lx.com), trusting loopback and forwarding pf.test: the queue's resolver.
  ({ dns, config } = await startOwnDns(base, [pfDns.spec]));
  smtp = await startSmtp(config, { log: pino({ level: "silent" }) });
  queue = await startQueue(config, { log: pino({ level: "info" }, { write: (l: string) => void queueLogs.push(JSON.parse(l)) }) });
  postfix = await startPostfix(path.join(dir, "postfix"), { address: "127.0.0.1", port: pfPort });
}, 60_000);

afterAll(async () => {
  await postfix?.stop();
  await queue?.close();
  await smtp?.close();
  await dns?.close();
  await pfDns?.close();
  if (dir) await fs.rm(dir, { recursive: true, force: true });
});

async function postfixMaildir(user: string): Promise<string[]> {
  const d = path.join(postfix!.maildir(user), "new");
  const files = await fs.readdir(d).catch(() => [] as string[]);
  return Promise.all(files.map((f) => fs.readFile(path.join(d, f), "utf8")));
}

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

describe("Postfix → mailstack by MX, in a network namespace", () => {
  const ns = `mspf${process.pid}`;
  const nsDir = () => path.join(dir, "netns");
  let child: ChildProcess | null = null;
  let nsPostfix: Postfix | null = null;
  let msData: string;

  const inNs = (cmd: string, args: string[]) => run("ip", ["netns", "exec", ns, cmd, ...args]);

  beforeAll(async () => {
    // The namespace has nothing but its own loopback: no packet can leave it. Inside it,
    // unreachable routes make that explicit for any address that is not on lo.
    const added = await run("ip", ["netns", "add", ns]);
    if (added.code !== 0) throw new Error(`ip netns add ${ns}: ${added.out}`);
    for (const args of [
      ["link", "set", "lo", "up"],
      // Postfix accepts only interface addresses in inet_interfaces.
      ["addr", "add", "127.0.0.2/8", "dev", "lo"],
      ["route", "add", "unreachable", "default"],
      ["-6", "route", "add", "unreachable", "default"],
    ]) {
      const r = await inNs("ip", args);
      if (r.code !== 0) throw new Error(`ip ${args.join(" ")} in ${ns}: ${r.out}`);
    }
    // `ip netns exec` bind-mounts this over /etc/resolv.conf for everything it starts.
    await fs.mkdir(`/etc/netns/${ns}`, { recursive: true });
    await fs.writeFile(`/etc/netns/${ns}/resolv.conf`, "nameserver 127.0.0.1\noptions attempts:2 timeout:2\n");
    await fs.mkdir(nsDir(), { recursive: true });
    await fs.chmod(nsDir(), 0o755);
    msData = path.join(nsDir(), "mailstack");

    // mailstack (the dev stack: lx.com, MX mail.lx.com → 127.0.0.1) on the standard ports of the
    // namespace's loopback: DNS on 53 (resolv.conf has no port), SMTP on 25 (where MX mail goes).
    const overrides = {
      "mailstack:dataDir": msData,
      "mailstack:listen": listenAll("127.0.0.1", { smtp: 25, dns: 53 }, false),
      "mailstack:resolvers": ["127.0.0.1:53"],
    };
    const script = [
      "const pino = require('pino');",
      "const { loadStack } = require('./config/load');",
      "const { startDns } = require('./dns');",
      "const { startSmtp } = require('./smtp');",
      "(async () => {",
      "  const config = loadStack('dev', JSON.parse(process.argv[1]));",
      "  const log = pino({ level: 'silent' });",
      "  const dns = await startDns(config, { log });",
      "  const smtp = await startSmtp(config, { log });",
      "  process.on('SIGTERM', () => Promise.all([smtp.close(), dns.close()]).then(() => process.exit(0)));",
      "  process.stdout.write('ready\\n');",
      "})().catch((e) => { process.stderr.write(String(e && e.stack || e)); process.exit(1); });",
    ].join("\n");
    const root = path.resolve(__dirname, "..");
    child = spawn(
      "ip",
      [
        "netns",
        "exec",
        ns,
        path.join(root, "node_modules/.bin/node"),
        "-r",
        "ts-node/register/transpile-only",
        "-e",
        script,
        JSON.stringify(overrides),
      ],
      { cwd: root, stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    child.stdout!.on("data", (d) => (out += d));
    child.stderr!.on("data", (d) => (out += d));
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`mailstack in ${ns} did not start: ${out}`)), 30_000);
      child!.stdout!.on("data", () => {
        if (out.includes("ready")) {
          clearTimeout(t);
          resolve();
        }
      });
      child!.once("exit", (code) => {
        clearTimeout(t);
        reject(new Error(`mailstack in ${ns} exited (${code}): ${out}`));
      });
    });

    // Postfix on 127.0.0.2, not 127.0.0.1: an MX that points at one of its own addresses would be
    // "mail loops back to myself".
    nsPostfix = await startPostfix(path.join(nsDir(), "postfix"), { address: "127.0.0.2", port: 2525, netns: ns, dns: true });
  }, 60_000);

  afterAll(async () => {
    await nsPostfix?.stop();
    if (child && child.exitCode === null) {
      const exited = new Promise((r) => child!.once("exit", r));
      process.kill(child.pid!, "SIGTERM");
      await exited;
    }
    await run("ip", ["netns", "del", ns]);
    await fs.rm(`/etc/netns/${ns}`, { recursive: true, force: true });
  });

  test("Postfix looks up lx.com's MX in our DNS and relays over STARTTLS into lx's Maildir", async () => {
    const sent = await inNs("swaks", [
      "--server",
      "127.0.0.2:2525",
      "--from",
      "someone@postfix.test",
      "--to",
      "lx@lx.com",
      "--header",
      "Subject: from Postfix",
      "--body",
      "Marker pf-to-ms.",
    ]);
    expect(sent.code).toBe(0);
    const msg = await waitFor(
      async () => (await inbox(msData, "lx")).map((b) => b.toString()).find((t) => t.includes("pf-to-ms")) ?? null,
      "the message from Postfix",
      30_000,
    );
    expect(msg).toMatch(/^Return-Path: <someone@postfix\.test>/);
    // Our Received: header names Postfix's EHLO and shows that Postfix used STARTTLS.
    expect(msg).toMatch(/Received: from postfix\.test \([^)]*\[127\.0\.0\.1\]\)\r?\n\t\(using TLS/);
    // Postfix found the relay by MX: the host name mail.lx.com exists nowhere but in our zone.
    const log = await waitFor(
      async () => ((await nsPostfix!.log()).includes("status=sent") ? nsPostfix!.log() : null),
      "Postfix's delivery log",
    );
    expect(log).toMatch(/to=<lx@lx\.com>, relay=mail\.lx\.com\[127\.0\.0\.1\]:25, .*status=sent \(250 2\.0\.0 Ok: queued as [A-Z0-9]+\)/);
  });
});
