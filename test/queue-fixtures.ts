/**
 * Real peers for the queue tests, all on loopback: mailstack's own DNS server (startDns) for the
 * remote zone a test needs and for the queue's stack (which forwards to it), and receiving SMTP
 * servers (npm smtp-server) whose answers a test controls per recipient.
 */
import { promises as fs } from "node:fs";
import type * as net from "node:net";
import { createServer } from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from "smtp-server";
import { type MailConfig, parseConfig } from "../config/schema";
import { type DnsService, startDns } from "../dns";
import { silentLogger } from "../lib/log";

export const HASH = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$O6bqsQ4AAhOmP1RSyYeRv3NEQDIhwoHPpa2a+KExbJ4";
const NO_MAIL_LISTENERS = { smtp: false, submission: false, smtps: false, pop3: false, pop3s: false, imap: false, imaps: false };

export interface TestDns {
  service: DnsService;
  /** `127.0.0.1:port`, for `resolvers` and `dns.upstream`. */
  spec: string;
  close(): Promise<void>;
}

/** A zone in stack-file terms: the remote domain's own stack config, as far as its DNS goes. */
export interface RemoteZone {
  /** Default `remote.test`. */
  domain?: string;
  /** The domain's MX host (default `mail.<domain>`), with `address` (publicAddress, default 127.0.0.1). */
  hostname?: string;
  address?: string;
  mxPreference?: number;
  /** `dns.records`: names relative to the domain unless they end with a dot. */
  records?: { name: string; type: string; value: string }[];
}

function dnsHandle(service: DnsService, cleanup: () => Promise<void> = async () => undefined): TestDns {
  const l = service.listeners[0]!;
  return {
    service,
    spec: `${l.address}:${l.port}`,
    close: async () => {
      await service.close();
      await cleanup();
    },
  };
}

/**
 * The remote domain's authoritative DNS: mailstack's server built from a stack config for
 * `zone.domain`. Its MX points at its hostname; every other name a test needs (more MX hosts, a
 * host without MX, a null MX `0 .`, AAAA only) goes in `records`. Names under the domain that are
 * not there get NXDOMAIN; names outside it REFUSED (loopback is not trusted here).
 */
export async function startRemoteDns(zone: RemoteZone = {}): Promise<TestDns> {
  const dataDir = await tempDir("mailstack-remote-dns-");
  const domain = zone.domain ?? "remote.test";
  const config = parseConfig({
    domain,
    hostname: zone.hostname ?? `mail.${domain}`,
    publicAddress: zone.address ?? "127.0.0.1",
    dataDir,
    users: [{ name: "postmaster", passwordHash: HASH }],
    listen: { address: "127.0.0.1", ...NO_MAIL_LISTENERS, dns: 0 },
    // Rate limiting is per client prefix and loopback is one prefix: off, so no test can trip it.
    dns: { mxPreference: zone.mxPreference ?? 10, records: zone.records ?? [], rateLimit: 0 },
  });
  const service = await startDns(config, { log: silentLogger });
  return dnsHandle(service, () => fs.rm(dataDir, { recursive: true, force: true }));
}

/**
 * The queue's stack runs its own DNS (as a deployment does): authoritative for its own domain,
 * forwarding other names to `upstream` for its trusted network (loopback). Returns the server
 * and the config with `resolvers` pointing at it, so every lookup the queue makes goes there.
 */
export async function startOwnDns(config: MailConfig, upstream: string[]): Promise<{ dns: TestDns; config: MailConfig }> {
  const own: MailConfig = {
    ...config,
    trustedNetworks: ["127.0.0.0/8"],
    listen: { ...config.listen, dns: { address: "127.0.0.1", port: 0 } },
    dns: { ...config.dns, upstream, rateLimit: 0 },
  };
  const dns = dnsHandle(await startDns(own, { log: silentLogger }));
  return { dns, config: { ...own, resolvers: [dns.spec] } };
}

export interface ReceivedMessage {
  from: string;
  to: string[];
  data: Buffer;
  secure: boolean;
  /** Parameters given with MAIL FROM (BODY=8BITMIME, SMTPUTF8, SIZE). */
  mailParams: Record<string, unknown>;
  at: number;
}

