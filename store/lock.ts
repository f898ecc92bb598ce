/**
 * Cross-process locks on plain files, as Dovecot takes them on a Maildir:
 *
 * - `withDotlock(target)`: the short-lived `<target>.lock` dotlock Dovecot takes around
 *   `dovecot-uidlist` and `dovecot-keywords` updates. Created with O_EXCL; the file holds
 *   `<pid>:<hostname>:<token>` (Dovecot writes `<pid>:<hostname>` and reads only those two fields).
 *   A lock is stale when its holder on this host is dead (or is a previous incarnation of this
 *   pid, e.g. pid 1 in a restarted container), or when it was not touched for `staleMs`
 *   (2 minutes, Dovecot's uidlist default), which covers holders on other hosts.
 * - `tryHoldLock(file)`: a long-lived exclusive lock (the POP3 maildrop lock, RFC 1939 §8) with
 *   the same contents. Its holder refreshes the mtime, so it only goes stale by timeout when the
 *   holder is on another host and stopped refreshing.
 *
 * Inside one process, waiters for the same dotlock queue on a promise chain instead of polling.
 *
 * Full disk (ENOSPC/EDQUOT while writing the holder string): the O_EXCL file is created but
 * empty. It is still ours and still excludes everybody, so we keep it as the lock (Dovecot does
 * the same) rather than fail the reader: an empty or unparseable lock has no holder to check, so
 * it goes stale only by its mtime (`staleMs`), and we remove it on release as usual.
 */
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as os from "node:os";
import { TemporaryFailure } from "./types";

const HOSTNAME = os.hostname();
/** Distinguishes this process from an earlier one that had the same pid (containers: pid 1). */
const TOKEN = randomBytes(6).toString("hex");

