/**
 * The in-process index of one Maildir folder, shared by every Mailbox (session) that has the
 * folder open in this process (refcounted, keyed by directory path), and persisted next to the
 * Maildir so that a restart neither rescans nor re-stats a big folder.
 *
 * What it knows per message: UID (from dovecot-uidlist), base name (key), where the file is now
 * (new/ or cur/ and its full name, so the flags), wire size, INTERNALDATE (file mtime, as Dovecot)
 * and CONDSTORE modseq. Every change is appended to a small change log; each Mailbox keeps its
 * own view (the IMAP sequence-number space) and catches up from the log in `sync()`.
 *
 * Cheap refresh: new/ and cur/ are read only when their mtime moved, or once more after a
 * two-second window when the last read or our own change happened within that window of the
 * directory's mtime (one tick can hide several changes). A message missing from a scan is
 * confirmed by a second scan before it counts as expunged (a concurrent rename can hide a file
 * from one readdir).
 *
 * UIDs: a file found without a UID gets one under the uidlist lock, where new/ files also move
 * to cur/ (as Dovecot does when a session first sees them). Messages only ever enter the index
 * in ascending UID order; a file that shows up late with a UID lower than one already indexed
 * (it hid from a scan) is given a new UID, so sequence numbers stay ordered.
 *
 * CONDSTORE: modseqs come from the wall clock (microseconds, strictly increasing in-process and
 * never below the folder's highest), so processes sharing the Maildir never hand out a modseq
 * below one a client has already seen, without coordinating, even if an index file is lost.
 *
 * Files (beside the Maildir's cur/ new/ tmp/): `mailstack-index` (text: a JSON header line, then
 * `uid \t dir \t file \t size \t mtime \t modseq` per message; written atomically, at most every
 * 30 s while dirty and when the last user leaves) and `mailstack-cache` (JSON lines
 * `[key, field, value]` appended by `cached()`, read on first use, compacted when mostly dead).
 * Both are caches: losing them costs time, never data or UIDs.
 */
import { type FSWatcher, promises as fs, watch as fsWatch, readFileSync, statSync } from "node:fs";
import * as path from "node:path";
import { Keywords } from "./index-keywords";
import { isNoSpace } from "./lock";
import { FLAG_LETTERS, syncDir, uniqueName, writeTmp } from "./maildir";
import type { MessageInfo } from "./types";
import { NoSuchFolderError, TemporaryFailure } from "./types";
import { baseKey, UidList, type UidListTx } from "./uidlist";

export const INDEX_FILE = "mailstack-index";
export const CACHE_FILE = "mailstack-cache";
const INDEX_VERSION = 1;
/** Directory mtimes within this window of a read are re-checked once the window has passed. */
const RECHECK_MS = 2000;
/** Messages up to this size are read synchronously (cheaper than the thread-pool round trip). */
const SYNC_READ_MAX = 256 * 1024;
/** While the uidlist waits for disk space, try to write it at most this often. */
const PERSIST_RETRY_MS = 5000;

export interface IndexOptions {
  /** Poll interval of `watch()` (fallback for fs.watch). Default 2 s (1 s if fs.watch failed). */
  pollMs?: number;
  /** Debounce of watch notifications. Default 50 ms. */
  debounceMs?: number;
  /** Keep an unused index in memory this long. Default 10 s. */
  idleMs?: number;
  /** Save a dirty index at most this often. Default 30 s. */
  saveEveryMs?: number;
}

interface Entry {
  uid: number;
  key: string;
  dir: "new" | "cur";
  file: string;
  size: number;
  mtime: number;
  modseq: bigint;
  info: MessageInfo;
}

export type ChangeKind = "add" | "remove" | "flags";
export interface ChangeEvent {
  kind: ChangeKind;
  uid: number;
  origin?: object | undefined;
}

interface DirState {
  /** mtime (ns) when we last read the directory or knew all changes up to it. */
  seen: bigint | null;
  /** When set: read the directory again once the clock passes this (ms), even if mtime is equal. */
  verifyAt: number;
}

export class ExpungedError extends Error {
  readonly code = "EXPUNGED";
  constructor(readonly uid: number) {
    super(`message ${uid} was expunged`);
    this.name = "ExpungedError";
  }
}

/** MAILSTACK_STORE_DEBUG=1 prints the store's rare recoveries (e.g. a UID given anew) on stderr. */
function debug(msg: string): void {
  if (process.env.MAILSTACK_STORE_DEBUG) process.stderr.write(`mailstack store: ${msg}\n`);
}

/** Strictly increasing microsecond clock for modseqs. */
let lastModseq = 0n;
function clockModseq(floor: bigint): bigint {
  let m = BigInt(Date.now()) * 1000n;
  if (m <= lastModseq) m = lastModseq + 1n;
  if (m <= floor) m = floor + 1n;
  lastModseq = m;
  return m;
}

/** Serialises async work. */
class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.tail.then(fn, fn);
    this.tail = p.catch(() => undefined);
    return p;
  }
}

async function pool<T>(items: readonly T[], n: number, fn: (t: T) => Promise<void>): Promise<void> {
  let i = 0;
  const workers = Array.from({ length: Math.min(n, items.length) }, async () => {
    while (i < items.length) {
      const t = items[i++]!;
      await fn(t);
    }
  });
  await Promise.all(workers);
}

/** Converts bare LF to CRLF (lines already ending in CRLF are left alone). */
export function toCrlf(data: Buffer): Buffer {
  let extra = 0;
  for (let i = 0; i < data.length; i++) if (data[i] === 0x0a && (i === 0 || data[i - 1] !== 0x0d)) extra++;
  if (extra === 0) return data;
  const out = Buffer.allocUnsafe(data.length + extra);
  let o = 0;
  for (let i = 0; i < data.length; i++) {
    const c = data[i]!;
    if (c === 0x0a && (i === 0 || data[i - 1] !== 0x0d)) out[o++] = 0x0d;
    out[o++] = c;
  }
  return out;
}

