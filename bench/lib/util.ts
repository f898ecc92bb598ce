/**
 * Small helpers the harness and its scenarios share: running commands, waiting, temp dirs and
 * free loopback ports. Nothing here talks to anything but loopback.
 */
import { type SpawnOptions, spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import { connect } from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { freeLoopbackPort } from "../../test/helpers/ports";
import { sleep, waitFor, within } from "../../test/helpers/wait";

export { sleep, within };

export const REPO = path.resolve(__dirname, "..", "..");

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (no shell). Never throws on a non-zero exit; the caller decides. */
export function exec(cmd: string, args: string[], opts: SpawnOptions & { timeoutMs?: number; input?: string } = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...opts, stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer =
      opts.timeoutMs !== undefined
        ? setTimeout(() => {
            if (child.pid !== undefined) child.kill("SIGKILL");
          }, opts.timeoutMs)
        : undefined;
    child.on("error", (err) => {
      if (timer) clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    if (opts.input !== undefined) {
      child.stdin!.on("error", () => undefined);
      child.stdin!.end(opts.input);
    }
  });
}

/** Like exec, but throws with the output when the command fails. */
export async function run(cmd: string, args: string[], opts: SpawnOptions & { timeoutMs?: number; input?: string } = {}): Promise<string> {
  const r = await exec(cmd, args, opts);
  if (r.code !== 0)
    throw new Error(`${cmd} ${args.join(" ")} failed (${r.code ?? r.signal}): ${(r.stderr || r.stdout).trim().slice(-2000)}`);
  return r.stdout;
}

export async function which(cmd: string): Promise<string | null> {
  for (const dir of (process.env.PATH ?? "").split(":").concat(["/usr/sbin", "/sbin", "/usr/bin"])) {
    const p = path.join(dir, cmd);
    try {
      await fs.access(p, fs.constants?.X_OK ?? 1);
      return p;
    } catch {
      // keep looking
    }
  }
  return null;
}

/** Polls `pred` until it returns a truthy value; throws after `timeoutMs` with `what`. */
export function waitUntil<T>(pred: () => T | Promise<T>, what: string, timeoutMs = 15_000, intervalMs = 50): Promise<NonNullable<T>> {
  return waitFor(pred, what, timeoutMs, intervalMs);
}

/**
 * A fresh directory under the system temp dir. Mode 0755 on the whole path, because reference
 * servers drop privileges (postfix, dovecot, nobody) and must be able to walk into it.
 */
export async function makeTempRoot(prefix: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  await fs.chmod(dir, 0o755);
  return dir;
}

/** A port that is free for TCP (and UDP with `udp`) on 127.0.0.1 right now. */
export function freePort(udp = false): Promise<number> {
  return freeLoopbackPort("127.0.0.1", udp);
}

/** Resolves when something accepts TCP connections on host:port. */
export async function waitForPort(port: number, host = "127.0.0.1", timeoutMs = 20_000): Promise<void> {
  await waitUntil(
    () =>
      new Promise<boolean>((resolve) => {
        const s = connect({ host, port });
        s.once("connect", () => {
          s.destroy();
          resolve(true);
        });
        s.once("error", () => resolve(false));
      }),
    `${host}:${port} to accept connections`,
    timeoutMs,
    100,
  );
}

export function median(xs: number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** "min–max ms" of some timings (one decimal below 10 ms), for a row's note beside their median. */
export function rangeMs(xs: number[]): string {
  const max = Math.max(...xs);
  const digits = max < 10 ? 1 : 0;
  return `${Math.min(...xs).toFixed(digits)}–${max.toFixed(digits)} ms`;
}

export function fmt(n: number | null | undefined, digits = 0): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "–";
  return n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/** The PRNG the tests use too (test/helpers/prng.ts). */
export { prng } from "../../test/helpers/prng";

export const log = (msg: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