function lockContents(): string {
  return `${process.pid}:${HOSTNAME}:${TOKEN}`;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Whether the lock file at `file` may be broken; when it may not and the file exists, `holder` is
 * what it holds (`<pid>:<host>:<token>`, trimmed; empty for an empty lock).
 */
async function isStale(file: string, staleMs: number): Promise<{ stale: boolean; ino?: number; mtimeMs?: number; holder?: string }> {
  let st: import("node:fs").Stats;
  let text: string;
  try {
    st = await fs.stat(file);
    text = await fs.readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { stale: false };
    throw err;
  }
  // An empty or unparseable lock (holder wrote nothing: disk full, or it is being written right
  // now) names no holder: only its age counts.
  const [pidText, host, token] = text.trim().split(":");
  const pid = Number(pidText);
  if (host === HOSTNAME && Number.isInteger(pid) && pid > 0) {
    if (pid === process.pid) {
      // Our own pid: ours now (then not stale) or an earlier incarnation's.
      if (token !== undefined && token !== TOKEN) return { stale: true, ino: st.ino, mtimeMs: st.mtimeMs };
    } else if (!pidAlive(pid)) return { stale: true, ino: st.ino, mtimeMs: st.mtimeMs };
  }
  if (Date.now() - st.mtimeMs > staleMs) return { stale: true, ino: st.ino, mtimeMs: st.mtimeMs };
  return { stale: false, holder: text.trim() };
}

/** Removes a stale lock, but only if it is still the very file we judged stale. */
async function breakLock(file: string, ino: number | undefined, mtimeMs: number | undefined): Promise<void> {
  try {
    const st = await fs.stat(file);
    if (st.ino === ino && st.mtimeMs === mtimeMs) await fs.unlink(file);
  } catch {
    // gone already
  }
}

/** Whether an error means "no space left" (full disk or quota). */
export function isNoSpace(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === "ENOSPC" || code === "EDQUOT";
}

/**
 * Creates the lock file with O_EXCL. Resolves to "full" (our contents written), "empty" (created,
 * but the disk is full: the empty file is still ours and still excludes everybody; without a
 * parseable holder it goes stale by mtime only, as Dovecot's dotlocks do) or null (held).
 */
async function tryCreate(file: string): Promise<"full" | "empty" | null> {
  let fh: import("node:fs/promises").FileHandle;
  try {
    fh = await fs.open(file, "wx", 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return null;
    throw err;
  }
  try {
    await fh.writeFile(lockContents());
  } catch (err) {
    if (isNoSpace(err)) {
      // Keep it as an empty lock (a torn holder string would be as unparseable, but be tidy).
      await fh.truncate(0).catch(() => undefined);
      await fh.close().catch(() => undefined);
      return "empty";
    }
    await fh.close().catch(() => undefined);
    await fs.unlink(file).catch(() => undefined);
    throw err;
  }
  await fh.close();
  return "full";
}

export interface DotlockOptions {
  /** Give up (TemporaryFailure) after this long. Default 30 s. */
  timeoutMs?: number;
  /** A lock older than this is stale. Default 2 minutes. */
  staleMs?: number;
}

const localQueues = new Map<string, Promise<unknown>>();

/**
 * Runs `fn` while holding the dotlock `<target>.lock`. Serialised in-process per target and
 * exclusive across processes.
 */
export async function withDotlock<T>(target: string, fn: () => Promise<T>, opts: DotlockOptions = {}): Promise<T> {
  const lockFile = `${target}.lock`;
  const prev = localQueues.get(lockFile) ?? Promise.resolve();
  let done!: () => void;
  const mine = new Promise<void>((r) => {
    done = r;
  });
  const chained = prev.then(() => mine);
  localQueues.set(lockFile, chained);
  await prev.catch(() => undefined);
  try {
    await acquire(lockFile, opts.timeoutMs ?? 30_000, opts.staleMs ?? 120_000);
    try {
      return await fn();
    } finally {
      await fs.unlink(lockFile).catch(() => undefined);
    }
  } finally {
    done();
    if (localQueues.get(lockFile) === chained) localQueues.delete(lockFile);
  }
}

async function acquire(lockFile: string, timeoutMs: number, staleMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let delay = 2;
  for (;;) {
    if ((await tryCreate(lockFile)) !== null) return;
    const s = await isStale(lockFile, staleMs);
    if (s.stale) {
      await breakLock(lockFile, s.ino, s.mtimeMs);
      continue;
    }
    if (Date.now() > deadline) throw new TemporaryFailure(`timed out waiting for lock ${lockFile}`, "ELOCKED");
    await new Promise((r) => setTimeout(r, delay + Math.random() * delay));
    delay = Math.min(delay * 2, 50);
  }
}

/**
 * Who holds a `tryHoldLock` lock: its `<pid>:<host>:<token>` string while a live holder has it,
 * null when there is no lock file or its holder is gone (the lock is stale; it is not broken here).
 */
export async function lockHolder(file: string, staleMs = 300_000): Promise<string | null> {
  const s = await isStale(file, staleMs);
  return s.stale ? null : (s.holder ?? null);
}

/**
 * Takes a long-lived exclusive lock file without waiting. Resolves to a release function, or
 * null when a live holder has it. The holder touches the file every `refreshMs` so holders on
 * other hosts can tell it is alive; without refreshes it goes stale after `staleMs`.
 */
export async function tryHoldLock(
  file: string,
  opts: { staleMs?: number; refreshMs?: number } = {},
): Promise<(() => Promise<void>) | null> {
  const staleMs = opts.staleMs ?? 300_000;
  const refreshMs = opts.refreshMs ?? 60_000;
  for (let attempt = 0; attempt < 3; attempt++) {
    const made = await tryCreate(file);
    if (made !== null) {
      const st = await fs.stat(file);
      const timer = setInterval(() => {
        const now = new Date();
        fs.utimes(file, now, now).catch(() => undefined);
      }, refreshMs);
      timer.unref();
      let released = false;
      return async () => {
        if (released) return;
        released = true;
        clearInterval(timer);
        // Remove only our own lock file (a breaker may have replaced it after a long stall).
        try {
          const now = await fs.stat(file);
          const text = await fs.readFile(file, "utf8");
          const ours = text === lockContents() || (made === "empty" && text === "");
          if (now.ino === st.ino && ours) await fs.unlink(file);
        } catch {
          // already gone
        }
      };
    }
    const s = await isStale(file, staleMs);
    if (!s.stale) return null;
    await breakLock(file, s.ino, s.mtimeMs);
  }
  return null;
}
