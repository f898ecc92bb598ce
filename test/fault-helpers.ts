/**
 * Shared by the fault tests (test/fault-*.test.ts): services run as real processes through the
 * CLI (`mailstack serve <service> --config FILE`, sources via ts-node) so they can be killed,
 * traced and measured; a raw SMTP client; and message fixtures that can be checked byte for byte
 * after a crash. Everything on loopback, ephemeral ports, temp dirs.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { promises as fs, readFileSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { certFiles } from "./helpers/cert";
import { LineClient, openSocket } from "./helpers/line-client";
import { type ServiceName, ServiceProcess, type StackUser, serviceAvailable, stackConfig } from "./helpers/service-process";

export const REPO = path.resolve(__dirname, "..");
export { sleep, waitFor } from "./helpers/wait";
export type { ServiceName };
export { ServiceProcess };

export const isRoot = process.getuid?.() === 0;

/** Whether the working tree has this service yet (its folder's index.ts exports start<Name>). */
export const hasService: (name: ServiceName) => boolean = serviceAvailable;

export function which(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

export async function tempDir(prefix: string): Promise<string> {
  const d = await fs.mkdtemp(path.join(os.tmpdir(), `mailstack-${prefix}-`));
  await fs.chmod(d, 0o755);
  return d;
}

/** A fixed argon2id hash of "lx-password" (from stacks/Pulumi.dev.yaml), so no test hashes. */
export const LX: StackUser = {
  name: "lx",
  password: "lx-password",
  hash: "$argon2id$v=19$m=19456,t=2,p=1$RrqQG0LF6Ad78h1f8BbPbw$JtkF/BQr9iBNlsHE4l1FA31sSfhmNM+Dq1q1q94tJ+I",
};

export interface ConfigOptions {
  dataDir: string;
  listen: Partial<Record<"smtp" | "submission" | "smtps" | "pop3" | "pop3s" | "imap" | "imaps" | "dns", number>>;
  extra?: Record<string, unknown>;
}

/** Writes a stack config (JSON, `mailstack:` keys under `config:`) and returns its path. */
export async function writeConfig(file: string, o: ConfigOptions): Promise<string> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  const cert = certFiles(path.dirname(file));
  await fs.writeFile(
    file,
    JSON.stringify(
      stackConfig({ dataDir: o.dataDir, users: [LX], listen: o.listen, ...cert, ...(o.extra ? { extra: o.extra } : {}) }),
      null,
      2,
    ),
  );
  return file;
}

/** Starts a service process from the TypeScript sources; its log goes next to the config. */
export function startService(name: ServiceName, configFile: string, label: string = name): Promise<ServiceProcess> {
  return ServiceProcess.start(name, configFile, { runtime: "ts-node", logFile: path.join(path.dirname(configFile), `${label}.log`) });
}

/** The seed of a fault test's random choices: printed in test names, FAULT_SEED=... replays it. */
export const FAULT_SEED = Number(process.env.FAULT_SEED ?? Date.now() % 1_000_000);

export interface FaultArea {
  /** The temp dir: one for the test file, or a fresh one for each test (`perTest`). */
  readonly dir: string;
  /**
   * Writes a config at `<dir>/<sub>/config.json` with its data directory at `<dir>/<sub>/data`
   * unless `o.dataDir` names another.
   */
  config(o: Omit<ConfigOptions, "dataDir"> & { dataDir?: string }, sub?: string): Promise<{ file: string; dataDir: string }>;
  /** Starts a service process (log next to the config) that is stopped after the test. */
  start(name: ServiceName, configFile: string, label?: string): Promise<ServiceProcess>;
}

/**
 * A fault test file's working area, with the jest hooks that clean it up: a temp dir made before
 * the file's tests (or each test, with `perTest`) and removed after them, and service processes
 * that are stopped after each test (processes already stopped or killed are left as they are).
 */
export function faultArea(prefix: string, o: { perTest?: boolean } = {}): FaultArea {
  let dir = "";
  const procs: ServiceProcess[] = [];
  const remove = async () => {
    if (dir) await fs.rm(dir, { recursive: true, force: true });
    dir = "";
  };
  (o.perTest ? beforeEach : beforeAll)(async () => {
    dir = await tempDir(prefix);
  });
  afterEach(async () => {
    for (const p of procs.splice(0)) await p.stop();
    if (o.perTest) await remove();
  });
  if (!o.perTest) afterAll(remove);
  return {
    get dir() {
      return dir;
    },
    async config(c, sub = "") {
      const dataDir = c.dataDir ?? path.join(dir, sub, "data");
      return { file: await writeConfig(path.join(dir, sub, "config.json"), { ...c, dataDir }), dataDir };
    },
    async start(name, configFile, label) {
      const p = await startService(name, configFile, label);
      procs.push(p);
      return p;
    },
  };
}

/** RSS of a process, bytes. */
export function rssOf(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : 0;
}

// ---------------------------------------------------------------------------------------------
// A raw SMTP client: replies are read whole (multi-line), one command at a time.

export class SmtpConn extends LineClient {
  static async open(port: number, host = "127.0.0.1"): Promise<SmtpConn> {
    return new SmtpConn(await openSocket(port, host));
  }

