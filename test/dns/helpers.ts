/**
 * Helpers for the DNS tests and the dnsperf benchmark: configs on ephemeral loopback ports with a
 * temporary dataDir, a `dig` runner that parses its output, and a private `named` (BIND) instance.
 * Only loopback is ever addressed; named is started with recursion and DNSSEC validation off, so
 * it never queries root servers, and is stopped by its own PID.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import * as dgram from "node:dgram";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { loadStack, readStackConfig, stackFile } from "../../config/load";
import type { MailConfig } from "../../config/schema";

export function tempDir(prefix = "mailstack-dns-"): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * The dev stack with DNS on 127.0.0.1, port 0, the given dataDir, and `dns`/other overrides
 * (unprefixed keys). `dns` overrides are merged into the stack's own `dns` map.
 */
export function devConfig(dataDir: string, overrides: Record<string, unknown> = {}, stack = "dev"): MailConfig {
  const raw = readStackConfig(stackFile(stack));
  const listen = { ...((raw["mailstack:listen"] as Record<string, unknown>) ?? {}), address: "127.0.0.1", dns: 0 };
  const { dns, listen: listenOverride, ...rest } = overrides as { dns?: Record<string, unknown>; listen?: Record<string, unknown> };
  const out: Record<string, unknown> = {
    "mailstack:dataDir": dataDir,
    "mailstack:listen": { ...listen, ...(listenOverride ?? {}) },
    "mailstack:dns": { ...((raw["mailstack:dns"] as Record<string, unknown>) ?? {}), ...(dns ?? {}) },
  };
  for (const [k, v] of Object.entries(rest)) out[`mailstack:${k}`] = v;
  return loadStack(stack, out);
}

/** A port that is free for both UDP and TCP on 127.0.0.1 right now. */
export async function freePort(): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const u = dgram.createSocket("udp4");
    const port = await new Promise<number>((res, rej) => {
      u.once("error", rej);
      u.bind(0, "127.0.0.1", () => res(u.address().port));
    });
    const ok = await new Promise<boolean>((res) => {
      const s = net.createServer();
      s.once("error", () => res(false));
      s.listen(port, "127.0.0.1", () => s.close(() => res(true)));
    });
    await new Promise<void>((r) => u.close(() => r()));
    if (ok) return port;
  }
  throw new Error("no free port");
}

export interface DigRecord {
  name: string;
  ttl: number;
  type: string;
  data: string;
}
export interface DigResult {
  status: string | null;
  opcode: string | null;
  flags: string[];
  counts: Record<string, number>;
  answer: DigRecord[];
  authority: DigRecord[];
  additional: DigRecord[];
  edns: { version: number; udp: number } | null;
  /** For AXFR: the records dig printed; `transferFailed` when it said so. */
  transferFailed: boolean;
  server: string | null;
  msgSize: number | null;
  stdout: string;
}

function parseRecord(line: string): DigRecord | null {
  const m = /^(\S+)\s+(\d+)\s+IN\s+(\S+)\s+(.*)$/.exec(line.trim());
  return m ? { name: m[1]!, ttl: Number(m[2]), type: m[3]!, data: m[4]!.trim() } : null;
}

export function parseDig(stdout: string): DigResult {
  const r: DigResult = {
    status: null,
    opcode: null,
    flags: [],
    counts: {},
    answer: [],
    authority: [],
    additional: [],
    edns: null,
    transferFailed: /; Transfer failed\./.test(stdout),
    server: null,
    msgSize: null,
    stdout,
  };
  let section: DigRecord[] | null = null;
  let sawHeader = false;
  for (const line of stdout.split("\n")) {
    let m = /->>HEADER<<- opcode: (\S+), status: (\S+), id:/.exec(line);
    if (m) {
      r.opcode = m[1]!.replace(/,$/, "");
      r.status = m[2]!.replace(/,$/, "");
      sawHeader = true;
      continue;
    }
    m = /^;; flags:([^;]*);(.*)$/.exec(line);
    if (m) {
      r.flags = m[1]!.trim().split(/\s+/).filter(Boolean);
      for (const c of m[2]!.matchAll(/(\w+): (\d+)/g)) r.counts[c[1]!] = Number(c[2]);
      continue;
    }
    m = /^; EDNS: version: (\d+), flags:[^;]*; udp: (\d+)/.exec(line);
    if (m) {
      r.edns = { version: Number(m[1]), udp: Number(m[2]) };
      continue;
    }
    m = /^;; SERVER: (.*)$/.exec(line);
    if (m) r.server = m[1]!;
    m = /^;; MSG SIZE\s+rcvd: (\d+)/.exec(line);
    if (m) r.msgSize = Number(m[1]);
    if (/^;; ANSWER SECTION:/.test(line)) section = r.answer;
    else if (/^;; AUTHORITY SECTION:/.test(line)) section = r.authority;
    else if (/^;; ADDITIONAL SECTION:/.test(line)) section = r.additional;
    else if (line.trim() === "") section = null;
    else if (!line.startsWith(";")) {
      const rec = parseRecord(line);
      // AXFR output has no section headers: records go to `answer`.
      if (rec) (section ?? (sawHeader ? null : r.answer))?.push(rec);
    }
  }
  return r;
}

