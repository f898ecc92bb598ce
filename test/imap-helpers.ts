/**
 * Shared by the IMAP tests: a live server on ephemeral loopback ports over a temporary dataDir
 * (config from the dev stack), and a raw IMAP client that shows every byte the server sends,
 * literals included.
 */
import { execFile } from "node:child_process";
import { ImapFlow, type ImapFlowOptions } from "imapflow";
import { startImap } from "../imap";
import { MaildirDelivery } from "../store/deliver";
import { type RawConnectOptions, RawSocketClient } from "./helpers/raw-client";
import { type EnvOptions, PASSWORDS, type ServiceEnv, startServiceEnv } from "./helpers/stack";

export { PASSWORDS } from "./helpers/stack";

export interface ImapEnv extends ServiceEnv {
  deliver(user: string, message: string | Buffer): Promise<void>;
}

export type ImapEnvOptions = EnvOptions;

export async function startImapEnv(opts: ImapEnvOptions = {}): Promise<ImapEnv> {
  const base = await startServiceEnv(startImap, ["imap", "imaps"], { prefix: "mailstack-imap-", ...opts });
  const delivery = new MaildirDelivery(base.dataDir);
  return Object.assign(base, {
    async deliver(user: string, message: string | Buffer) {
      await delivery.deliverLocal([user], Buffer.isBuffer(message) ? message : Buffer.from(message));
    },
  });
}

/** A message with CRLF line ends. */
export function message(subject: string, body: string[] = ["Hello."], extra: string[] = []): string {
  return [
    "From: Sender <sender@example.org>",
    "To: lx@lx.com",
    `Subject: ${subject}`,
    "Date: Mon, 06 Jan 2025 10:00:00 +0000",
    `Message-ID: <${subject.replace(/\W/g, "")}@example.org>`,
    ...extra,
    "",
    ...body,
    "",
  ].join("\r\n");
}

export interface Reply {
  /** The tagged status line, e.g. `A1 OK [READ-WRITE] SELECT completed`. */
  status: string;
  /** Untagged responses (each as text, literals inline) before the tagged line. */
  untagged: string[];
}

/** A raw IMAP client: responses are read exactly as sent; literals are read inline. */
export class RawImap extends RawSocketClient {
  private n = 0;
  greeting = "";

  static async connect(port: number, opts: RawConnectOptions & { greeting?: boolean } = {}): Promise<RawImap> {
    const c = await RawSocketClient.open(new RawImap(), port, opts);
    if (opts.greeting !== false) c.greeting = await c.response();
    return c;
  }

  /** Upgrades this connection to TLS (after STARTTLS). */
  async startTls(ca: string): Promise<void> {
    await this.upgradeTls(ca);
  }

  /** One response (a line plus any literals it announces), as latin1 text without the final CRLF. */
  async response(timeoutMs = 10_000): Promise<string> {
    let out = "";
    for (;;) {
      const text = (await this.rawLine(timeoutMs)).toString("latin1");
      const m = /~?\{(\d+)\}\r\n$/.exec(text);
      if (!m) return out + text.slice(0, -2);
      const size = Number(m[1]);
      const lit = await this.until(() => (this.buf.length >= size ? size : -1), timeoutMs);
      out += text + lit.toString("latin1");
    }
  }

  nextTag(): string {
    return `A${++this.n}`;
  }

  /** Sends `<tag> <command>` and collects responses up to the tagged one. */
  async cmd(command: string, timeoutMs?: number): Promise<Reply> {
    const tag = this.nextTag();
    this.write(`${tag} ${command}\r\n`);
    return this.collect(tag, timeoutMs);
  }

  async collect(tag: string, timeoutMs?: number): Promise<Reply> {
    const untagged: string[] = [];
    for (;;) {
      const r = await this.response(timeoutMs);
      if (r.startsWith(`${tag} `)) return { status: r, untagged };
      untagged.push(r);
    }
  }

  async login(user = "lx"): Promise<Reply> {
    const r = await this.cmd(`LOGIN ${user} ${PASSWORDS[user]}`);
    if (!/^A\d+ OK/.test(r.status)) throw new Error(`login failed: ${r.status}`);
    return r;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** An imapflow client for user lx on the plain port (trusted loopback, no TLS needed). */
export function flow(env: ImapEnv, opts: Partial<ImapFlowOptions> = {}, user = "lx"): ImapFlow {
  return new ImapFlow({
    host: "127.0.0.1",
    port: env.port,
    secure: false,
    doSTARTTLS: false,
    auth: { user, pass: PASSWORDS[user]! },
    logger: false,
    ...opts,
  } as ImapFlowOptions);
}

/** Runs a python3 script with arguments; resolves stdout (rejects with stderr on failure). */
export function python(script: string, args: string[], timeoutMs = 20000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile("python3", ["-c", script, ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** Runs curl; resolves { code, stdout, stderr } without throwing on curl errors. */
export function curl(args: string[], timeoutMs = 20000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile("curl", ["-sS", "--max-time", "15", ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}