function sortLetters(s: string): string {
  return [...new Set(s)].sort().join("");
}

function infoLetters(file: string): string {
  const i = file.indexOf(":2,");
  return i >= 0 ? file.slice(i + 3) : "";
}

async function readdirNames(dir: string): Promise<string[]> {
  try {
    return (await fs.readdir(dir)).filter((n) => !n.startsWith("."));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new NoSuchFolderError(dir);
    throw err;
  }
}

async function statDir(dir: string): Promise<bigint> {
  try {
    return (await fs.stat(dir, { bigint: true })).mtimeNs;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new NoSuchFolderError(dir);
    throw err;
  }
}

const registry = new Map<string, FolderIndex>();

/** Gets (or loads) the shared index of a folder directory and takes a reference on it. */
export async function acquireIndex(dir: string, opts: IndexOptions = {}): Promise<FolderIndex> {
  let idx = registry.get(dir);
  if (!idx) {
    idx = new FolderIndex(dir, opts);
    registry.set(dir, idx);
  }
  idx.ref();
  try {
    await idx.ready();
  } catch (err) {
    idx.unref();
    if (registry.get(dir) === idx && idx.refs === 0) {
      registry.delete(dir);
      idx.dispose();
    }
    throw err;
  }
  return idx;
}

/**
 * Forgets the in-memory index of a folder directory (after delete or rename), or with
 * `below`, of every folder under a directory (tests use this to act as a new process).
 * Open mailboxes of a forgotten folder fail with NoSuchFolderError from then on.
 */
export function forgetIndexes(dir0: string, below = true): void {
  for (const [dir, idx] of registry) {
    if (dir === dir0 || (below && dir.startsWith(`${dir0}${path.sep}`))) {
      registry.delete(dir);
      idx.gone = true;
      idx.dispose();
    }
  }
}

/** Saves every dirty index now (for a clean shutdown). */
export async function flushAllIndexes(): Promise<void> {
  await Promise.all([...registry.values()].map((i) => i.flush().catch(() => undefined)));
}

export class FolderIndex {
  readonly uidlist: UidList;
  readonly keywords: Keywords;
  refs = 0;
  gone = false;
  uidValidity = 0;
  nextUid = 1;
  highestModseq = 0n;

  private entries: Entry[] = [];
  private byUid = new Map<number, Entry>();
  private byKey = new Map<string, Entry>();
  private log: ChangeEvent[] = [];
  private logBase = 0;
  private readonly mutex = new Mutex();
  private readonly dirs: Record<"new" | "cur", DirState> = {
    new: { seen: null, verifyAt: 0 },
    cur: { seen: null, verifyAt: 0 },
  };
  private loading: Promise<void> | null = null;
  /** Entries missing from scans while their uidlist record remains: since when (ms). */
  private readonly missingSince = new Map<number, number>();
  private refreshing: Promise<void> | null = null;
  private refreshAgain = false;
  private dirty = 0;
  private lastSave = 0;
  private saveTimer: NodeJS.Timeout | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  private saving: Promise<void> | null = null;
  private lastPersistTry = 0;
  // watch
  private readonly listeners = new Set<() => void>();
  private watchers: FSWatcher[] = [];
  private pollTimer: NodeJS.Timeout | null = null;
  private debounceTimer: NodeJS.Timeout | null = null;
  private watchFailed = false;
  // cache
  private cache: Map<string, Record<string, unknown>> | null = null;
  private cacheLoading: Promise<void> | null = null;
  private cachePending: string[] = [];
  private cacheTimer: NodeJS.Timeout | null = null;
  /** Mailboxes' log positions, for trimming the log. */
  readonly positions = new Map<object, number>();

  constructor(
    readonly dir: string,
    private readonly opts: IndexOptions,
  ) {
    this.uidlist = new UidList(dir);
    this.keywords = new Keywords(dir);
  }

  ref(): void {
    this.refs++;
    if (this.idleTimer) {
      clearTimeout(this.idleTimer);
      this.idleTimer = null;
    }
  }

