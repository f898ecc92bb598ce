/**
 * Shared by the POP3 tests: a live server on ephemeral loopback ports over a temporary dataDir,
 * and a raw socket client that shows every byte the server sends.
 */
import { execFile } from "node:child_process";
import { promises as fs } from "node:fs";
import { startPop3 } from "../pop3";
import { MaildirDelivery } from "../store/deliver";
import { MaildirStore } from "../store/mailstore";
import { type RawConnectOptions, RawSocketClient } from "./helpers/raw-client";
import { type EnvOptions, PASSWORDS, type ServiceEnv, startServiceEnv } from "./helpers/stack";

export { type EnvOptions, PASSWORDS } from "./helpers/stack";

export interface Env extends ServiceEnv {
  deliver(user: string, message: string | Buffer): Promise<void>;
}

export async function startEnv(opts: EnvOptions = {}): Promise<Env> {
  const base = await startServiceEnv(startPop3, ["pop3", "pop3s"], { prefix: "mailstack-pop3-", ...opts });
  const delivery = new MaildirDelivery(base.dataDir);
  const store = new MaildirStore(base.dataDir);
  return Object.assign(base, {
    async deliver(user: string, message: string | Buffer) {
      const box = await store.open(user, "INBOX");
      try {
        await box.sync();
        const before = box.messages().length;
        await delivery.deliverLocal([user], Buffer.isBuffer(message) ? message : Buffer.from(message));
        // Let the store give it its UID now, so UIDs (and POP3 numbers) follow delivery order.
        // A sync in the same clock tick as the delivery may not see the file yet (the store
        // rescans a directory whose mtime did not move only later), hence the retries.
        await eventually(async () => {
          await box.sync();
          return box.messages().length > before;
        }, 200);
      } finally {
        await box.close();
      }
    },
  });
}

/** A message with CRLF line ends. */
export function message(subject: string, body: string[]): string {
  return [
    `From: sender@example.org`,
    `To: lx@lx.com`,
    `Subject: ${subject}`,
    `Message-ID: <${subject.replace(/\W/g, "")}@example.org>`,
    "",
    ...body,
    "",
  ].join("\r\n");
}

/** A raw POP3 client: every reply is read exactly as sent. */
export class RawClient extends RawSocketClient {
  static async connect(port: number, opts: RawConnectOptions = {}): Promise<RawClient> {
    return RawSocketClient.open(new RawClient(), port, opts);
  }

  /** One line without its CRLF. */
  async line(): Promise<string> {
    const b = await this.rawLine();
    return b.subarray(0, b.length - 2).toString("latin1");
  }

  /** A multi-line body up to and including ".\r\n", raw (still dot-stuffed). */
  async body(): Promise<Buffer> {
    return this.until(() => {
      if (this.buf.subarray(0, 3).toString() === ".\r\n") return 3;
      const i = this.buf.indexOf("\r\n.\r\n");
      return i < 0 ? -1 : i + 5;
    });
  }

  /** Sends a command and returns its status line. */
  async cmd(line: string): Promise<string> {
    this.write(`${line}\r\n`);
    return this.line();
  }

  /** Sends a command; for +OK also reads the multi-line body, returned un-stuffed as lines. */
  async multi(line: string): Promise<{ status: string; lines: string[] }> {
    const status = await this.cmd(line);
    if (!status.startsWith("+OK")) return { status, lines: [] };
    const raw = (await this.body()).toString("latin1");
    const lines = raw.split("\r\n").slice(0, -2);
    return { status, lines: lines.map((l) => (l.startsWith(".") ? l.slice(1) : l)) };
  }

  async login(user: string, password = PASSWORDS[user]!): Promise<string> {
    const u = await this.cmd(`USER ${user}`);
    if (!u.startsWith("+OK")) return u;
    return this.cmd(`PASS ${password}`);
  }

  /** STLS, then the TLS handshake over the same socket. `inject` goes in the same packet as STLS. */
  async stls(ca: string, inject = ""): Promise<string> {
    this.write(`STLS\r\n${inject}`);
    const reply = await this.line();
    if (!reply.startsWith("+OK")) return reply;
    await this.upgradeTls(ca);
    return reply;
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** QUIT (which releases a maildrop lock before its reply) and wait for the close. */
  async quit(): Promise<void> {
    if (this.isClosed) return;
    this.write("QUIT\r\n");
    const timer = setTimeout(() => this.destroy(), 2000);
    await this.closedPromise;
    clearTimeout(timer);
  }

  async closed(): Promise<void> {
    await this.closedPromise;
  }
}

/**
 * Connects and logs in. A maildrop lock still held by a session that is closing (the client
 * went away first) is waited out with new connections.
 */
export async function loginSession(port: number, user = "lx", opts: { tls?: boolean; ca?: string } = {}): Promise<RawClient> {
  for (let i = 0; i < 100; i++) {
    const c = await RawClient.connect(port, opts);
    await c.line();
    const r = await c.login(user);
    if (r.startsWith("+OK")) return c;
    c.destroy();
    if (!r.includes("[IN-USE]")) throw new Error(`login failed: ${r}`);
    await new Promise((res) => setTimeout(res, 20));
  }
  throw new Error("maildrop stayed locked");
}

/** Runs a program, resolving with stdout/stderr and the exit code (never rejects on exit code). */
export function run(
  cmd: string,
  args: string[],
  opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      args,
      { timeout: opts.timeoutMs ?? 20_000, encoding: "latin1", maxBuffer: 32 * 1024 * 1024, env: opts.env ?? process.env },
      (error, stdout, stderr) => {
        const code = error
          ? typeof (error as NodeJS.ErrnoException).code === "number"
            ? Number((error as NodeJS.ErrnoException).code)
            : 1
          : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
    if (opts.input !== undefined) child.stdin!.end(opts.input);
    else child.stdin!.end();
  });
}

/** Retries `fn` until it returns true (state that settles asynchronously, e.g. a released lock). */
export async function eventually(fn: () => Promise<boolean>, tries = 100): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error("condition never became true");
}

export async function listFiles(dir: string): Promise<string[]> {
  try {
    return (await fs.readdir(dir)).sort();
  } catch {
    return [];
  }
}

/**
 * Splits a pipelined POP3 transcript (replies to `commands`, in order) into status lines and
 * raw multi-line bodies (still dot-stuffed, with the terminator). `multi` says which commands
 * have a body after +OK.
 */
export function splitReplies(data: string, commands: string[], multi: (cmd: string) => boolean): Array<{ status: string; body: string }> {
  const out: Array<{ status: string; body: string }> = [];
  let pos = 0;
  for (const cmd of commands) {
    const eol = data.indexOf("\r\n", pos);
    if (eol < 0) throw new Error(`no reply to ${cmd}`);
    const status = data.slice(pos, eol);
    pos = eol + 2;
    let body = "";
    if (status.startsWith("+OK") && multi(cmd)) {
      const end = data.startsWith(".\r\n", pos) ? pos + 3 : data.indexOf("\r\n.\r\n", pos) + 5;
      if (end < pos) throw new Error(`unterminated reply to ${cmd}`);
      body = data.slice(pos, end);
      pos = end;
    }
    out.push({ status, body });
  }
  return out;
}
