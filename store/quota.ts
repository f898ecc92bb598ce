/**
 * Per-user storage quota (`users[].quota`, bytes): how much a user's whole Maildir holds, INBOX
 * and every Maildir++ subfolder (Trash and Junk included, as Dovecot's Maildir++ quota counts
 * them), `cur/` and `new/` (not `tmp/`).
 *
 * A message counts with the `,S=<bytes>` size in its file name (which every writer of ours and
 * Dovecot put there); a file without one is stat()ed once and remembered.
 *
 * Why not Maildir++'s `maildirsize` file: it is only right while every process that adds or
 * removes mail appends its delta, and our POP3 and IMAP expunges (and any Dovecot or hand
 * cleanup) do not; it drifts until it is recalculated. Instead each process keeps an
 * in-memory cache, checked against the directories themselves:
 *
 * - per folder directory (`cur/`, `new/`): its mtime and the sum of its messages. A directory
 *   whose mtime did not change is not read again (any add, remove or flag rename changes it),
 *   so a big, quiet `cur/` costs one stat();
 * - an mtime less than 2 s old is never trusted (a change in the same clock tick may not move
 *   it), so a busy directory is simply read again next time;
 * - the cache is reused without any stat for `ttlMs` (default 2 s), so an SMTP burst costs at
 *   most one check per user per TTL;
 * - our own deliveries (SMTP, IMAP APPEND/COPY) are added to the cached total at once
 *   (`Reservation.commit`), so the TTL never lets this process overshoot by more than the
 *   deliveries other processes made within one TTL.
 *
 * Concurrent checks within one process are exact: `reserve()` checks and reserves in one
 * synchronous step after the cache is fresh, so two messages that each fit but not together are
 * never both accepted. Across processes (the SMTP and IMAP containers) the quota is soft by at
 * most one TTL's worth of the other process's deliveries, as Dovecot's quota is soft between
 * concurrent sessions.
 */
import { promises as fs, type Stats } from "node:fs";
import * as path from "node:path";
import { maildirRoot } from "./maildir";

export interface QuotaOptions {
  /** How long a checked usage is reused without looking at the disk (ms). Default 2000. */
  ttlMs?: number;
}

/** A user that would go over quota: who, what they use now, and their limit. */
export interface OverQuota {
  user: string;
  usage: number;
  limit: number;
}

/** Space held for a delivery in progress. Call exactly one of the two. */
export interface Reservation {
  /** The message is stored: its bytes now count as used. */
  commit(): void;
  /** Nothing was stored: give the space back. */
  release(): void;
}

interface DirState {
  mtimeMs: number;
  /** The mtime was old enough to trust: unchanged mtime ⇒ unchanged content. */
  trusted: boolean;
  bytes: number;
  /** Sizes of files without `,S=` (by file name), so they are stat()ed once. */
  statted: Map<string, number>;
}

interface UserState {
  rootMtimeMs: number;
  rootTrusted: boolean;
  /** Folder directories (the root and each `.Folder`). */
  folders: string[];
  /** `<folder>/cur` and `<folder>/new` → state. */
  dirs: Map<string, DirState>;
  /** Sum of the dirs as last read. */
  scanned: number;
  /** Bytes we stored since the last read started (not yet seen by a read). */
  delta: number;
  /** Bytes reserved by deliveries in progress. */
  pending: number;
  checkedAt: number;
  refreshing: Promise<void> | null;
}

const UNTRUSTED_MTIME_MS = 2000;

const NO_RESERVATION: Reservation = { commit: () => undefined, release: () => undefined };

export class QuotaTracker {
  private readonly limits = new Map<string, number>();
  private readonly state = new Map<string, UserState>();
  private readonly ttlMs: number;

  constructor(
    private readonly dataDir: string,
    users: ReadonlyArray<{ name: string; quota?: number | undefined }>,
    opts: QuotaOptions = {},
  ) {
    for (const u of users) if (u.quota !== undefined) this.limits.set(u.name, u.quota);
    this.ttlMs = opts.ttlMs ?? 2000;
  }

  /** The user's quota in bytes, or undefined when they have none. */
  limit(user: string): number | undefined {
    return this.limits.get(user);
  }

  /** True when at least one of these users has a quota (nothing to check otherwise). */
  applies(users: Iterable<string>): boolean {
    for (const u of users) if (this.limits.has(u)) return true;
    return false;
  }

  /** Bytes the user's Maildir holds (plus deliveries in progress in this process). */
  async usage(user: string): Promise<number> {
    await this.refresh(user);
    return this.current(user);
  }

  /** The first of these users already at or over quota (SMTP RCPT), or null. */
  async firstFull(users: readonly string[]): Promise<OverQuota | null> {
    const limited = users.filter((u) => this.limits.has(u));
    await Promise.all(limited.map((u) => this.refresh(u)));
    for (const user of limited) {
      const limit = this.limits.get(user)!;
      const usage = this.current(user);
      if (usage >= limit) return { user, usage, limit };
    }
    return null;
  }