  /** The next complete reply: `{ code, text }`. Throws if the connection ends first. */
  async reply(timeoutMs = 30_000): Promise<{ code: number; text: string }> {
    const end = Date.now() + timeoutMs;
    const lines: string[] = [];
    for (;;) {
      const line = await this.readLine(Math.max(1, end - Date.now()), "reply timeout");
      lines.push(line);
      if (/^\d{3}-/.test(line)) continue;
      const m = /^(\d{3})(?: |$)/.exec(line);
      if (!m) throw new Error(`not an SMTP reply: ${JSON.stringify(lines.join("\n"))}`);
      return { code: Number(m[1]), text: lines.join("\n").trim() };
    }
  }

  async cmd(line: string): Promise<{ code: number; text: string }> {
    this.sock.write(`${line}\r\n`);
    return this.reply();
  }

  close(): void {
    this.destroy();
  }
}

export interface SendResult {
  code: number;
  text: string;
  stage: string;
}

/**
 * One SMTP transaction on an open connection (greeting already read). Returns the reply that
 * ended it: the DATA-end reply when everything was accepted, otherwise the first refusal.
 */
export async function transaction(c: SmtpConn, from: string, to: string[], data: Buffer): Promise<SendResult> {
  let r = await c.cmd(`MAIL FROM:<${from}>`);
  if (r.code !== 250) return { ...r, stage: "MAIL" };
  for (const t of to) {
    r = await c.cmd(`RCPT TO:<${t}>`);
    if (r.code !== 250) return { ...r, stage: "RCPT" };
  }
  r = await c.cmd("DATA");
  if (r.code !== 354) return { ...r, stage: "DATA" };
  c.sock.write(dotStuff(data));
  c.sock.write(".\r\n");
  r = await c.reply(60_000);
  return { ...r, stage: "DATA-end" };
}

/** Opens a connection, reads the greeting, EHLO, one transaction, QUIT. */
export async function sendMail(port: number, to: string[], data: Buffer, from = "sender@example.org"): Promise<SendResult> {
  const c = await SmtpConn.open(port);
  try {
    const g = await c.reply();
    if (g.code !== 220) return { ...g, stage: "greeting" };
    const e = await c.cmd("EHLO client.example.org");
    if (e.code !== 250) return { ...e, stage: "EHLO" };
    const r = await transaction(c, from, to, data);
    await c.cmd("QUIT").catch(() => undefined);
    return r;
  } finally {
    c.close();
  }
}

export function dotStuff(data: Buffer): Buffer {
  let s = data.toString("latin1");
  if (!s.endsWith("\r\n")) s += "\r\n";
  return Buffer.from(s.replace(/^\./gm, ".."), "latin1");
}

// ---------------------------------------------------------------------------------------------
// Messages that can be recognised and checked byte for byte after a crash.

/** A message with a unique Message-ID and an X-Body-SHA256 of its body, CRLF line ends. */
export function makeMessage(id: string, bodyBytes: number, seed = 1): Buffer {
  let x = seed >>> 0;
  const lines: string[] = [];
  let len = 0;
  while (len < bodyBytes) {
    let line = "";
    while (line.length < 72) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      line += String.fromCharCode(97 + ((x >>> 16) % 26));
      if ((x >>> 8) % 9 === 0) line += " ";
    }
    lines.push(line);
    len += line.length + 2;
  }
  const body = `${lines.join("\r\n")}\r\n`;
  const sha = createHash("sha256").update(body).digest("hex");
  return Buffer.from(
    `From: <sender@example.org>\r\nTo: <lx@lx.com>\r\nSubject: fault ${id}\r\nMessage-ID: <${id}@fault.test>\r\nX-Body-SHA256: ${sha}\r\n\r\n${body}`,
  );
}

export interface FileCheck {
  id: string | null;
  complete: boolean;
}

/**
 * Checks a delivered file: it carries one of our Message-IDs and ends with exactly the message
 * that was sent (the server only prepends trace headers). Line ends compared as CRLF.
 */
export function checkDelivered(file: Buffer, sent: Map<string, Buffer>): FileCheck {
  const text = file.toString("latin1").replace(/\r?\n/g, "\r\n");
  const id = /^Message-ID: <([^>]+)@fault\.test>/im.exec(text)?.[1] ?? null;
  if (!id) return { id: null, complete: false };
  const orig = sent.get(id);
  if (!orig) return { id, complete: false };
  const o = orig.toString("latin1");
  return { id, complete: text.endsWith(o) && text.length >= o.length };
}

/** Every file in a Maildir folder's new/ and cur/, with its name. */
export async function maildirFiles(dir: string): Promise<Array<{ name: string; data: Buffer }>> {
  const out: Array<{ name: string; data: Buffer }> = [];
  for (const sub of ["new", "cur"]) {
    const names = await fs.readdir(path.join(dir, sub)).catch(() => [] as string[]);
    for (const n of names) out.push({ name: `${sub}/${n}`, data: await fs.readFile(path.join(dir, sub, n)) });
  }
  return out;
}