export interface Sink {
  address: string;
  port: number;
  messages: ReceivedMessage[];
  /** MAIL transactions seen, whatever their fate. */
  transactions: number;
  connections: number;
  close(): Promise<void>;
}

export interface SinkBehaviour {
  /** Reply for a recipient: undefined accepts; otherwise `{ code, message }`. */
  rcpt?: (address: string, session: SMTPServerSession) => { code: number; message: string } | undefined;
  /** Reply after DATA: undefined accepts. */
  data?: (msg: ReceivedMessage) => { code: number; message: string } | undefined;
  /** Extra delay before answering DATA (ms), to widen crash windows. */
  dataDelayMs?: () => number;
  options?: Partial<SMTPServerOptions>;
}

/** A receiving MTA on `address:port` (port 0 = ephemeral). */
export async function startSink(address: string, port: number, behaviour: SinkBehaviour = {}): Promise<Sink> {
  const sink: Sink = { address, port: 0, messages: [], transactions: 0, connections: 0, close: async () => undefined };
  const err = (code: number, message: string) => Object.assign(new Error(message), { responseCode: code });
  const server = new SMTPServer({
    logger: false,
    disableReverseLookup: true,
    authOptional: true,
    banner: "test sink",
    size: 50 * 1024 * 1024,
    onConnect(_s, cb) {
      sink.connections++;
      cb();
    },
    onMailFrom(_a, _s, cb) {
      sink.transactions++;
      cb();
    },
    onRcptTo(a, session, cb) {
      const r = behaviour.rcpt?.(a.address, session);
      if (r) cb(err(r.code, r.message));
      else cb();
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        const msg: ReceivedMessage = {
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
          to: session.envelope.rcptTo.map((r) => r.address),
          data: Buffer.concat(chunks),
          secure: session.secure,
          mailParams: (session.envelope.mailFrom ? session.envelope.mailFrom.args : {}) as Record<string, unknown>,
          at: Date.now(),
        };
        const finish = () => {
          const r = behaviour.data?.(msg);
          if (r) return cb(err(r.code, r.message));
          sink.messages.push(msg);
          cb(null, "Ok: queued");
        };
        const d = behaviour.dataDelayMs?.() ?? 0;
        if (d > 0) setTimeout(finish, d);
        else finish();
      });
    },
    ...behaviour.options,
  });
  server.on("error", () => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, address, () => resolve());
  });
  sink.port = (server.server.address() as net.AddressInfo).port;
  sink.close = () => new Promise<void>((r) => server.close(() => r()));
  return sink;
}

export interface RawConnection {
  /** The command lines parsed from each read of the socket, in order (message content left out). */
  batches: string[][];
  startTls: boolean;
}

export interface RawSmtp {
  address: string;
  port: number;
  connections: RawConnection[];
  messages: { from: string; to: string[]; data: string }[];
  close(): Promise<void>;
}

export interface RawSmtpOptions {
  /** EHLO keywords besides the host name, e.g. ["PIPELINING", "8BITMIME"]. */
  extensions?: string[];
  /**
   * Offer STARTTLS, answer it with 220, and then break the handshake: answer the ClientHello
   * with bytes that are not TLS ("garbage"), or close the connection ("close").
   */
  brokenStartTls?: "garbage" | "close";
}

/**
 * A receiving SMTP server written out by hand on a plain net.Server, for what smtp-server hides:
 * where the client's writes begin and end (each `data` event is one read), and a STARTTLS that
 * fails halfway. It accepts every sender and recipient.
 */