  /**
   * Holds `bytes` for each user (all or none) if every one stays within quota, or returns the
   * first user who would go over. Users without a quota are not looked at.
   */
  async reserve(users: readonly string[], bytes: number): Promise<Reservation | OverQuota> {
    const limited = [...new Set(users)].filter((u) => this.limits.has(u));
    if (limited.length === 0) return NO_RESERVATION;
    await Promise.all(limited.map((u) => this.refresh(u)));
    // From here to the end, no await: the check and the reservation are one step.
    for (const user of limited) {
      const limit = this.limits.get(user)!;
      const usage = this.current(user);
      if (usage + bytes > limit) return { user, usage, limit };
    }
    const states = limited.map((u) => this.state.get(u)!);
    for (const st of states) st.pending += bytes;
    let done = false;
    const finish = (stored: boolean) => {
      if (done) return;
      done = true;
      for (const st of states) {
        st.pending -= bytes;
        if (stored) st.delta += bytes;
      }
    };
    return { commit: () => finish(true), release: () => finish(false) };
  }

  /** Forgets what is cached for a user (or everyone): the next check reads the disk. */
  invalidate(user?: string): void {
    if (user === undefined) this.state.clear();
    else this.state.delete(user);
  }

  private current(user: string): number {
    const st = this.state.get(user);
    return st ? st.scanned + st.delta + st.pending : 0;
  }

  /** Brings the user's cached usage up to date (one read at a time per user). */
  private refresh(user: string): Promise<void> {
    let st = this.state.get(user);
    if (!st) {
      st = {
        rootMtimeMs: -1,
        rootTrusted: false,
        folders: [],
        dirs: new Map(),
        scanned: 0,
        delta: 0,
        pending: 0,
        checkedAt: Number.NEGATIVE_INFINITY,
        refreshing: null,
      };
      this.state.set(user, st);
    }
    if (st.refreshing) return st.refreshing;
    if (Date.now() - st.checkedAt < this.ttlMs) return Promise.resolve();
    const s = st;
    s.refreshing = this.scan(user, s).finally(() => {
      s.refreshing = null;
    });
    return s.refreshing;
  }

  private async scan(user: string, st: UserState): Promise<void> {
    const started = Date.now();
    // Our deliveries noted so far are on disk now; the read below sees them.
    const deltaBefore = st.delta;
    const root = maildirRoot(this.dataDir, user);
    let rootStat: Stats;
    try {
      rootStat = await fs.stat(root);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      // No Maildir yet: nothing used.
      st.dirs.clear();
      st.folders = [];
      st.scanned = 0;
      st.delta -= deltaBefore;
      st.checkedAt = started;
      return;
    }
    if (!st.rootTrusted || rootStat.mtimeMs !== st.rootMtimeMs) {
      const entries = await fs.readdir(root, { withFileTypes: true });
      st.folders = [root];
      for (const e of entries) {
        if (e.isDirectory() && e.name.startsWith(".") && e.name !== "." && e.name !== "..") st.folders.push(path.join(root, e.name));
      }
      st.rootMtimeMs = rootStat.mtimeMs;
      st.rootTrusted = started - rootStat.mtimeMs >= UNTRUSTED_MTIME_MS;
    }
    const wanted = new Set<string>();
    for (const f of st.folders) {
      wanted.add(path.join(f, "cur"));
      wanted.add(path.join(f, "new"));
    }
    for (const d of st.dirs.keys()) if (!wanted.has(d)) st.dirs.delete(d);
    await Promise.all([...wanted].map((d) => this.scanDir(d, st, started)));
    let total = 0;
    for (const d of st.dirs.values()) total += d.bytes;
    st.scanned = total;
    st.delta -= deltaBefore;
    st.checkedAt = started;
  }

  private async scanDir(dir: string, st: UserState, now: number): Promise<void> {
    let stat: Stats;
    try {
      stat = await fs.stat(dir);
    } catch {
      st.dirs.delete(dir);
      return;
    }
    const old = st.dirs.get(dir);
    if (old?.trusted && old.mtimeMs === stat.mtimeMs) return;
    let names: string[];
    try {
      names = await fs.readdir(dir);
    } catch {
      st.dirs.delete(dir);
      return;
    }
    const statted = new Map<string, number>();
    let bytes = 0;
    const toStat: string[] = [];
    for (const name of names) {
      if (name.startsWith(".")) continue;
      const size = sizeFromName(name);
      if (size !== undefined) {
        bytes += size;
        continue;
      }
      const known = old?.statted.get(name);
      if (known !== undefined) {
        bytes += known;
        statted.set(name, known);
      } else {
        toStat.push(name);
      }
    }
    for (const name of toStat) {
      try {
        const s = await fs.stat(path.join(dir, name));
        if (!s.isFile()) continue;
        bytes += s.size;
        statted.set(name, s.size);
      } catch {
        // moved or removed meanwhile; the directory it went to is read as well
      }
    }
    st.dirs.set(dir, { mtimeMs: stat.mtimeMs, trusted: now - stat.mtimeMs >= UNTRUSTED_MTIME_MS, bytes, statted });
  }
}

/**
 * The `,S=<bytes>` of a Maildir file name (before the `:2,` info), or undefined. A plain scan
 * instead of maildir.ts parseFileName: this runs once per file of a 100,000-message folder.
 */
export function sizeFromName(name: string): number | undefined {
  const colon = name.indexOf(":2,");
  const at = name.indexOf(",S=");
  if (at < 0 || (colon >= 0 && at > colon)) return undefined;
  let n = 0;
  let i = at + 3;
  for (; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c < 48 || c > 57) break;
    n = n * 10 + (c - 48);
  }
  return i === at + 3 ? undefined : n;
}

/** A reservation or the user that is over quota. */
export function isOverQuota(r: Reservation | OverQuota): r is OverQuota {
  return "limit" in r;
}