/** Runs dig against 127.0.0.1:port, asynchronously (the server under test shares this process). */
export function dig(port: number, args: string[], { server = "127.0.0.1" } = {}): Promise<DigResult> {
  return new Promise((resolve, reject) => {
    execFile("dig", [`@${server}`, "-p", String(port), "+tries=1", "+time=3", ...args], { timeout: 20_000 }, (err, stdout) => {
      // dig exits 9 when no reply came; that is a result for the tests, not an error.
      if (err && typeof err.code !== "number") return reject(err);
      resolve(parseDig(stdout));
    });
  });
}

export interface Named {
  proc: ChildProcess;
  pid: number;
  port: number;
  dir: string;
  log: () => string;
  stop: () => Promise<void>;
}

/**
 * Starts `named -g` with `conf` (a full named.conf body; `@DIR@` and `@PORT@` are replaced) in
 * `dir`, and waits until it answers on 127.0.0.1:port. Throws with named's output if it cannot.
 */
export async function startNamed(dir: string, conf: string, port: number, readyZone: string): Promise<Named> {
  const confPath = path.join(dir, "named.conf");
  writeFileSync(confPath, conf.replaceAll("@DIR@", dir).replaceAll("@PORT@", String(port)));
  let output = "";
  const proc = spawn("named", ["-g", "-4", "-c", confPath], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  proc.stdout!.on("data", (d: Buffer) => (output += d.toString()));
  proc.stderr!.on("data", (d: Buffer) => (output += d.toString()));
  let exited = false;
  const exitedP = new Promise<void>((r) =>
    proc.once("exit", () => {
      exited = true;
      r();
    }),
  );
  const named: Named = {
    proc,
    pid: proc.pid!,
    port,
    dir,
    log: () => output,
    stop: async () => {
      if (!exited) {
        process.kill(proc.pid!, "SIGTERM");
        const t = setTimeout(() => !exited && process.kill(proc.pid!, "SIGKILL"), 5000);
        await exitedP;
        clearTimeout(t);
      }
    },
  };
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`named exited at start:\n${output}`);
    if (/running/.test(output)) {
      const r = await dig(port, [readyZone, "SOA", "+norec", "+time=1"]);
      if (r.status) return named;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  await named.stop();
  throw new Error(`named did not come up in 15 s:\n${output}`);
}

/** Options every private named gets: loopback only, no recursion, no validation, no rndc. */
export function namedOptions(extra = ""): string {
  return `options {
  directory "@DIR@";
  pid-file "@DIR@/named.pid";
  session-keyfile "@DIR@/session.key";
  managed-keys-directory "@DIR@";
  listen-on port @PORT@ { 127.0.0.1; };
  listen-on-v6 { none; };
  recursion no;
  dnssec-validation no;
  notify no;
  querylog no;
  ${extra}
};
controls { };
`;
}

export async function until<T>(fn: () => Promise<T | null | undefined | false>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** `n` UDP sockets bound to ephemeral ports on 127.0.0.1 (so `n` source ports). */
export function loopbackSockets(n: number): Promise<dgram.Socket[]> {
  return Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<dgram.Socket>((resolve) => {
          const s = dgram.createSocket("udp4");
          s.bind(0, "127.0.0.1", () => resolve(s));
        }),
    ),
  );
}
