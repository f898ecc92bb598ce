/**
 * Test helpers for the SMTP server: a live server on ephemeral loopback ports with its own data
 * directory, a raw-socket SMTP client for protocol corners, and Maildir readers.
 */
import { promises as fs, mkdtempSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import * as tls from "node:tls";
import { generate } from "selfsigned";
import { loadStack } from "../../config/load";
import type { MailConfig } from "../../config/schema";
import { silentLogger } from "../../lib/log";
import type { RunningService } from "../../lib/service";
import { startSmtp } from "../../smtp";
import type { SmtpOptions } from "../../smtp/server";

const made: string[] = [];
/** A fresh directory under the system temp dir, removed when the test file is done. */
export const tmpDir = (prefix = "mailstack-smtp-") => {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  made.push(dir);
  return dir;
};
if (typeof afterAll === "function") afterAll(() => Promise.all(made.splice(0).map((d) => fs.rm(d, { recursive: true, force: true }))));

/**
 * The dev stack with a fresh data directory and every SMTP listener on 127.0.0.1 port 0.
 * Other listeners are switched off. `overrides` are stack keys (`trustedNetworks`, `limits`, ...).
 */
export function testConfig(overrides: Record<string, unknown> = {}, dataDir = tmpDir()): MailConfig {
  const config = loadStack("dev", {
    dataDir,
    listen: { address: "127.0.0.1", smtp: 0, submission: 0, smtps: 0, pop3: false, pop3s: false, imap: false, imaps: false, dns: false },
    ...overrides,
  });
  // A failed login waits this long; keep tests quick.
  config.limits.authFailureDelay = 0.05;
  return config;
}

let cachedCert: { key: string; cert: string } | null = null;
/** A self-signed certificate for mail.lx.com, made once per test file. */
export async function testCert(): Promise<{ key: string; cert: string }> {
  if (!cachedCert) {
    const pems = await generate([{ name: "commonName", value: "mail.lx.com" }], { keyType: "ec", curve: "P-256" } as never);
    cachedCert = { key: pems.private, cert: pems.cert };
  }
  return cachedCert;
}

export interface TestServer {
  config: MailConfig;
  service: RunningService;
  port(name: "smtp" | "submission" | "smtps"): number;
  close(): Promise<void>;
}

export async function startTestSmtp(config: MailConfig, opts: SmtpOptions = {}): Promise<TestServer> {
  const service = await startSmtp(config, { log: silentLogger, tls: await testCert(), ...opts });
  return {
    config,
    service,
    port: (name) => {
      const l = service.listeners.find((x) => x.name === name);
      if (!l) throw new Error(`no ${name} listener`);
      return l.port;
    },
    close: () => service.close(),
  };
}

export interface SmtpReply {
  code: number;
  lines: string[];
  text: string;
}

/**
 * A raw SMTP client: writes exactly the bytes it is given and parses replies (multi-line too).
 * `closed` resolves when the server closes the connection.
 */
export class RawClient {
  private buf = "";
  private waiters: Array<() => void> = [];
  socket: net.Socket;
  closed: Promise<void>;
  isClosed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.closed = new Promise((resolve) => {
      this.attach(socket, resolve);
    });
  }

  private attach(socket: net.Socket, onClose?: () => void) {
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => {
      this.buf += d;
      this.wake();
    });
    socket.on("error", () => undefined);
    if (onClose)
      socket.on("close", () => {
        this.isClosed = true;
        this.wake();
        onClose();
      });
  }

  private wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  static connect(port: number, opts: { tls?: boolean; host?: string; localAddress?: string } = {}): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const host = opts.host ?? "127.0.0.1";
      const local = opts.localAddress ? { localAddress: opts.localAddress } : {};
      const socket = opts.tls
        ? tls.connect({ port, host, ...local, rejectUnauthorized: false, servername: "mail.lx.com" })
        : net.connect({ port, host, ...local });
      socket.once(opts.tls ? "secureConnect" : "connect", () => resolve(new RawClient(socket)));
      socket.once("error", reject);
    });
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Reads one complete reply; rejects if the connection closes first or after `timeoutMs`. */
  async read(timeoutMs = 10_000): Promise<SmtpReply> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = /^(?:(\d{3})-[^\n]*\n)*(\d{3})(?: [^\n]*)?\r?\n/.exec(this.buf);
      if (m) {
        const raw = m[0];
        this.buf = this.buf.slice(raw.length);
        const lines = raw.split(/\r?\n/).filter(Boolean);
        return { code: Number(m[2]), lines, text: lines.map((l) => l.slice(4)).join("\n") };
      }
      if (this.isClosed) throw new Error(`connection closed; unparsed: ${JSON.stringify(this.buf)}`);
      if (Date.now() > deadline) throw new Error(`timeout waiting for a reply; have ${JSON.stringify(this.buf)}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.max(1, deadline - Date.now()));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Sends a command line (CRLF added) and reads its reply. */
  async cmd(line: string): Promise<SmtpReply> {
    this.write(`${line}\r\n`);
    return this.read();
  }

  /** Anything received and not yet parsed as a reply. */
  get unread(): string {
    return this.buf;
  }

  /** STARTTLS and the handshake; the same client then speaks TLS. */
  async startTls(): Promise<SmtpReply> {
    const r = await this.cmd("STARTTLS");
    if (r.code !== 220) return r;
    const raw = this.socket;
    raw.removeAllListeners("data");
    const secure = tls.connect({ socket: raw, rejectUnauthorized: false, servername: "mail.lx.com" });
    await new Promise<void>((resolve, reject) => {
      secure.once("secureConnect", resolve);
      secure.once("error", reject);
    });
    this.socket = secure;
    this.attach(secure);
    return r;
  }

  /** Greeting, EHLO, and the EHLO lines. */
  async hello(name = "client.example"): Promise<SmtpReply> {
    const g = await this.read();
    if (g.code !== 220) throw new Error(`greeting ${g.lines.join("|")}`);
    return this.cmd(`EHLO ${name}`);
  }

  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Every message file visible in a user's INBOX (new/ and cur/), with contents. */
export async function inbox(dataDir: string, user: string): Promise<Array<{ file: string; data: string }>> {
  const root = path.join(dataDir, "mail", user);
  const out: Array<{ file: string; data: string }> = [];
  for (const sub of ["new", "cur"]) {
    let files: string[];
    try {
      files = await fs.readdir(path.join(root, sub));
    } catch {
      continue;
    }
    for (const f of files.sort()) out.push({ file: path.join(sub, f), data: await fs.readFile(path.join(root, sub, f), "latin1") });
  }
  return out;
}

/** Entries in the outbound queue (queue/msg). */
export async function queued(dataDir: string): Promise<Buffer[]> {
  const dir = path.join(dataDir, "queue", "msg");
  let files: string[];
  try {
    files = await fs.readdir(dir);
  } catch {
    return [];
  }
  return Promise.all(files.sort().map((f) => fs.readFile(path.join(dir, f))));
}

/** A message with CRLF line ends and a Message-ID to find it by. */
export function message(id: string, body = "Hello.", extraHeaders = ""): string {
  return `From: sender@example.org\r\nTo: lx@lx.com\r\nSubject: test ${id}\r\nMessage-ID: <${id}@test.example>\r\n${extraHeaders}\r\n${body}\r\n`;
}

/** Sends one message over a raw client (pipelined MAIL/RCPT/DATA); returns the final reply. */
export async function sendRaw(c: RawClient, from: string, to: string[], data: string): Promise<SmtpReply> {
  const mail = await c.cmd(`MAIL FROM:<${from}>`);
  if (mail.code !== 250) return mail;
  for (const r of to) {
    const rr = await c.cmd(`RCPT TO:<${r}>`);
    if (rr.code !== 250) return rr;
  }
  const d = await c.cmd("DATA");
  if (d.code !== 354) return d;
  c.write(`${data.replace(/^\./gm, "..")}.\r\n`);
  return c.read();
}
