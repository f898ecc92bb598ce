/**
 * The in-process index of one Maildir folder, shared by every Mailbox (session) that has the
 * folder open in this process (refcounted, keyed by directory path), and persisted next to the
 * Maildir so that a restart does not rescan a big folder.
 *
 * What it knows per message: UID (from dovecot-uidlist), base name (key), where the file is now
 * (new/ or cur/ and its full name, so the flags), wire size, INTERNALDATE and CONDSTORE modseq.
 * Every change is appended to a small change log; each Mailbox keeps its own view (the IMAP
 * sequence-number space) and catches up from the log in `sync()`.
 *
 * Scanning a folder reads its directories and nothing else. The wire size comes from `W=` in
 * the file name (as Dovecot and we write it), else from the uidlist record's `W` field, else the
 * file is read once. INTERNALDATE is the file's mtime, as in Dovecot: a `touch` changes it, COPY
 * keeps it (the copy is a hard link). It is read with one stat() the first time somebody asks
 * (FETCH INTERNALDATE, SEARCH by date; `Msg.internalDate`), not while scanning, and then kept in
 * the index file. The name's own timestamp is not used for it: a name is made before its file is
 * written (the second can differ), COPY gives the link a new name and keeps the old mtime, and
 * APPEND with a date sets the mtime only.
 *
 * Cheap refresh: new/ and cur/ are read only when their mtime moved, or once more when the last
 * read happened within a short window of the directory's mtime (one tick of the file system's
 * clock can hide several changes: 2 s for file systems with whole-second times, 100 ms for
 * those with sub-second ones), or 2 s after our own last change to it. A message missing from a
 * scan is confirmed by a second scan before it counts as expunged (a concurrent rename can hide
 * a file from one readdir).
 *
 * UIDs: a file found without a UID gets one under the uidlist lock, where new/ files also move
 * to cur/ (as Dovecot does when a session first sees them), in delivery order (the name's time).
 * Messages only ever enter the index in ascending UID order; a file that shows up late with a
 * UID lower than one already indexed (it hid from a scan) is given a new UID, so sequence
 * numbers stay ordered.
 *
 * CONDSTORE: modseqs come from the wall clock (microseconds, strictly increasing in-process and
 * never below the folder's highest), so processes sharing the Maildir never hand out a modseq
 * below one a client has already seen, without coordinating, even if an index file is lost.
 *
 * Memory: per message one `Msg`, both the MessageInfo handed out (immutable for its users: a
 * change makes a new one, which takes the old one's place in the index) and the index's record
 * (where the file is, small cached values); big cached values are kept by UID. No map by UID
 * (entries are in UID order, found by binary search); a map by name only when a scan needs one;
 * flag lists are shared between messages with the same flags. About 240 bytes per message with
 * a 45-character file name (24 MB for 100,000; 29 MB with a separate record per message), the
 * uidlist's records included.
 *
 * `cached()`: values whose JSON is small (up to 512 bytes, e.g. IMAP's search fields) are kept in
 * memory for every message, beside the index, and in the cache file; bigger ones (e.g. MIME
 * trees) are kept in memory for the most recently used messages only, up to `cacheBudget` bytes
 * of JSON, and computed again after an eviction or a restart (from the message: as cheap as
 * reading them back, and the file stays small and quick to load).
 *
 * Files (beside the Maildir's cur/ new/ tmp/): `mailstack-index` (text: a JSON header line, then
 * `uid \t dir \t file \t size \t mtime \t modseq` per message, mtime empty while unknown; written
 * atomically in a quiet moment, at most every 30 s while dirty and soon after the last user
 * leaves) and `mailstack-cache` (JSON lines `[key, field, value]` of small values appended by
 * `cached()`, read in chunks on first use, compacted when mostly dead). Both are caches: losing
 * them costs time, never data or UIDs.
 */
import {
  appendFileSync,
  closeSync,
  type FSWatcher,
  promises as fs,
  watch as fsWatch,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  statSync,
  writeSync,
} from "node:fs";
import * as path from "node:path";
import { Keywords } from "./index-keywords";
import { isNoSpace } from "./lock";
import { FLAG_LETTERS, syncDir, uniqueName, writeTmp } from "./maildir";
import type { MessageInfo } from "./types";
import { NoSuchFolderError, TemporaryFailure } from "./types";
import { baseKey, UidList, type UidListTx } from "./uidlist";

export const INDEX_FILE = "mailstack-index";
export const CACHE_FILE = "mailstack-cache";
/** v2: the mtime column may be empty (not read yet). v1 files are read too. */
const INDEX_VERSION = 2;
/**
 * Directory mtimes within this window of a read are re-checked once the window has passed: a
 * change in the same clock tick as the read leaves the mtime as it was. File systems that keep
 * whole seconds need two; ones with sub-second times (ext4, xfs, btrfs, tmpfs: stamped from the
 * kernel's coarse clock, a few ms a tick) need far less.
 */
const RECHECK_MS = 2000;
const FINE_RECHECK_MS = 100;

function recheckWindow(mtimeNs: bigint): number {
  return mtimeNs % 1_000_000_000n === 0n ? RECHECK_MS : FINE_RECHECK_MS;
}
/** Messages up to this size are read synchronously (cheaper than the thread-pool round trip). */
const SYNC_READ_MAX = 256 * 1024;
/** setFlags renames this many files synchronously between turns of the event loop. */
const RENAME_SLICE = 256;
/** The index file is written when its folder has been unused this long (or nobody uses it). */
const QUIET_MS = 1000;
/** While the uidlist waits for disk space, try to write it at most this often. */
const PERSIST_RETRY_MS = 5000;
/** Cached values whose JSON is at most this long stay in memory for every message. */
export const SMALL_CACHE_VALUE = 512;
/** Default bound of the in-memory big cached values (bytes of their JSON). */
const DEFAULT_CACHE_BUDGET = 8 * 1024 * 1024;
/** Pending cache lines are written at once when they reach this size (else within a second). */
const PENDING_CACHE_BYTES = 256 * 1024;
/** First read of a message header (`readHeader`); doubled while no blank line is found. */
const HEADER_PREFIX = 16 * 1024;

export interface IndexOptions {
  /** Poll interval of `watch()` (fallback for fs.watch). Default 2 s (1 s if fs.watch failed). */
  pollMs?: number;
  /** Debounce of watch notifications. Default 50 ms. */
  debounceMs?: number;
  /** Keep an unused index in memory this long. Default 10 s. */
  idleMs?: number;
  /** Save a dirty index at most this often. Default 30 s. */
  saveEveryMs?: number;
  /** Bytes (of JSON) of big cached values kept in memory per folder. Default 8 MiB. */
  cacheBudget?: number;
}