export async function startRawSmtp(address: string, port: number, opts: RawSmtpOptions = {}): Promise<RawSmtp> {
  const raw: RawSmtp = { address, port: 0, connections: [], messages: [], close: async () => undefined };
  const sockets = new Set<net.Socket>();
  const server = createServer((sock) => {
    sockets.add(sock);
    sock.on("close", () => sockets.delete(sock));
    sock.on("error", () => undefined);
    const conn: RawConnection = { batches: [], startTls: false };
    raw.connections.push(conn);
    let buf = "";
    let data: string[] | null = null;
    let env = { from: "", to: [] as string[] };
    let handshake = false;
    sock.write("220 raw.test ESMTP\r\n");
    sock.on("data", (chunk: Buffer) => {
      if (handshake) {
        // The ClientHello: break the TLS handshake as asked.
        if (opts.brokenStartTls === "garbage") sock.end("this is not TLS\r\n");
        else sock.destroy();
        return;
      }
      buf += chunk.toString("latin1");
      const batch: string[] = [];
      const out: string[] = [];
      for (let i = buf.indexOf("\r\n"); i >= 0 && !handshake; i = buf.indexOf("\r\n")) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (data) {
          if (line !== ".") data.push(line.startsWith(".") ? line.slice(1) : line);
          else {
            raw.messages.push({ ...env, data: `${data.join("\r\n")}\r\n` });
            data = null;
            out.push("250 2.0.0 Ok: queued\r\n");
          }
          continue;
        }
        batch.push(line);
        const verb = line.split(/[ :]/)[0]!.toUpperCase();
        if (verb === "EHLO") {
          const ext = [...(opts.extensions ?? []), ...(opts.brokenStartTls ? ["STARTTLS"] : [])];
          out.push(["raw.test", ...ext].map((e, k, all) => `250${k === all.length - 1 ? " " : "-"}${e}\r\n`).join(""));
        } else if (verb === "HELO") out.push("250 raw.test\r\n");
        else if (verb === "STARTTLS" && opts.brokenStartTls) {
          conn.startTls = true;
          handshake = true;
          out.push("220 2.0.0 Ready to start TLS\r\n");
        } else if (verb === "MAIL") {
          env = { from: /<([^>]*)>/.exec(line)?.[1] ?? "", to: [] };
          out.push("250 2.1.0 Ok\r\n");
        } else if (verb === "RCPT") {
          env.to.push(/<([^>]*)>/.exec(line)?.[1] ?? "");
          out.push("250 2.1.5 Ok\r\n");
        } else if (verb === "DATA") {
          data = [];
          out.push("354 End data with <CR><LF>.<CR><LF>\r\n");
        } else if (verb === "RSET" || verb === "NOOP") out.push("250 2.0.0 Ok\r\n");
        else if (verb === "QUIT") {
          sock.end("221 2.0.0 Bye\r\n");
          break;
        } else out.push("502 5.5.2 Error: command not recognized\r\n");
      }
      if (batch.length > 0) conn.batches.push(batch);
      if (out.length > 0 && !sock.writableEnded) sock.write(out.join(""));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, address, () => resolve());
  });
  raw.port = (server.address() as net.AddressInfo).port;
  raw.close = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  return raw;
}

export async function tempDir(prefix = "mailstack-queue-"): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), prefix));
}

/** A stack config for `queue.test` with user alice, built from the schema like a stack file. */
export function queueConfig(dataDir: string, raw: Record<string, unknown> = {}): MailConfig {
  return parseConfig({
    domain: "queue.test",
    publicAddress: "127.0.0.1",
    dataDir,
    users: [{ name: "alice", passwordHash: HASH }],
    listen: { address: "127.0.0.1" },
    ...raw,
  });
}

/** Files in a user's INBOX new/ (bounces delivered locally). */
export async function inbox(dataDir: string, user: string): Promise<Buffer[]> {
  const dir = path.join(dataDir, "mail", user, "new");
  const files = await fs.readdir(dir).catch(() => [] as string[]);
  return Promise.all(files.sort().map((f) => fs.readFile(path.join(dir, f))));
}

/** Polls `check` until it returns a truthy value (no timing assertions: only a safety limit). */
export async function waitFor<T>(
  check: () => Promise<T> | T,
  what: string,
  timeoutMs = 20_000,
): Promise<Exclude<T, null | undefined | false | 0 | "">> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v as Exclude<T, null | undefined | false | 0 | "">;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A free TCP port on all the given loopback addresses at once. */
export async function freePortOn(addresses: string[]): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const s = createServer();
    await new Promise<void>((r) => s.listen(0, addresses[0], () => r()));
    const port = (s.address() as net.AddressInfo).port;
    const ok = await Promise.all(
      addresses.slice(1).map(
        (a) =>
          new Promise<boolean>((r) => {
            const t = createServer();
            t.once("error", () => r(false));
            t.listen(port, a, () => t.close(() => r(true)));
          }),
      ),
    );
    await new Promise<void>((r) => s.close(() => r()));
    if (ok.every(Boolean)) return port;
  }
  throw new Error("no common free port");
}