  unref(): void {
    this.refs = Math.max(0, this.refs - 1);
    if (this.refs > 0 || this.gone) return;
    const idle = this.opts.idleMs ?? 10_000;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      if (this.refs > 0) return;
      if (registry.get(this.dir) === this) registry.delete(this.dir);
      void this.flush()
        .catch(() => undefined)
        .finally(() => this.dispose());
    }, idle);
    this.idleTimer.unref();
    void this.flush().catch(() => undefined);
  }

  dispose(): void {
    void this.uidlist.close();
    for (const w of this.watchers) w.close();
    this.watchers = [];
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    if (this.saveTimer) clearTimeout(this.saveTimer);
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.pollTimer = this.debounceTimer = this.saveTimer = this.idleTimer = null;
    this.listeners.clear();
  }

  ready(): Promise<void> {
    if (!this.loading) this.loading = this.mutex.run(() => this.load());
    return this.loading;
  }

  // ---- views -------------------------------------------------------------------------------

  infos(): MessageInfo[] {
    return this.entries.map((e) => e.info);
  }

  infoOf(uid: number): MessageInfo | undefined {
    return this.byUid.get(uid)?.info;
  }

  get logEnd(): number {
    return this.logBase + this.log.length;
  }

  eventsSince(pos: number): ChangeEvent[] {
    return this.log.slice(Math.max(0, pos - this.logBase));
  }

  trimLog(): void {
    if (this.log.length < 1024) return;
    let min = this.logEnd;
    for (const p of this.positions.values()) min = Math.min(min, p);
    const drop = min - this.logBase;
    if (drop > 0) {
      this.log.splice(0, drop);
      this.logBase = min;
    }
  }

  private emit(kind: ChangeKind, uid: number, origin?: object): void {
    if (this.positions.size === 0) {
      // Nobody to tell: keep the log empty (but count the event, as positions are absolute).
      this.logBase += this.log.length + 1;
      this.log = [];
      return;
    }
    this.log.push({ kind, uid, origin });
    if (this.listeners.size > 0) this.notify();
  }

  // ---- loading and refreshing --------------------------------------------------------------

  private async load(): Promise<void> {
    await statDir(path.join(this.dir, "cur"));
    await this.uidlist.refresh();
    await this.loadIndexFile();
    await this.doRefresh(false);
    if (!this.uidlist.present || this.uidValidity === 0) {
      // Empty folder never opened before: create the uidlist (UIDVALIDITY) now.
      await this.uidlist.locked(() => undefined);
      this.uidValidity = this.uidlist.uidValidity;
      this.nextUid = Math.max(this.nextUid, this.uidlist.nextUid);
      this.dirty++;
    }
    if (this.dirty > 0) this.scheduleSave(true);
  }

  private async loadIndexFile(): Promise<void> {
    let text: string;
    try {
      text = await fs.readFile(path.join(this.dir, INDEX_FILE), "utf8");
    } catch {
      return;
    }
    try {
      const nl = text.indexOf("\n");
      const h = JSON.parse(text.slice(0, nl)) as {
        v: number;
        uidValidity: number;
        nextUid: number;
        highestModseq: string;
        count: number;
        dirs: Record<"new" | "cur", { seen: string | null; verifyAt: number }>;
      };
      if (h.v !== INDEX_VERSION || h.uidValidity !== this.uidlist.uidValidity || !this.uidlist.present) return;
      const lines = text.slice(nl + 1).split("\n");
      if (lines[lines.length - 1] === "") lines.pop();
      if (lines.length !== h.count) return;
      const entries: Entry[] = [];
      let mismatch = false;
      for (const line of lines) {
        const [uidS, dir, file, sizeS, mtimeS, modseqS] = line.split("\t");
        const uid = Number(uidS);
        if (!file || (dir !== "new" && dir !== "cur")) throw new Error("bad index line");
        const key = baseKey(file);
        if (this.uidlist.uidOf(key) !== uid) {
          mismatch = true;
          continue;
        }
        const e: Entry = {
          uid,
          key,
          dir,
          file,
          size: Number(sizeS),
          mtime: Number(mtimeS),
          modseq: BigInt(modseqS ?? "0"),
          info: undefined as unknown as MessageInfo,
        };
        entries.push(e);
      }
      await this.keywords.refresh();
      for (const e of entries) e.info = this.makeInfo(e);
      this.entries = entries;
      this.byUid = new Map(entries.map((e) => [e.uid, e]));
      this.byKey = new Map(entries.map((e) => [e.key, e]));
      this.uidValidity = h.uidValidity;
      this.nextUid = Math.max(h.nextUid, this.uidlist.nextUid);
      this.highestModseq = BigInt(h.highestModseq);
      if (!mismatch) {
        for (const d of ["new", "cur"] as const) {
          const s = h.dirs[d];
          this.dirs[d] = { seen: s.seen === null ? null : BigInt(s.seen), verifyAt: s.verifyAt };
        }
      }
    } catch {
      this.entries = [];
      this.byUid = new Map();
      this.byKey = new Map();
    }
  }

  /** Brings the index up to date with the disk (cheap when nothing changed). */
  refresh(): Promise<void> {
    if (this.gone) return Promise.reject(new NoSuchFolderError(this.dir));
    if (this.refreshing) {
      // A refresh is running; it may have read the directories already: run one more after it.
      this.refreshAgain = true;
      return this.refreshing;
    }
    const p = this.mutex.run(async () => {
      do {
        this.refreshAgain = false;
        await this.doRefresh(false);
      } while (this.refreshAgain);
    });
    this.refreshing = p.finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  private needScan(d: "new" | "cur", mtime: bigint, now: number, force: boolean): boolean {
    const s = this.dirs[d];
    if (force || s.seen === null || s.seen !== mtime) return true;
    return s.verifyAt > 0 && now >= s.verifyAt;
  }

  private markScanned(d: "new" | "cur", mtime: bigint, startedAt: number): void {
    const mtimeMs = Number(mtime / 1_000_000n);
    this.dirs[d] = { seen: mtime, verifyAt: startedAt - mtimeMs < RECHECK_MS ? mtimeMs + RECHECK_MS + 1 : 0 };
  }

  /**
   * Around our own change to a directory: if nothing else changed it since we last knew
   * (mtime before == seen), we know its contents after the change too; re-check once later in
   * case another process changed it in the same tick.
   */
  private async ownChange<T>(d: "new" | "cur", fn: () => Promise<T>): Promise<T> {
    const p = path.join(this.dir, d);
    const before = await statDir(p).catch(() => null);
    const result = await fn();
    if (before !== null && before === this.dirs[d].seen) {
      const after = await statDir(p).catch(() => null);
      if (after !== null) this.dirs[d] = { seen: after, verifyAt: Date.now() + RECHECK_MS + 1 };
    }
    return result;
  }

  /** Reads the named directories: key → location. */
  private async scanDirs(which: { new: boolean; cur: boolean }): Promise<Map<string, { dir: "new" | "cur"; file: string }>> {
    const found = new Map<string, { dir: "new" | "cur"; file: string }>();
    // new/ before cur/: a file moving new → cur during the scan is seen at least once.
    if (which.new) for (const f of await readdirNames(path.join(this.dir, "new"))) found.set(baseKey(f), { dir: "new", file: f });
    if (which.cur) for (const f of await readdirNames(path.join(this.dir, "cur"))) found.set(baseKey(f), { dir: "cur", file: f });
    return found;
  }

  private async doRefresh(force: boolean, origin?: object, tx?: UidListTx): Promise<void> {
    const now = Date.now();
    const [mNew, mCur] = await Promise.all([statDir(path.join(this.dir, "new")), statDir(path.join(this.dir, "cur"))]);
    const scanNew = this.needScan("new", mNew, now, force);
    const scanCur = this.needScan("cur", mCur, now, force);
    if (!scanNew && !scanCur) {
      if (!tx) await this.retryPersist();
      return;
    }
    const which = { new: scanNew, cur: scanCur };
    let found = await this.scanDirs(which);
    let missing = this.entries.filter((e) => which[e.dir] && !found.has(e.key));
    if (missing.length > 0) {
      // Confirm with a second read: a file renamed meanwhile may have hidden from the first.
      found = await this.scanDirs({ new: true, cur: true });
      missing = this.entries.filter((e) => !found.has(e.key));
    }
    if (scanNew) this.markScanned("new", mNew, now);
    if (scanCur) this.markScanned("cur", mCur, now);
    if (missing.length > 0) {
      // A file whose uidlist record is still there may have been renamed under both our reads
      // (ext4 readdir walks hash order; a rename moves the name). Unless the directories
      // provably did not change while we read them, keep it for a grace period and look again.
      // Expunges through the store drop the record right after the unlink, so they go at once.
      const [n2, c2] = await Promise.all([statDir(path.join(this.dir, "new")), statDir(path.join(this.dir, "cur"))]);
      const newest = Math.max(Number(mNew / 1_000_000n), Number(mCur / 1_000_000n));
      const stable = n2 === mNew && c2 === mCur && now - newest > 100;
      await this.uidlist.refresh();
      const stillMissing: Entry[] = [];
      for (const e of missing) {
        if (stable || this.uidlist.uidOf(e.key) !== e.uid) {
          stillMissing.push(e);
          continue;
        }
        const since = this.missingSince.get(e.uid);
        if (since === undefined) this.missingSince.set(e.uid, now);
        if (since !== undefined && now - since > RECHECK_MS) stillMissing.push(e);
        else this.dirs[e.dir].verifyAt = now + 1;
      }
      missing = stillMissing;
    }
    if (this.missingSince.size > 0)
      for (const uid of [...this.missingSince.keys()])
        if (!this.byUid.has(uid) || found.has(this.byUid.get(uid)!.key)) this.missingSince.delete(uid);

    // Changed locations / flags.
    let flagModseq: bigint | null = null;
    for (const [key, loc] of found) {
      const e = this.byKey.get(key);
      if (!e || (e.file === loc.file && e.dir === loc.dir)) continue;
      const flagsChanged = infoLetters(e.file) !== infoLetters(loc.file);
      e.dir = loc.dir;
      e.file = loc.file;
      if (flagsChanged) {
        flagModseq ??= this.newModseq();
        e.modseq = flagModseq;
        e.info = this.makeInfo(e);
        this.emit("flags", e.uid, origin);
      }
      this.dirty++;
    }
    if (missing.length > 0) this.removeEntries(missing.map((e) => e.uid));

    // New files.
    const candidates: { key: string; dir: "new" | "cur"; file: string }[] = [];
    for (const [key, loc] of found) if (!this.byKey.has(key)) candidates.push({ key, ...loc });
    if (candidates.length > 0) await this.addFiles(candidates, tx);
    else if (this.uidValidity === 0 && this.uidlist.present) {
      this.uidValidity = this.uidlist.uidValidity;
      this.nextUid = Math.max(this.nextUid, this.uidlist.nextUid);
    } else if (!tx) await this.retryPersist();
    if (flagModseq !== null || missing.length > 0) this.scheduleSave();
  }

  /** UIDs given in memory while the disk was full: write them once there is room again. */
  private async retryPersist(): Promise<void> {
    if (!this.uidlist.hasUnsaved || Date.now() - this.lastPersistTry < PERSIST_RETRY_MS) return;
    this.lastPersistTry = Date.now();
    await this.uidlist.locked(() => undefined);
  }

  private maxUid(): number {
    return this.entries.length > 0 ? this.entries[this.entries.length - 1]!.uid : 0;
  }

  /** Whether the uidlist knows messages above our highest UID that we have not indexed. */
  private hiddenAbove(max: number, candidates: readonly { key: string }[]): boolean {
    const cand = new Set(candidates.map((c) => c.key));
    return this.uidlist.recordsAbove(max).some((r) => !this.byKey.has(r.key) && !cand.has(r.key));
  }

  private async addFiles(candidates: { key: string; dir: "new" | "cur"; file: string }[], held?: UidListTx): Promise<void> {
    if (!held) await this.uidlist.refresh();
    const max = this.maxUid();
    const hidden = this.hiddenAbove(max, candidates);
    const needLock =
      held !== undefined ||
      hidden ||
      this.uidlist.uidValidity === 0 ||
      candidates.some((c) => c.dir === "new") ||
      candidates.some((c) => {
        const u = this.uidlist.uidOf(c.key);
        return u === undefined || u <= max;
      });
    const placed: { key: string; dir: "new" | "cur"; file: string; uid: number }[] = [];
    if (!needLock) {
      for (const c of candidates) placed.push({ ...c, uid: this.uidlist.uidOf(c.key)! });
    } else {
      const work = async (tx: UidListTx) => {
        let list = candidates;
        for (let attempt = 0; attempt < 3 && this.hiddenAbove(max, list); attempt++) {
          // A message with a UID may have hidden from our scan (renamed meanwhile). Under the
          // lock every UID'd file is in place: read the directories again.
          const found = await this.scanDirs({ new: true, cur: true });
          list = [];
          for (const [key, loc] of found) if (!this.byKey.has(key)) list.push({ key, ...loc });
        }
        // Files that already have a UID keep it (unless it would go backwards); others get one.
        const ordered = [...list].sort((a, b) => {
          const ua = tx.uidOf(a.key) ?? Number.MAX_SAFE_INTEGER;
          const ub = tx.uidOf(b.key) ?? Number.MAX_SAFE_INTEGER;
          return ua - ub || compareMaildirNames(a.key, b.key);
        });
        const toMove = ordered.filter((c) => c.dir === "new");
        if (toMove.length > 0) {
          await this.ownChange("cur", async () => {
            await pool(toMove, 16, async (c) => {
              const dest = c.file.includes(":2,") ? c.file : `${c.file}:2,`;
              try {
                await fs.rename(path.join(this.dir, "new", c.file), path.join(this.dir, "cur", dest));
                c.dir = "cur";
                c.file = dest;
              } catch (err) {
                if ((err as NodeJS.ErrnoException).code === "ENOENT")
                  c.file = ""; // moved by someone else: picked up by the next scan
                // Otherwise (e.g. disk full): serve it from new/; a later flag change moves it.
                else debug(`${this.dir}: keeping ${c.file} in new/: ${(err as Error).message}`);
              }
            });
          });
        }
        let last = max;
        for (const c of ordered) {
          if (!c.file) continue;
          let uid = tx.uidOf(c.key);
          if (uid === undefined || uid <= last) {
            if (uid !== undefined) debug(`${this.dir}: ${c.key} had UID ${uid}, not above ${last}: new UID`);
            uid = tx.assign(c.key);
          }
          last = uid;
          placed.push({ ...c, uid });
        }
      };
      if (held) await work(held);
      else await this.uidlist.locked(work);
    }
    this.uidValidity = this.uidlist.uidValidity;
    this.nextUid = Math.max(this.nextUid, this.uidlist.nextUid);
    placed.sort((a, b) => a.uid - b.uid);
    await this.keywords.refresh();
    const modseq = this.newModseq();
    const fresh: Entry[] = [];
    // INTERNALDATE needs each file's mtime: a synchronous stat (a few µs from the dentry cache)
    // is far cheaper here than a thread-pool round trip per file. The wire size comes from W= in
    // the name; only names without it are read.
    await pool(placed, 32, async (p) => {
      const full = path.join(this.dir, p.dir, p.file);
      const st = statSync(full, { throwIfNoEntry: false });
      if (!st) return; // gone again (expunged or renamed): the next refresh sorts it out
      const w = /,W=(\d+)/.exec(p.key);
      let size: number;
      if (w) size = Number(w[1]);
      else {
        try {
          size = toCrlf(await fs.readFile(full)).length;
        } catch {
          return;
        }
      }
      const e: Entry = {
        uid: p.uid,
        key: p.key,
        dir: p.dir,
        file: p.file,
        size,
        mtime: st.mtimeMs,
        modseq,
        info: undefined as unknown as MessageInfo,
      };
      e.info = this.makeInfo(e);
      fresh.push(e);
    });
    fresh.sort((a, b) => a.uid - b.uid);
    // A file that vanished between readdir and stat was renamed (flags) or expunged by someone:
    // add nothing above it now, or it would come back later with a UID below ours. The next
    // refresh reads the directories again and takes it and the rest in order.
    const got = new Set(fresh.map((e) => e.uid));
    const firstLost = placed.find((p) => !got.has(p.uid));
    if (firstLost) {
      this.dirs.cur.verifyAt = 1;
      this.dirs.new.verifyAt = 1;
    }
    let max2 = this.maxUid();
    for (const e of fresh) {
      if (firstLost && e.uid > firstLost.uid) break;
      if (e.uid <= max2 || this.byKey.has(e.key)) continue;
      this.entries.push(e);
      this.byUid.set(e.uid, e);
      this.byKey.set(e.key, e);
      max2 = e.uid;
      this.emit("add", e.uid);
    }
    this.dirty += fresh.length;
    this.scheduleSave(fresh.length > 1000);
  }

  private removeEntries(uids: number[]): void {
    if (uids.length === 0) return;
    const set = new Set(uids);
    this.entries = this.entries.filter((e) => !set.has(e.uid));
    for (const uid of uids) {
      const e = this.byUid.get(uid);
      if (!e) continue;
      this.byUid.delete(uid);
      this.byKey.delete(e.key);
      this.emit("remove", uid);
    }
    this.highestModseq = this.newModseq();
    this.dirty++;
  }

  newModseq(): bigint {
    const m = clockModseq(this.highestModseq);
    this.highestModseq = m;
    return m;
  }

  private makeInfo(e: Entry): MessageInfo {
    const flags: string[] = [];
    for (const c of infoLetters(e.file)) {
      const f = FLAG_LETTERS[c];
      if (f) flags.push(f);
      else if (c >= "a" && c <= "z") {
        const k = this.keywords.keywordOf(c);
        if (k) flags.push(k);
      }
    }
    if (e.modseq > this.highestModseq) this.highestModseq = e.modseq;
    return Object.freeze({
      uid: e.uid,
      key: e.key,
      size: e.size,
      flags: Object.freeze(flags) as string[],
      internalDate: new Date(e.mtime),
      modseq: e.modseq,
    });
  }

  // ---- changes made through mailboxes ------------------------------------------------------

  /** Path of a message file as the index knows it now (null when expunged). */
  filePath(uid: number): string | null {
    const e = this.byUid.get(uid);
    return e ? path.join(this.dir, e.dir, e.file) : null;
  }

  async readMessage(uid: number): Promise<Buffer> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const p = this.filePath(uid);
      if (p === null) throw new ExpungedError(uid);
      try {
        const e0 = this.byUid.get(uid);
        const raw = e0 && e0.size <= SYNC_READ_MAX ? readFileSync(p) : await fs.readFile(p);
        const data = toCrlf(raw);
        const e = this.byUid.get(uid);
        if (e && e.size !== data.length) {
          // Wrong W= in the name: fix the index (the session's snapshot keeps the old size).
          e.size = data.length;
          e.info = this.makeInfo(e);
          this.dirty++;
        }
        return data;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
        // Renamed (flags) or expunged by someone else: look again.
        await this.mutex.run(() => this.doRefresh(true));
      }
    }
    throw new ExpungedError(uid);
  }

  /** Computes info letters for flags (adding keywords to dovecot-keywords as needed). */
  private async lettersFor(flags: readonly string[]): Promise<{ sys: string; kw: string }> {
    let sys = "";
    const kws: string[] = [];
    for (const f of flags) {
      if (f.startsWith("\\")) {
        for (const [l, name] of Object.entries(FLAG_LETTERS)) if (name.toLowerCase() === f.toLowerCase()) sys += l;
      } else if (f.length > 0) kws.push(f);
    }
    let kw = "";
    if (kws.length > 0) {
      const map = await this.keywords.ensure(kws);
      for (const k of kws) kw += map.get(k.toLowerCase()) ?? "";
    }
    return { sys, kw };
  }

  setFlags(uids: number[], mode: "set" | "add" | "remove", flags: readonly string[], origin: object): Promise<Map<number, MessageInfo>> {
    return this.mutex.run(async () => {
      await this.doRefresh(false, origin);
      const { sys, kw } = await this.lettersFor(flags);
      const given = new Set(sys + kw);
      const out = new Map<number, MessageInfo>();
      let modseq: bigint | null = null;
      let retry: number[] = [];
      const apply = async (list: number[]) => {
        const work: { e: Entry; to: string }[] = [];
        for (const uid of list) {
          const e = this.byUid.get(uid);
          if (!e) continue;
          const cur = infoLetters(e.file);
          let next: string;
          if (mode === "add") next = sortLetters(cur + [...given].join(""));
          else if (mode === "remove") next = sortLetters([...cur].filter((c) => !given.has(c)).join(""));
          else {
            // Keep letters we do not map (e.g. P "passed") and unknown keywords.
            const keep = [...cur].filter(
              (c) => (c >= "A" && c <= "Z" && !FLAG_LETTERS[c]) || (c >= "a" && c <= "z" && !this.keywords.keywordOf(c)),
            );
            next = sortLetters(keep.join("") + [...given].join(""));
          }
          if (next === cur && e.dir === "cur") {
            out.set(uid, e.info);
            continue;
          }
          work.push({ e, to: `${e.key}:2,${next}` });
        }
        if (work.length === 0) return;
        await this.ownChange("cur", async () => {
          await pool(work, 16, async ({ e, to }) => {
            try {
              await fs.rename(path.join(this.dir, e.dir, e.file), path.join(this.dir, "cur", to));
            } catch (err) {
              if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
              retry.push(e.uid);
              return;
            }
            modseq ??= this.newModseq();
            e.dir = "cur";
            e.file = to;
            e.modseq = modseq;
            e.info = this.makeInfo(e);
            this.emit("flags", e.uid, origin);
            out.set(e.uid, e.info);
            this.dirty++;
          });
        });
      };
      await apply(uids);
      for (let attempt = 0; attempt < 2 && retry.length > 0; attempt++) {
        // Renamed under us by another process: re-find by key and try again.
        const again = retry;
        retry = [];
        await this.doRefresh(true, origin);
        await apply(again);
      }
      this.scheduleSave();
      return out;
    });
  }

  expunge(uids: number[]): Promise<number[]> {
    return this.mutex.run(async () => {
      await this.doRefresh(false);
      const removed: Entry[] = [];
      let retry: Entry[] = [];
      const unlinkAll = async (list: Entry[]) => {
        await pool(list, 16, async (e) => {
          try {
            await fs.unlink(path.join(this.dir, e.dir, e.file));
            removed.push(e);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
            retry.push(e);
          }
        });
      };
      const targets = uids.map((u) => this.byUid.get(u)).filter((e): e is Entry => e !== undefined);
      const touched = new Set(targets.map((e) => e.dir));
      await this.ownChange("cur", () => this.ownChange("new", () => unlinkAll(targets)));
      if (retry.length > 0) {
        const again = retry.map((e) => e.uid);
        retry = [];
        await this.doRefresh(true);
        const still = again.map((u) => this.byUid.get(u)).filter((e): e is Entry => e !== undefined);
        await this.ownChange("cur", () => this.ownChange("new", () => unlinkAll(still)));
      }
      if (removed.length === 0) return [];
      await Promise.all([...touched].map((d) => syncDir(path.join(this.dir, d))));
      await this.uidlist.locked((tx) => {
        for (const e of removed) tx.remove(e.key);
      });
      const ids = removed.map((e) => e.uid).sort((a, b) => a - b);
      this.removeEntries(ids);
      this.scheduleSave();
      return ids;
    });
  }

  /**
   * Durably adds messages already written to this folder's tmp/ (name = key): moves them into
   * cur/ with their flags and UIDs under the uidlist lock, then fsyncs cur/.
   */
  commitTmp(items: { key: string; flags: readonly string[]; size: number; mtime: number }[]): Promise<number[]> {
    return this.mutex.run(async () => {
      await this.doRefresh(false);
      const letters = await Promise.all(items.map((i) => this.lettersFor(i.flags)));
      const entries: Entry[] = [];
      await this.uidlist
        .locked(async (tx) => {
          // Others may have added messages we have not indexed yet: take them in first, so that
          // ours (with the highest UID) does not make them look late.
          if (this.hiddenAbove(this.maxUid(), [])) await this.doRefresh(true, undefined, tx);
          await this.ownChange("cur", async () => {
            for (let n = 0; n < items.length; n++) {
              const it = items[n]!;
              const l = letters[n]!;
              const file = `${it.key}:2,${sortLetters(l.sys + l.kw)}`;
              await fs.rename(path.join(this.dir, "tmp", it.key), path.join(this.dir, "cur", file));
              const uid = tx.assign(it.key);
              entries.push({
                uid,
                key: it.key,
                dir: "cur",
                file,
                size: it.size,
                mtime: it.mtime,
                modseq: 0n,
                info: undefined as unknown as MessageInfo,
              });
            }
          });
        })
        .catch(async (err) => {
          await Promise.all(items.map((it) => fs.unlink(path.join(this.dir, "tmp", it.key)).catch(() => undefined)));
          throw err;
        });
      await syncDir(path.join(this.dir, "cur"));
      this.uidValidity = this.uidlist.uidValidity;
      this.nextUid = Math.max(this.nextUid, this.uidlist.nextUid);
      const modseq = this.newModseq();
      const uids: number[] = [];
      for (const e of entries) {
        e.modseq = modseq;
        e.info = this.makeInfo(e);
        if (e.uid > this.maxUid()) {
          this.entries.push(e);
          this.byUid.set(e.uid, e);
          this.byKey.set(e.key, e);
          this.emit("add", e.uid);
        }
        uids.push(e.uid);
      }
      this.dirty += entries.length;
      this.scheduleSave();
      return uids;
    });
  }

  /** Writes `data` into this folder's tmp/ durably. Returns its key (the future base name). */
  async writeToTmp(data: Buffer, wire: number, mtime?: Date): Promise<{ key: string; mtime: number }> {
    const key = uniqueName(data.length, wire);
    const tmp = await writeTmp(this.dir, key, data);
    if (mtime) await fs.utimes(tmp, mtime, mtime);
    const st = await fs.stat(tmp);
    return { key, mtime: st.mtimeMs };
  }

  /** Hard-links (or copies) a message of this folder into `dest`'s tmp/. */
  async linkToTmp(uid: number, dest: FolderIndex): Promise<{ key: string; size: number; mtime: number; flags: readonly string[] } | null> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const e = this.byUid.get(uid);
      if (!e) return null;
      const src = path.join(this.dir, e.dir, e.file);
      const s = /,S=(\d+)/.exec(e.key);
      let physical = s ? Number(s[1]) : undefined;
      if (physical === undefined) {
        try {
          physical = (await fs.stat(src)).size;
        } catch {
          await this.mutex.run(() => this.doRefresh(true));
          continue;
        }
      }
      const key = uniqueName(physical, e.size);
      const tmp = path.join(dest.dir, "tmp", key);
      try {
        await fs.link(src, tmp);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "ENOENT") {
          await this.mutex.run(() => this.doRefresh(true));
          continue;
        }
        // Different filesystem or links not allowed: copy durably.
        let data: Buffer;
        try {
          data = await fs.readFile(src);
        } catch {
          await this.mutex.run(() => this.doRefresh(true));
          continue;
        }
        await writeTmp(dest.dir, key, data);
        await fs.utimes(tmp, new Date(e.mtime), new Date(e.mtime));
      }
      return { key, size: e.size, mtime: e.mtime, flags: e.info.flags };
    }
    return null;
  }

  // ---- cache -------------------------------------------------------------------------------

  private async loadCache(): Promise<void> {
    if (this.cache) return;
    if (!this.cacheLoading) {
      this.cacheLoading = (async () => {
        const map = new Map<string, Record<string, unknown>>();
        let lines = 0;
        try {
          const text = await fs.readFile(path.join(this.dir, CACHE_FILE), "utf8");
          for (const line of text.split("\n")) {
            if (!line) continue;
            try {
              const [key, field, value] = JSON.parse(line) as [string, string, unknown];
              lines++;
              let rec = map.get(key);
              if (!rec) map.set(key, (rec = {}));
              rec[field] = value;
            } catch {
              // torn or mixed line: skip
            }
          }
        } catch {
          // no cache yet
        }
        this.cache = map;
        let live = 0;
        for (const [key, rec] of map) if (this.byKey.has(key)) live += Object.keys(rec).length;
        if (lines > 1000 && live * 2 < lines) await this.compactCache();
      })();
    }
    await this.cacheLoading;
  }

  private async compactCache(): Promise<void> {
    if (!this.cache) return;
    const out: string[] = [];
    for (const [key, rec] of this.cache) {
      if (!this.byKey.has(key)) {
        this.cache.delete(key);
        continue;
      }
      for (const [f, v] of Object.entries(rec)) out.push(`${JSON.stringify([key, f, v])}\n`);
    }
    const file = path.join(this.dir, CACHE_FILE);
    const tmp = `${file}.${process.pid}.tmp`;
    try {
      await fs.writeFile(tmp, out.join(""));
      await fs.rename(tmp, file);
    } catch (err) {
      await fs.unlink(tmp).catch(() => undefined);
      if (!isNoSpace(err)) throw err;
    }
  }

  async cached<T>(uid: number, field: string, compute: () => Promise<T>): Promise<T> {
    const e = this.byUid.get(uid);
    if (!e) return compute();
    await this.loadCache();
    const rec = this.cache!.get(e.key);
    if (rec && field in rec) return rec[field] as T;
    const value = await compute();
    let r = this.cache!.get(e.key);
    if (!r) this.cache!.set(e.key, (r = {}));
    r[field] = value;
    this.cachePending.push(`${JSON.stringify([e.key, field, value])}\n`);
    if (!this.cacheTimer) {
      this.cacheTimer = setTimeout(() => {
        this.cacheTimer = null;
        void this.flushCache().catch(() => undefined);
      }, 1000);
      this.cacheTimer.unref();
    }
    return value;
  }

  private async flushCache(): Promise<void> {
    if (this.cachePending.length === 0) return;
    const data = this.cachePending.join("");
    this.cachePending = [];
    await fs.appendFile(path.join(this.dir, CACHE_FILE), data);
  }

  // ---- persistence -------------------------------------------------------------------------

  private scheduleSave(soon = false): void {
    if (this.dirty === 0 || this.gone) return;
    const every = this.opts.saveEveryMs ?? 30_000;
    const wait = soon ? 0 : Math.max(0, this.lastSave + every - Date.now());
    if (this.saveTimer) {
      if (!soon) return;
      clearTimeout(this.saveTimer);
    }
    this.saveTimer = setTimeout(() => {
      this.saveTimer = null;
      void this.flush().catch(() => undefined);
    }, wait);
    this.saveTimer.unref();
  }

  /** Writes the index file (if changed) and pending cache lines. */
  async flush(): Promise<void> {
    if (this.saving) await this.saving;
    if (this.cacheTimer) {
      clearTimeout(this.cacheTimer);
      this.cacheTimer = null;
    }
    await this.flushCache().catch(() => undefined);
    if (this.dirty === 0 || this.gone || this.uidValidity === 0) return;
    this.saving = (async () => {
      const dirtyAtStart = this.dirty;
      const header = {
        v: INDEX_VERSION,
        uidValidity: this.uidValidity,
        nextUid: this.nextUid,
        highestModseq: this.highestModseq.toString(),
        count: this.entries.length,
        dirs: {
          new: { seen: this.dirs.new.seen?.toString() ?? null, verifyAt: this.dirs.new.verifyAt },
          cur: { seen: this.dirs.cur.seen?.toString() ?? null, verifyAt: this.dirs.cur.verifyAt },
        },
      };
      const parts: string[] = [`${JSON.stringify(header)}\n`];
      for (const e of this.entries) parts.push(`${e.uid}\t${e.dir}\t${e.file}\t${e.size}\t${e.mtime}\t${e.modseq}\n`);
      const file = path.join(this.dir, INDEX_FILE);
      const tmp = `${file}.${process.pid}.tmp`;
      try {
        await fs.writeFile(tmp, parts.join(""));
        await fs.rename(tmp, file);
      } catch (err) {
        // Disk full: the index is a cache; keep it dirty and try again at the next save.
        await fs.unlink(tmp).catch(() => undefined);
        throw err;
      }
      this.lastSave = Date.now();
      this.dirty = Math.max(0, this.dirty - dirtyAtStart);
    })();
    try {
      await this.saving;
    } finally {
      this.saving = null;
    }
  }

  // ---- watching ----------------------------------------------------------------------------

  watch(listener: () => void): () => void {
    this.listeners.add(listener);
    if (this.listeners.size === 1) this.startWatching();
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0) this.stopWatching();
    };
  }

  private notify(): void {
    if (this.debounceTimer) return;
    this.debounceTimer = setTimeout(() => {
      this.debounceTimer = null;
      for (const l of [...this.listeners]) {
        try {
          l();
        } catch {
          // a listener's problem is not ours
        }
      }
    }, this.opts.debounceMs ?? 50);
    this.debounceTimer.unref();
  }

  private startWatching(): void {
    for (const d of ["new", "cur"]) {
      try {
        const w = fsWatch(path.join(this.dir, d), { persistent: false }, () => this.notify());
        w.on("error", () => {
          this.watchFailed = true;
          w.close();
        });
        this.watchers.push(w);
      } catch {
        this.watchFailed = true;
      }
    }
    const every = this.opts.pollMs ?? (this.watchFailed ? 1000 : 2000);
    this.pollTimer = setInterval(() => void this.poll(), every);
    this.pollTimer.unref();
  }

  private async poll(): Promise<void> {
    try {
      const [mNew, mCur] = await Promise.all([statDir(path.join(this.dir, "new")), statDir(path.join(this.dir, "cur"))]);
      const now = Date.now();
      const due = (["new", "cur"] as const).some((d) => this.dirs[d].verifyAt > 0 && now >= this.dirs[d].verifyAt);
      if (mNew !== this.dirs.new.seen || mCur !== this.dirs.cur.seen || due) this.notify();
    } catch {
      // folder gone: sessions find out on their next sync
    }
  }

  private stopWatching(): void {
    for (const w of this.watchers) w.close();
    this.watchers = [];
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = null;
  }
}

/** Thrown when a store operation fails for a reason a client may retry. */
export function isTemporary(err: unknown): err is TemporaryFailure {
  return err instanceof TemporaryFailure;
}

/**
 * Delivery order of two Maildir base names: seconds, then microseconds (`M<usec>`), numerically,
 * as Dovecot orders new mail; the name itself breaks ties.
 */
export function compareMaildirNames(a: string, b: string): number {
  const pa = /^(\d+)\.(?:M(\d+))?/.exec(a);
  const pb = /^(\d+)\.(?:M(\d+))?/.exec(b);
  if (pa && pb) {
    const d = Number(pa[1]) - Number(pb[1]) || Number(pa[2] ?? 0) - Number(pb[2] ?? 0);
    if (d !== 0) return d;
  }
  return a < b ? -1 : a > b ? 1 : 0;
}