/** INTERNALDATE is kept in whole seconds from 2000 (a small integer in V8, not a boxed double). */
const TIME_BASE_S = 946684800;
const UNKNOWN_TIME = -0x80000000;
/** The flags of a scanned file not placed yet. */
const NO_FLAGS = Object.freeze([]) as unknown as string[];

function toTime(ms: number): number {
  return Number.isNaN(ms) ? UNKNOWN_TIME : Math.floor(ms / 1000) - TIME_BASE_S;
}

/**
 * One message as handed out (`MessageInfo`), and the index's record of it: one object per
 * message. Immutable for its users: a change (flags, modseq, size) makes a new one, which takes
 * the index's place (`FolderIndex.remake`); only INTERNALDATE is filled in late, on first use
 * (to the second, as IMAP has it). The fields marked internal (where the file is, the last
 * scan that saw it, small cached values) belong to the index and change in place on the
 * current object only; a replaced one keeps what it had.
 */
export class Msg implements MessageInfo {
  /** Set once, when the index places a scanned file (see `place`). */
  uid: number;
  readonly key: string;
  size: number;
  /** Shared between messages with the same flags: never modify. */
  flags: string[];
  modseq: bigint;
  /** @internal new/ or cur/. */
  dir: "new" | "cur";
  /** @internal The file's full name (so its flags). */
  file: string;
  /** @internal The last directory scan that saw this file (FolderIndex.scanId). */
  seen = 0;
  /** @internal Small cached values (JSON up to SMALL_CACHE_VALUE bytes), by field. */
  small: Record<string, unknown> | null = null;
  #time: number;
  readonly #index: FolderIndex;

  constructor(
    uid: number,
    key: string,
    size: number,
    flags: string[],
    modseq: bigint,
    mtime: number,
    index: FolderIndex,
    dir: "new" | "cur",
    file: string,
  ) {
    this.uid = uid;
    this.key = key;
    this.size = size;
    this.flags = flags;
    this.modseq = modseq;
    this.dir = dir;
    this.file = file;
    this.#time = toTime(mtime);
    this.#index = index;
  }

  /** @internal Gives a scanned file (made with uid 0) what it needs to be handed out. */
  place(uid: number, size: number, flags: string[], modseq: bigint): void {
    this.uid = uid;
    this.size = size;
    this.flags = flags;
    this.modseq = modseq;
  }

  /** INTERNALDATE: the file's mtime (one stat on first use). */
  get internalDate(): Date {
    return new Date(this.mtimeMs);
  }

  /** The file's mtime in ms, whole seconds (one stat on first use). */
  get mtimeMs(): number {
    return this.#time === UNKNOWN_TIME ? this.#index.resolveMtime(this) : (this.#time + TIME_BASE_S) * 1000;
  }

  /** The mtime when known (ms, whole seconds), else NaN (never stats). */
  get knownMtime(): number {
    return this.#time === UNKNOWN_TIME ? Number.NaN : (this.#time + TIME_BASE_S) * 1000;
  }

  /** @internal Records the mtime once read. */
  learnMtime(ms: number): void {
    if (this.#time === UNKNOWN_TIME) this.#time = toTime(ms);
  }
}

/** The index's record of a message is the message itself. */
type Entry = Msg;

/** Big cached values of one message, in the LRU. */
interface BigValues {
  values: Record<string, unknown>;
  costs: Record<string, number>;
  cost: number;
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

/** A file a directory scan found: an entry in the making (uid 0 until placed). */
type Loc = Entry;

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
  let i = data.indexOf(0x0a);
  while (i >= 0) {
    if (i === 0 || data[i - 1] !== 0x0d) extra++;
    i = data.indexOf(0x0a, i + 1);
  }
  if (extra === 0) return data;
  const out = Buffer.allocUnsafe(data.length + extra);
  let o = 0;
  for (let j = 0; j < data.length; j++) {
    const c = data[j]!;
    if (c === 0x0a && (j === 0 || data[j - 1] !== 0x0d)) out[o++] = 0x0d;
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

/** The number after `tag` (e.g. `,W=`) in a name, or -1. */
function numberAfter(s: string, tag: string): number {
  const i = s.indexOf(tag);
  if (i < 0) return -1;
  let n = 0;
  let j = i + tag.length;
  const start = j;
  for (; j < s.length; j++) {
    const c = s.charCodeAt(j);
    if (c < 48 || c > 57) break;
    n = n * 10 + (c - 48);
  }
  return j > start ? n : -1;
}

/** The decimal number in buf[start, end), or -1 when that is not one. */
function decimalAt(buf: Buffer, start: number, end: number): number {
  if (end <= start) return -1;
  let n = 0;
  for (let i = start; i < end; i++) {
    const c = buf[i]!;
    if (c < 48 || c > 57) return -1;
    n = n * 10 + (c - 48);
  }
  return n;
}

/** The `W<n>` (virtual size) extension field of a uidlist record, or -1. */
function extWireSize(ext: string | undefined): number {
  if (!ext) return -1;
  const m = /(?:^|\s)W(\d+)/.exec(ext);
  return m ? Number(m[1]) : -1;
}

/**
 * Delivery order of a Maildir base name (`<seconds>.M<usec>…`, as Dovecot orders new mail) as
 * one number (seconds × 10⁶ + microseconds); Infinity for names without that form.
 */
function deliveryTime(name: string): number {
  let i = 0;
  let sec = 0;
  for (; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c < 48 || c > 57) break;
    sec = sec * 10 + (c - 48);
  }
  if (i === 0 || name.charCodeAt(i) !== 46 /* . */) return Number.POSITIVE_INFINITY;
  let usec = 0;
  if (name.charCodeAt(i + 1) === 77 /* M */) {
    for (let j = i + 2; j < name.length; j++) {
      const c = name.charCodeAt(j);
      if (c < 48 || c > 57) break;
      usec = usec * 10 + (c - 48);
    }
  }
  return sec * 1e6 + usec;
}

/**
 * Delivery order of two Maildir base names: seconds, then microseconds (`M<usec>`), numerically,
 * as Dovecot orders new mail; the name itself breaks ties.
 */
export function compareMaildirNames(a: string, b: string): number {
  const ta = deliveryTime(a);
  const tb = deliveryTime(b);
  if (ta !== tb && (ta !== Number.POSITIVE_INFINITY || tb !== Number.POSITIVE_INFINITY)) return ta < tb ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The time in a name (its leading seconds, as ms), or NaN: a last resort for INTERNALDATE. */
function nameTimeMs(key: string): number {
  const t = deliveryTime(key);
  return t === Number.POSITIVE_INFINITY ? Number.NaN : Math.floor(t / 1e6) * 1000;
}

/** Scratch buffer for header reads (used synchronously only). */
let scratch = Buffer.allocUnsafe(HEADER_PREFIX);

/** Offset just after the blank line that ends a header in buf[0, len), or -1. */
function headerEndIn(buf: Buffer, len: number, from: number): number {
  const b = buf.subarray(0, len);
  if (len >= 1 && b[0] === 0x0a) return 1;
  if (len >= 2 && b[0] === 0x0d && b[1] === 0x0a) return 2;
  let i = b.indexOf(0x0a, Math.max(0, from - 3));
  while (i >= 0) {
    const n = b[i + 1];
    if (n === 0x0a) return i + 2;
    if (n === 0x0d && b[i + 2] === 0x0a) return i + 3;
    i = b.indexOf(0x0a, i + 1);
  }
  return -1;
}

/**
 * Reads a file's header block (through the blank line that ends it; the whole file when there is
 * none): a 16 KiB prefix first, more only while no blank line has been seen.
 */
function readHeaderSync(file: string): Buffer {
  const fd = openSync(file, "r");
  try {
    let len = 0;
    for (;;) {
      if (len === scratch.length) {
        const bigger = Buffer.allocUnsafe(scratch.length * 2);
        scratch.copy(bigger, 0, 0, len);
        scratch = bigger;
      }
      const n = readSync(fd, scratch, len, scratch.length - len, len);
      const from = len;
      len += n;
      const end = headerEndIn(scratch, len, from);
      if (end >= 0) return Buffer.from(scratch.subarray(0, end));
      if (n === 0) return Buffer.from(scratch.subarray(0, len));
    }
  } finally {
    closeSync(fd);
    if (scratch.length > 4 * HEADER_PREFIX) scratch = Buffer.allocUnsafe(HEADER_PREFIX);
  }
}

/** A JSON string token at buf[at] (which must be `"`): its value and the offset after it. */
function jsonStringAt(buf: Buffer, at: number, limit: number): { value: string; end: number } | null {
  if (buf[at] !== 0x22) return null;
  let escaped = false;
  let sawBackslash = false;
  for (let i = at + 1; i < limit; i++) {
    const c = buf[i];
    if (escaped) escaped = false;
    else if (c === 0x5c) {
      escaped = true;
      sawBackslash = true;
    } else if (c === 0x22) {
      const value = sawBackslash ? (JSON.parse(buf.toString("utf8", at, i + 1)) as string) : buf.toString("utf8", at + 1, i);
      return { value, end: i + 1 };
    }
  }
  return null;
}

/** Calls `fn` for every complete line of a file (bytes buf[start, end), without the LF), in chunks. */
async function forEachLine(file: string, fn: (buf: Buffer, start: number, end: number) => void): Promise<boolean> {
  let fh: import("node:fs/promises").FileHandle;
  try {
    fh = await fs.open(file, "r");
  } catch {
    return false;
  }
  try {
    const chunk = Buffer.allocUnsafe(1 << 20);
    let carry: Buffer | null = null;
    let pos = 0;
    for (;;) {
      const { bytesRead } = await fh.read(chunk, 0, chunk.length, pos);
      if (bytesRead === 0) break;
      pos += bytesRead;
      let data = chunk.subarray(0, bytesRead);
      if (carry) {
        data = Buffer.concat([carry, data]);
        carry = null;
      }
      let start = 0;
      for (;;) {
        const nl = data.indexOf(0x0a, start);
        if (nl < 0) break;
        if (nl > start) fn(data, start, nl);
        start = nl + 1;
      }
      // A torn last line (no LF) is left out.
      if (start < data.length) carry = Buffer.from(data.subarray(start));
    }
  } finally {
    await fh.close();
  }
  return true;
}

/**
 * The names in a directory, except dot files. (readdir returns them sorted, which for Maildir
 * names, led by their delivery time, is nearly delivery order: what comes next walks memory in
 * order and sorts fast. Unsorted opendir reads cost less but make the rest cost more.)
 */
async function listDir(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new NoSuchFolderError(dir);
    throw err;
  }
  for (let i = 0; i < names.length; i++) if (names[i]!.charCodeAt(0) === 46) return names.filter((n) => !n.startsWith("."));
  return names;
}

/** A directory's mtime (ns). Synchronous inside: a stat of a directory is a few µs. */
async function statDir(dir: string): Promise<bigint> {
  try {
    return statSync(dir, { bigint: true }).mtimeNs;
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
      void idx.dispose();
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
      void idx.dispose();
    }
  }
}

/** Indexes being saved and closed after their last use (flushAllIndexes waits for them). */
const closing = new Set<Promise<void>>();

function closingSoon(p: Promise<void>): Promise<void> {
  closing.add(p);
  void p.finally(() => closing.delete(p));
  return p;
}

/** Saves every dirty index now (for a clean shutdown), and waits for those being closed. */
export async function flushAllIndexes(): Promise<void> {
  await Promise.all([...registry.values()].map((i) => i.flush().catch(() => undefined)));
  while (closing.size > 0) await Promise.all([...closing]);
}

const MISS: unique symbol = Symbol("miss");

export class FolderIndex {
  readonly uidlist: UidList;
  readonly keywords: Keywords;
  refs = 0;
  gone = false;
  uidValidity = 0;
  nextUid = 1;
  highestModseq = 0n;

  private entries: Entry[] = [];
  /**
   * Entries by base name, for matching directory scans: made when first needed, since a first
   * scan of a folder (everything new) does not need it, nor a restart that finds no change.
   */
  private keyMap: Map<string, Entry> | null = new Map();
  private log: ChangeEvent[] = [];
  private logBase = 0;
  private readonly mutex = new Mutex();
  private readonly dirs: Record<"new" | "cur", DirState> = {
    new: { seen: null, verifyAt: 0 },
    cur: { seen: null, verifyAt: 0 },
  };
  private loading: Promise<void> | null = null;
  /** Id of the last directory scan (Entry.seen). */
  private scanId = 0;
  /** Entries missing from scans while their uidlist record remains: since when (ms). */
  private readonly missingSince = new Map<number, number>();
  private refreshing: Promise<void> | null = null;
  private refreshAgain = false;
  private dirty = 0;
  /** When the index file was last written (or the index made): saves come at most every saveEveryMs. */
  private lastSave = Date.now();
  /** Last time a session used the folder: saves wait for a quiet moment (QUIET_MS). */
  private lastUse = 0;
  /** Save at the next quiet moment, not only after saveEveryMs (nobody uses the folder now). */
  private saveSoon = false;
  private saveTimer: NodeJS.Timeout | null = null;
  private saveTimerAt = 0;
  private idleTimer: NodeJS.Timeout | null = null;
  private saving: Promise<void> | null = null;
  private lastPersistTry = 0;
  /** Flag lists by info letters, shared by every message with those flags. */
  private readonly flagLists = new Map<string, string[]>();
  private flagListsVersion = -1;
  // watch
  private readonly listeners = new Set<() => void>();
  private watchers: FSWatcher[] = [];
  private pollTimer: NodeJS.Timeout | null = null;
  private debounceTimer: NodeJS.Timeout | null = null;
  private watchFailed = false;
  // cache
  private cacheLoaded = false;
  private cacheLoading: Promise<void> | null = null;
  private cachePending: string[] = [];
  private cachePendingBytes = 0;
  private cacheTimer: NodeJS.Timeout | null = null;
  /** Big cached values, least recently used first. */
  private readonly lru = new Map<number, BigValues>();
  private lruCost = 0;
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
      void closingSoon(
        this.flush()
          .catch(() => undefined)
          .then(() => this.dispose()),
      );
    }, idle);
    this.idleTimer.unref();
    this.saveSoon = true;
    this.scheduleSave();
  }

  /** Stops timers and watchers and closes the uidlist (flushAllIndexes waits for that). */
  dispose(): Promise<void> {
    const closed = closingSoon(this.uidlist.close());
    for (const w of this.watchers) w.close();
    this.watchers = [];
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    if (this.saveTimer) clearTimeout(this.saveTimer);
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.pollTimer = this.debounceTimer = this.saveTimer = this.idleTimer = null;
    this.listeners.clear();
    return closed;
  }

  ready(): Promise<void> {
    if (!this.loading) this.loading = this.mutex.run(() => this.load());
    return this.loading;
  }

  // ---- views -------------------------------------------------------------------------------

  infos(): MessageInfo[] {
    return this.entries.slice();
  }

  infoOf(uid: number): MessageInfo | undefined {
    return this.entryOf(uid);
  }

  private get byKey(): Map<string, Entry> {
    if (this.keyMap === null) {
      const map = new Map<string, Entry>();
      for (const e of this.entries) map.set(e.key, e);
      this.keyMap = map;
    }
    return this.keyMap;
  }

  /** The position of a UID's entry, or -1 (binary search: entries are in ascending UID order). */
  private slotOf(uid: number): number {
    const list = this.entries;
    let lo = 0;
    let hi = list.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const u = list[mid]!.uid;
      if (u === uid) return mid;
      if (u < uid) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  /** The entry of a UID. */
  private entryOf(uid: number): Entry | undefined {
    const i = this.slotOf(uid);
    return i < 0 ? undefined : this.entries[i];
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
      if (this.log.length > 0) this.log = [];
      return;
    }
    this.log.push({ kind, uid, origin });
    if (this.listeners.size > 0) this.notify();
  }

  // ---- messages ----------------------------------------------------------------------------

  /** The (shared, frozen) flag list of a file name's info letters. */
  private flagsOf(file: string): string[] {
    if (this.flagListsVersion !== this.keywords.version) {
      this.flagLists.clear();
      this.flagListsVersion = this.keywords.version;
    }
    const letters = infoLetters(file);
    let flags = this.flagLists.get(letters);
    if (flags) return flags;
    flags = [];
    for (const c of letters) {
      const f = FLAG_LETTERS[c];
      if (f) flags.push(f);
      else if (c >= "a" && c <= "z") {
        const k = this.keywords.keywordOf(c);
        if (k) flags.push(k);
      }
    }
    Object.freeze(flags);
    if (this.flagLists.size < 4096) this.flagLists.set(letters, flags);
    return flags;
  }

  private makeMsg(uid: number, key: string, dir: "new" | "cur", file: string, size: number, modseq: bigint, mtime: number): Msg {
    if (modseq > this.highestModseq) this.highestModseq = modseq;
    return new Msg(uid, key, size, this.flagsOf(file), modseq, mtime, this, dir, file);
  }

  /**
   * After a change: a new Msg for an indexed entry (flags from its file name, the given
   * modseq/size), which takes the entry's place in the index. Returns it; `e` is stale after.
   */
  private remake(e: Entry, modseq: bigint = e.modseq, size: number = e.size): Msg {
    const m = this.makeMsg(e.uid, e.key, e.dir, e.file, size, modseq, e.knownMtime);
    m.seen = e.seen;
    m.small = e.small;
    const i = this.slotOf(e.uid);
    if (i >= 0 && this.entries[i] === e) this.entries[i] = m;
    if (this.keyMap !== null && this.keyMap.get(e.key) === e) this.keyMap.set(e.key, m);
    return m;
  }

  /**
   * The mtime of a message's file (INTERNALDATE), read now and kept. When the file is gone
   * (renamed or expunged under us), the name's time stands in, unremembered.
   */
  resolveMtime(m: Msg): number {
    const e = this.entryOf(m.uid);
    if (e && e.key === m.key) {
      const known = e.knownMtime;
      if (!Number.isNaN(known)) {
        m.learnMtime(known);
        return known;
      }
      const st = statSync(path.join(this.dir, e.dir, e.file), { throwIfNoEntry: false });
      if (st) {
        e.learnMtime(st.mtimeMs);
        m.learnMtime(st.mtimeMs);
        this.dirty++;
        this.scheduleSave();
        return m.knownMtime;
      }
    }
    const t = nameTimeMs(m.key);
    return Number.isNaN(t) ? Date.now() : t;
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
    // Saved within saveEveryMs, and when the last user leaves: not now, while the first
    // session waits for its answer (the uidlist, not this file, is what must be on disk).
    if (this.dirty > 0) this.scheduleSave();
  }

  private async loadIndexFile(): Promise<void> {
    let data: Buffer;
    try {
      data = await fs.readFile(path.join(this.dir, INDEX_FILE));
    } catch {
      return;
    }
    try {
      const nl = data.indexOf(0x0a);
      if (nl < 0) return;
      const h = JSON.parse(data.toString("utf8", 0, nl)) as {
        v: number;
        uidValidity: number;
        nextUid: number;
        highestModseq: string;
        count: number;
        dirs: Record<"new" | "cur", { seen: string | null; verifyAt: number }>;
      };
      if ((h.v !== 1 && h.v !== INDEX_VERSION) || h.uidValidity !== this.uidlist.uidValidity || !this.uidlist.present) return;
      await this.keywords.refresh();
      const entries: Entry[] = [];
      let lines = 0;
      let mismatch = false;
      let lastModseq = -1;
      let lastModseqBig = 0n;
      let lastUid = 0;
      let pos = nl + 1;
      // uid \t dir \t file \t size \t mtime \t modseq \n
      while (pos < data.length) {
        let end = data.indexOf(0x0a, pos);
        if (end < 0) end = data.length;
        lines++;
        const t1 = data.indexOf(0x09, pos);
        const t2 = t1 < 0 ? -1 : data.indexOf(0x09, t1 + 1);
        const t3 = t2 < 0 ? -1 : data.indexOf(0x09, t2 + 1);
        const t4 = t3 < 0 ? -1 : data.indexOf(0x09, t3 + 1);
        const t5 = t4 < 0 ? -1 : data.indexOf(0x09, t4 + 1);
        if (t5 < 0 || t5 > end || t2 - t1 !== 4) throw new Error("bad index line");
        const uid = decimalAt(data, pos, t1);
        const dir = data[t1 + 1] === 0x6e /* n */ ? "new" : "cur";
        const file = data.toString("utf8", t2 + 1, t3);
        const size = decimalAt(data, t3 + 1, t4);
        const mtime = t5 === t4 + 1 ? Number.NaN : Number(data.toString("latin1", t4 + 1, t5));
        const modseqN = decimalAt(data, t5 + 1, end);
        if (uid <= lastUid || size < 0 || modseqN < 0 || !file) throw new Error("bad index line");
        lastUid = uid;
        pos = end + 1;
        const key = baseKey(file);
        if (this.uidlist.uidOf(key) !== uid) {
          mismatch = true;
          continue;
        }
        if (modseqN !== lastModseq) {
          lastModseq = modseqN;
          lastModseqBig = BigInt(modseqN);
        }
        entries.push(this.makeMsg(uid, key, dir, file, size, lastModseqBig, mtime));
      }
      if (lines !== h.count) throw new Error("index count mismatch");
      this.entries = entries;
      this.keyMap = null;
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
      this.keyMap = new Map();
      this.highestModseq = 0n;
    }
  }

  /** Brings the index up to date with the disk (cheap when nothing changed). */
  refresh(): Promise<void> {
    if (this.gone) return Promise.reject(new NoSuchFolderError(this.dir));
    this.touch();
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
    const window = recheckWindow(mtime);
    this.dirs[d] = { seen: mtime, verifyAt: startedAt - mtimeMs < window ? mtimeMs + window + 1 : 0 };
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
      // (Two seconds whatever the file system: changes in a burst, e.g. one STORE after another,
      // then share one re-read.)
      if (after !== null) this.dirs[d] = { seen: after, verifyAt: Date.now() + RECHECK_MS + 1 };
    }
    return result;
  }

  /** Reads the named directories (new/ first: a file moving new → cur meanwhile is seen at least once). */
  private async scanDirs(which: { new: boolean; cur: boolean }): Promise<Loc[]> {
    const found = (dir: "new" | "cur", names: string[]): Loc[] =>
      names.map((f) => new Msg(0, baseKey(f), -1, NO_FLAGS, 0n, Number.NaN, this, dir, f));
    const inNew = which.new ? found("new", await listDir(path.join(this.dir, "new"))) : [];
    if (!which.cur) return inNew;
    const inCur = found("cur", await listDir(path.join(this.dir, "cur")));
    return inNew.length === 0 ? inCur : inNew.concat(inCur);
  }

  /** Marks the indexed messages a scan saw (Entry.seen); returns the scan's id. */
  private markSeen(found: readonly Loc[]): number {
    const id = ++this.scanId;
    if (this.entries.length === 0) return id;
    for (let i = 0; i < found.length; i++) {
      const e = this.byKey.get(found[i]!.key);
      if (e !== undefined) e.seen = id;
    }
    return id;
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
    let id = this.markSeen(found);
    let missing = this.entries.length === 0 ? [] : this.entries.filter((e) => which[e.dir] && e.seen !== id);
    if (missing.length > 0) {
      // Confirm with a second read: a file renamed meanwhile may have hidden from the first.
      found = await this.scanDirs({ new: true, cur: true });
      id = this.markSeen(found);
      missing = this.entries.filter((e) => e.seen !== id);
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
      for (const uid of [...this.missingSince.keys()]) {
        const e = this.entryOf(uid);
        if (!e || e.seen === id) this.missingSince.delete(uid);
      }

    // Changed locations / flags, and files not indexed yet. Backwards: when a file was seen in
    // both new/ and cur/ (moved during the scan), cur/ (read last) wins.
    let flagModseq: bigint | null = null;
    let candidates: Loc[] = [];
    const dupes = which.new && which.cur && found.length > 0 && found[0]!.dir === "new" ? new Set<string>() : null;
    const done = ++this.scanId;
    const indexed = this.entries.length > 0;
    // First scan of a folder, one directory read: every file is a candidate, in listing order.
    for (let i = !indexed && !dupes ? -1 : found.length - 1; i >= 0; i--) {
      const loc = found[i]!;
      const e = indexed ? this.byKey.get(loc.key) : undefined;
      if (!e) {
        if (dupes) {
          if (dupes.has(loc.key)) continue;
          dupes.add(loc.key);
        }
        candidates.push(loc);
        continue;
      }
      if (e.seen === done) continue;
      e.seen = done;
      if (e.file === loc.file && e.dir === loc.dir) continue;
      const flagsChanged = infoLetters(e.file) !== infoLetters(loc.file);
      e.dir = loc.dir;
      e.file = loc.file;
      if (flagsChanged) {
        flagModseq ??= this.newModseq();
        this.remake(e, flagModseq);
        this.emit("flags", e.uid, origin);
      }
      this.dirty++;
    }
    if (!indexed && !dupes) candidates = found;
    else candidates.reverse();
    found = [];
    if (missing.length > 0) this.removeEntries(missing.map((e) => e.uid));

    // New files.
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
    const above = this.uidlist.recordsAbove(max);
    if (above.length === 0) return false;
    const cand = new Set(candidates.map((c) => c.key));
    return above.some((r) => !this.byKey.has(r.key) && !cand.has(r.key));
  }

  private async addFiles(candidates: Loc[], held?: UidListTx): Promise<void> {
    if (!held) await this.uidlist.refresh();
    const max = this.maxUid();
    const hidden = this.hiddenAbove(max, candidates);
    const needLock =
      held !== undefined ||
      hidden ||
      this.uidlist.uidValidity === 0 ||
      this.uidlist.size === 0 ||
      candidates.some((c) => c.dir === "new") ||
      candidates.some((c) => {
        const u = this.uidlist.uidOf(c.key);
        return u === undefined || u <= max;
      });
    const placed: Loc[] = [];
    if (!needLock) {
      for (const c of candidates) {
        c.uid = this.uidlist.uidOf(c.key)!;
        placed.push(c);
      }
    } else {
      const work = async (tx: UidListTx) => {
        let list = candidates;
        for (let attempt = 0; attempt < 3 && this.hiddenAbove(max, list); attempt++) {
          // A message with a UID may have hidden from our scan (renamed meanwhile). Under the
          // lock every UID'd file is in place: read the directories again.
          const seen = new Set<string>();
          list = [];
          for (const loc of (await this.scanDirs({ new: true, cur: true })).reverse()) {
            if (this.byKey.has(loc.key) || seen.has(loc.key)) continue;
            seen.add(loc.key);
            list.push(loc);
          }
        }
        // Files that already have a UID keep it (unless it would go backwards); others get one,
        // in delivery order. Sort keys are computed once per file, not per comparison.
        // (A first scan: the list has no records, so no UIDs to sort by.)
        const n = list.length;
        const known = tx.size > 0;
        const uidKey = known ? new Float64Array(n) : null;
        const timeKey = new Float64Array(n);
        for (let i = 0; i < n; i++) {
          const c = list[i]!;
          c.uid = (known && tx.uidOf(c.key)) || 0;
          if (uidKey !== null) uidKey[i] = c.uid || Number.MAX_SAFE_INTEGER;
          timeKey[i] = deliveryTime(c.key);
        }
        const cmp = (a: number, b: number) => {
          if (uidKey !== null) {
            const d = uidKey[a]! - uidKey[b]!;
            if (d !== 0) return d;
          }
          const ta = timeKey[a]!;
          const tb = timeKey[b]!;
          if (ta !== tb) return ta < tb ? -1 : 1;
          const ka = list[a]!.key;
          const kb = list[b]!.key;
          return ka < kb ? -1 : ka > kb ? 1 : 0;
        };
        // A directory listing comes sorted by name, which for Maildir names is nearly always
        // delivery order already: then one pass checks it and nothing is copied.
        let inOrder = true;
        for (let i = 1; i < n && inOrder; i++) if (cmp(i - 1, i) > 0) inOrder = false;
        const ordered = inOrder
          ? list
          : Array.from(list.keys())
              .sort(cmp)
              .map((i) => list[i]!);
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
          // (c.uid: the UID the list had for it when sorting; the list cannot change under its lock)
          let uid = c.uid;
          if (uid === 0 || uid <= last) {
            if (uid !== 0) debug(`${this.dir}: ${c.key} had UID ${uid}, not above ${last}: new UID`);
            uid = uid === 0 ? tx.assignNew(c.key) : tx.assign(c.key);
          }
          last = uid;
          c.uid = uid;
          placed.push(c);
        }
      };
      if (held) await work(held);
      else await this.uidlist.locked(work);
    }
    this.uidValidity = this.uidlist.uidValidity;
    this.nextUid = Math.max(this.nextUid, this.uidlist.nextUid);
    for (let i = 1; i < placed.length; i++)
      if (placed[i - 1]!.uid > placed[i]!.uid) {
        placed.sort((a, b) => a.uid - b.uid);
        break;
      }
    await this.keywords.refresh();
    const modseq = this.newModseq();
    // No stat: the wire size comes from W= in the name or the uidlist; INTERNALDATE is read
    // when first asked for (Msg.internalDate). Only files without a known size are read.
    const sizes = new Float64Array(placed.length);
    const unknown: number[] = [];
    for (let i = 0; i < placed.length; i++) {
      const p = placed[i]!;
      let size = numberAfter(p.key, ",W=");
      if (size < 0) size = extWireSize(this.uidlist.extOf(p.key));
      sizes[i] = size;
      if (size < 0) unknown.push(i);
    }
    if (unknown.length > 0) {
      await pool(unknown, 16, async (i) => {
        const p = placed[i]!;
        try {
          const full = path.join(this.dir, p.dir, p.file);
          sizes[i] = toCrlf(statSync(full).size <= SYNC_READ_MAX ? readFileSync(full) : await fs.readFile(full)).length;
        } catch {
          sizes[i] = -2; // gone again (expunged or renamed): the next refresh sorts it out
        }
      });
    }
    // A file that vanished before we could read it was renamed (flags) or expunged by someone:
    // add nothing above it now, or it would come back later with a UID below ours. The next
    // refresh reads the directories again and takes it and the rest in order.
    let max2 = this.maxUid();
    const indexed = this.entries.length > 0;
    if (!indexed) this.keyMap = null; // made when a later scan needs it
    let added = 0;
    for (let i = 0; i < placed.length; i++) {
      const p = placed[i]!;
      if (sizes[i] === -2) {
        this.dirs.cur.verifyAt = 1;
        this.dirs.new.verifyAt = 1;
        break;
      }
      if (p.uid <= max2 || (indexed && this.byKey.has(p.key))) continue;
      // The scan's record becomes the entry.
      const e = p;
      const size = sizes[i]!;
      if (modseq > this.highestModseq) this.highestModseq = modseq;
      e.place(p.uid, size, this.flagsOf(p.file), modseq);
      this.entries.push(e);
      this.keyMap?.set(e.key, e);
      max2 = e.uid;
      added++;
      this.emit("add", e.uid);
    }
    this.dirty += added;
    this.scheduleSave();
  }

  private removeEntries(uids: number[]): void {
    if (uids.length === 0) return;
    const set = new Set(uids);
    for (const uid of uids) {
      const e = this.entryOf(uid);
      if (!e) continue;
      this.keyMap?.delete(e.key);
      const big = this.lru.get(uid);
      if (big) {
        this.lru.delete(uid);
        this.lruCost -= big.cost;
      }
      this.emit("remove", uid);
    }
    this.entries = this.entries.filter((e) => !set.has(e.uid));
    this.highestModseq = this.newModseq();
    this.dirty++;
  }

  newModseq(): bigint {
    const m = clockModseq(this.highestModseq);
    this.highestModseq = m;
    return m;
  }

  // ---- changes made through mailboxes ------------------------------------------------------

  /** Path of a message file as the index knows it now (null when expunged). */
  filePath(uid: number): string | null {
    const e = this.entryOf(uid);
    // The folder path is normalised and names hold no "/": no path.join on every read.
    return e ? `${this.dir}/${e.dir}/${e.file}` : null;
  }

  async readMessage(uid: number): Promise<Buffer> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const p = this.filePath(uid);
      if (p === null) throw new ExpungedError(uid);
      try {
        const e0 = this.entryOf(uid);
        const raw = e0 && e0.size <= SYNC_READ_MAX ? readFileSync(p) : await fs.readFile(p);
        const data = toCrlf(raw);
        const e = this.entryOf(uid);
        if (e && e.size !== data.length) {
          // Wrong W= in the name: fix the index (the session's snapshot keeps the old size).
          this.remake(e, e.modseq, data.length);
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

  /**
   * The message's header block with CRLF line ends: through the blank line that ends it (the
   * whole message when it has none). Reads a 16 KiB prefix of the file, more only for a longer
   * header.
   */
  async readHeader(uid: number): Promise<Buffer> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const p = this.filePath(uid);
      if (p === null) throw new ExpungedError(uid);
      try {
        return toCrlf(readHeaderSync(p));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
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
        const work: { uid: number; to: string }[] = [];
        for (const uid of list) {
          const e = this.entryOf(uid);
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
            out.set(uid, e);
            continue;
          }
          work.push({ uid, to: `${e.key}:2,${next}` });
        }
        if (work.length === 0) return;
        await this.ownChange("cur", async () => {
          // Synchronous renames in slices, yielding between them: a rename is a few
          // microseconds of kernel work, and the thread pool's round trip per call cost twice
          // that (1,000 renames: 13 ms against 25 ms). A big STORE still lets other sessions in
          // every RENAME_SLICE files.
          for (let i = 0; i < work.length; i++) {
            if (i > 0 && i % RENAME_SLICE === 0) await new Promise<void>((r) => setImmediate(r));
            const { uid, to } = work[i]!;
            // (Looked up again: a change meanwhile puts a new Msg in the entry's place.)
            const e = this.entryOf(uid);
            if (!e) continue;
            try {
              renameSync(`${this.dir}/${e.dir}/${e.file}`, `${this.dir}/cur/${to}`);
            } catch (err) {
              if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
              retry.push(e.uid);
              continue;
            }
            modseq ??= this.newModseq();
            e.dir = "cur";
            e.file = to;
            const m = this.remake(e, modseq);
            this.emit("flags", uid, origin);
            out.set(uid, m);
            this.dirty++;
          }
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
      const targets = uids.map((u) => this.entryOf(u)).filter((e): e is Entry => e !== undefined);
      const touched = new Set(targets.map((e) => e.dir));
      await this.ownChange("cur", () => this.ownChange("new", () => unlinkAll(targets)));
      if (retry.length > 0) {
        const again = retry.map((e) => e.uid);
        retry = [];
        await this.doRefresh(true);
        const still = again.map((u) => this.entryOf(u)).filter((e): e is Entry => e !== undefined);
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
   * cur/ with their flags and UIDs under the uidlist lock, then fsyncs cur/. `mtime` may be NaN
   * (not known: read when first asked for).
   */
  commitTmp(items: { key: string; flags: readonly string[]; size: number; mtime: number }[]): Promise<number[]> {
    return this.mutex.run(async () => {
      await this.doRefresh(false);
      const letters = await Promise.all(items.map((i) => this.lettersFor(i.flags)));
      const placed: { uid: number; key: string; file: string; size: number; mtime: number }[] = [];
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
              placed.push({ uid, key: it.key, file, size: it.size, mtime: it.mtime });
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
      for (const p of placed) {
        if (p.uid > this.maxUid()) {
          const e = this.makeMsg(p.uid, p.key, "cur", p.file, p.size, modseq, p.mtime);
          this.entries.push(e);
          this.keyMap?.set(e.key, e);
          this.emit("add", e.uid);
        }
        uids.push(p.uid);
      }
      this.dirty += placed.length;
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
      const e = this.entryOf(uid);
      if (!e) return null;
      const src = path.join(this.dir, e.dir, e.file);
      let physical = numberAfter(e.key, ",S=");
      if (physical < 0) {
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
        // Different filesystem or links not allowed: copy durably, keeping INTERNALDATE.
        let data: Buffer;
        try {
          data = await fs.readFile(src);
        } catch {
          await this.mutex.run(() => this.doRefresh(true));
          continue;
        }
        const mtime = new Date(e.mtimeMs);
        await writeTmp(dest.dir, key, data);
        await fs.utimes(tmp, mtime, mtime);
      }
      // A hard link shares the mtime: known or not, the destination's is the source's.
      return { key, size: e.size, mtime: e.knownMtime, flags: e.flags };
    }
    return null;
  }

  // ---- cache -------------------------------------------------------------------------------

  /**
   * A per-message cached value (see the header comment): computed on a miss, kept in memory
   * (small values for every message, big ones in a bounded LRU) and appended to the cache file.
   */
  async cached<T>(uid: number, field: string, compute: () => Promise<T>): Promise<T> {
    this.lastUse = Date.now();
    const e = this.entryOf(uid);
    if (!e) return compute();
    if (!this.cacheLoaded) await this.loadCache();
    const hit = this.cacheGet(e, field);
    if (hit !== MISS) return hit as T;
    const value = await compute();
    // (The entry may have been replaced meanwhile by a change: keep the value with the current one.)
    const now = this.entryOf(uid);
    if (now !== undefined && now.key === e.key) this.cachePut(now, field, value);
    return value;
  }

  /** A cached value without computing it: undefined on a miss (after `cached()` ran once). */
  peekCached(uid: number, field: string): unknown {
    const e = this.entryOf(uid);
    if (!e || !this.cacheLoaded) return undefined;
    const hit = this.cacheGet(e, field);
    return hit === MISS ? undefined : hit;
  }

  /** Number of big values in memory and their JSON bytes (for tests and diagnostics). */
  cacheStats(): { small: number; big: number; bigBytes: number } {
    let small = 0;
    for (const e of this.entries) if (e.small) small += Object.keys(e.small).length;
    let big = 0;
    for (const b of this.lru.values()) big += Object.keys(b.values).length;
    return { small, big, bigBytes: this.lruCost };
  }

  private cacheGet(e: Entry, field: string): unknown {
    const s = e.small;
    if (s !== null && Object.hasOwn(s, field)) return s[field];
    const b = this.lru.get(e.uid);
    if (b !== undefined && Object.hasOwn(b.values, field)) {
      // Most recently used goes last.
      this.lru.delete(e.uid);
      this.lru.set(e.uid, b);
      return b.values[field];
    }
    return MISS;
  }

  private cachePut(e: Entry, field: string, value: unknown): void {
    const json = JSON.stringify(value) ?? "null";
    this.remember(e, field, value, json.length);
    // Only small values go to the file: a big one is computed again after a restart as after
    // an eviction (the file stays small and quick to load).
    if (json.length > SMALL_CACHE_VALUE) return;
    const line = `[${JSON.stringify(e.key)},${JSON.stringify(field)},${json}]\n`;
    this.cachePending.push(line);
    this.cachePendingBytes += line.length;
    // A long SEARCH makes a line per message: write them as they come, not all at the end.
    if (this.cachePendingBytes >= PENDING_CACHE_BYTES) this.flushCacheSync();
    else if (!this.cacheTimer) {
      this.cacheTimer = setTimeout(() => {
        this.cacheTimer = null;
        void this.flushCache().catch(() => undefined);
      }, 1000);
      this.cacheTimer.unref();
    }
  }

  /** Keeps a value in memory: small ones with the entry, big ones in the LRU (then evicts). */
  private remember(e: Entry, field: string, value: unknown, cost: number): void {
    if (cost <= SMALL_CACHE_VALUE) {
      if (e.small === null) e.small = Object.create(null) as Record<string, unknown>;
      e.small[field] = value;
      this.forgetBig(e, field);
      return;
    }
    if (e.small !== null && Object.hasOwn(e.small, field)) delete e.small[field];
    let b = this.lru.get(e.uid);
    if (b === undefined) b = { values: Object.create(null), costs: Object.create(null), cost: 0 };
    else this.lru.delete(e.uid);
    const old = b.costs[field] ?? 0;
    b.values[field] = value;
    b.costs[field] = cost;
    b.cost += cost - old;
    this.lruCost += cost - old;
    this.lru.set(e.uid, b);
    const budget = this.opts.cacheBudget ?? DEFAULT_CACHE_BUDGET;
    while (this.lruCost > budget && this.lru.size > 1) {
      const [oldest, values] = this.lru.entries().next().value as [number, BigValues];
      this.lru.delete(oldest);
      this.lruCost -= values.cost;
    }
  }

  private forgetBig(e: Entry, field: string): void {
    const b = this.lru.get(e.uid);
    if (!b || !Object.hasOwn(b.values, field)) return;
    const c = b.costs[field] ?? 0;
    delete b.values[field];
    delete b.costs[field];
    b.cost -= c;
    this.lruCost -= c;
    if (b.cost <= 0 && Object.keys(b.values).length === 0) this.lru.delete(e.uid);
  }

  private async loadCache(): Promise<void> {
    if (this.cacheLoaded) return;
    this.cacheLoading ??= this.readCacheFile().finally(() => {
      this.cacheLoaded = true;
    });
    await this.cacheLoading;
  }

  /** Reads the cache file in chunks into memory (lines of other messages and big values are skipped). */
  private async readCacheFile(): Promise<void> {
    let lines = 0;
    let live = 0;
    await forEachLine(path.join(this.dir, CACHE_FILE), (buf, start, end) => {
      lines++;
      const line = this.parseCacheLine(buf, start, end);
      if (!line) return;
      const { e, field, vs } = line;
      let value: unknown;
      try {
        value = JSON.parse(buf.toString("utf8", vs, end - 1));
      } catch {
        return; // torn or mixed line: skip
      }
      live++;
      this.remember(e, field, value, end - 1 - vs);
    }).catch(() => undefined);
    if (lines > 1000 && live * 2 < lines) await this.compactCache().catch(() => undefined);
  }

  /**
   * `["<key>","<field>",<value>]` with a small value, of a message in the index: its entry,
   * field and where the value starts. (Lines with big values came from older versions.)
   */
  private parseCacheLine(buf: Buffer, start: number, end: number): { e: Entry; field: string; vs: number } | null {
    if (buf[start] !== 0x5b || buf[end - 1] !== 0x5d || end - start > SMALL_CACHE_VALUE + 1024) return null;
    const k = jsonStringAt(buf, start + 1, end);
    if (!k || buf[k.end] !== 0x2c) return null;
    const e = this.byKey.get(k.value);
    if (!e) return null;
    const f = jsonStringAt(buf, k.end + 1, end);
    if (!f || buf[f.end] !== 0x2c || end - 1 - (f.end + 1) > SMALL_CACHE_VALUE) return null;
    return { e, field: f.value, vs: f.end + 1 };
  }

  /** Rewrites the cache file with the lines it would load (copied as they are). */
  private async compactCache(): Promise<void> {
    const file = path.join(this.dir, CACHE_FILE);
    const tmp = `${file}.${process.pid}.tmp`;
    const fd = openSync(tmp, "w");
    try {
      let out: Buffer[] = [];
      let size = 0;
      const write = () => {
        const data = Buffer.concat(out);
        for (let off = 0; off < data.length; ) off += writeSync(fd, data, off);
        out = [];
        size = 0;
      };
      await forEachLine(file, (buf, start, end) => {
        if (!this.parseCacheLine(buf, start, end)) return;
        out.push(Buffer.from(buf.subarray(start, end + 1)));
        size += end + 1 - start;
        if (size >= 1 << 20) write();
      });
      write();
      closeSync(fd);
      await fs.rename(tmp, file);
    } catch (err) {
      try {
        closeSync(fd);
      } catch {
        // closed already
      }
      await fs.unlink(tmp).catch(() => undefined);
      if (!isNoSpace(err)) throw err;
    }
  }

  /** Appends the pending lines now (one write() of at most a few hundred KB). */
  private flushCacheSync(): void {
    const data = this.cachePending.join("");
    this.cachePending = [];
    this.cachePendingBytes = 0;
    try {
      appendFileSync(path.join(this.dir, CACHE_FILE), data);
    } catch {
      // a cache: what could not be written is computed again after a restart
    }
  }

  private async flushCache(): Promise<void> {
    if (this.cachePending.length === 0) return;
    const data = this.cachePending.join("");
    this.cachePending = [];
    this.cachePendingBytes = 0;
    await fs.appendFile(path.join(this.dir, CACHE_FILE), data);
  }

  // ---- persistence -------------------------------------------------------------------------

  /** Notes that a session is using the folder (saves wait for a quiet moment). */
  private touch(): void {
    this.lastUse = Date.now();
  }

  /** Milliseconds until the index may be saved: saveEveryMs after the last save (or soon), and quiet. */
  private saveDelay(): number {
    const now = Date.now();
    const every = this.opts.saveEveryMs ?? 30_000;
    const at = Math.max(this.saveSoon ? now : this.lastSave + every, this.lastUse + Math.min(QUIET_MS, every));
    return Math.max(0, at - now);
  }

  /**
   * Arranges for the index file to be written: at most every saveEveryMs while sessions use the
   * folder, soon after the last one leaves, and always in a quiet moment (writing a big index
   * takes a while; it should not land in the middle of a client's burst of commands).
   */
  private scheduleSave(soon = false): void {
    if (this.dirty === 0 || this.gone) return;
    if (soon) this.saveSoon = true;
    const wait = this.saveDelay();
    if (this.saveTimer) {
      if (this.saveTimerAt <= Date.now() + wait) return;
      clearTimeout(this.saveTimer);
    }
    this.saveTimerAt = Date.now() + wait;
    this.saveTimer = setTimeout(() => {
      this.saveTimer = null;
      if (this.saveDelay() > 0) this.scheduleSave();
      else void this.flush().catch(() => undefined);
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
      let lastModseq = -1n;
      let lastModseqText = "";
      let chunk = "";
      for (const e of this.entries) {
        const m = e;
        if (m.modseq !== lastModseq) {
          lastModseq = m.modseq;
          lastModseqText = m.modseq.toString();
        }
        const mtime = m.knownMtime;
        chunk += `${e.uid}\t${e.dir}\t${e.file}\t${m.size}\t${Number.isNaN(mtime) ? "" : mtime}\t${lastModseqText}\n`;
        if (chunk.length > 65536) {
          parts.push(chunk);
          chunk = "";
        }
      }
      parts.push(chunk);
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
      this.saveSoon = false;
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
