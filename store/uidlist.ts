/**
 * Dovecot's `dovecot-uidlist`: the UID ↔ file-name map of one Maildir folder, in the format
 * Dovecot 1.1+ writes, so Dovecot and mailstack can share a Maildir:
 *
 *   3 V<uidvalidity> N<nextuid> G<mailbox guid, 128 bit hex> [other header fields]
 *   <uid> [extension fields, e.g. W<vsize>] :<base file name without ":2,flags">
 *
 * Version 1 (Courier-compatible: `1 <uidvalidity> <nextuid>` / `<uid> <filename>`) is read too.
 * Records are ascending by UID; the next UID is max(N, last UID + 1).
 *
 * Updates happen only under the `dovecot-uidlist.lock` dotlock (lock.ts), after re-reading the
 * file. New records are appended with one write() and fdatasync (what Dovecot does too); any
 * other change, a torn tail or many dead records make a full rewrite: tmp file, fsync, rename,
 * fsync the folder directory. Readers re-read only the appended tail when the file grew in place.
 *
 * In memory the records are two arrays (names, UIDs) in the order they came, and a name → record
 * map made only when a look-up needs one (`Records`): assigning a big folder's first UIDs makes
 * no map and no object per record, the transaction keeps no copy of the records it gives out
 * (`UidListTx`), and the rewrite makes no string per record (`Records.plainText`).
 *
 * Full disk (ENOSPC/EDQUOT on the lock, the append or the rewrite): as Dovecot does, UIDs are
 * assigned in memory anyway, continuing from the list's next UID, so the messages can be served;
 * the in-memory changes are written by the next locked update whose writes succeed (a full
 * rewrite). Within this process a UID is never handed out twice. Trade-off: while we cannot
 * write, another process (or host) sharing the Maildir may give the same UIDs to other messages
 * (or other UIDs to the same ones). When a re-read shows that, the disk wins: a message whose
 * key the file now has keeps the file's UID there, an in-memory UID the file gives to another
 * message is dropped from the list, and the next UID stays above every UID we ever handed out.
 * Sessions of this process keep the UIDs they were shown until the folder is opened anew.
 */
import { isAscii } from "node:buffer";
import { randomBytes } from "node:crypto";
import { promises as fs, statSync } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import * as path from "node:path";
import { isNoSpace, withDotlock } from "./lock";
import { syncDir } from "./maildir";

export const UIDLIST_FILE = "dovecot-uidlist";

/** MAILSTACK_STORE_DEBUG=1 prints the store's rare recoveries on stderr. */
function debug(msg: string): void {
  if (process.env.MAILSTACK_STORE_DEBUG) process.stderr.write(`mailstack store: ${msg}\n`);
}

export interface UidRecord {
  uid: number;
  /** Base file name: everything before `:2,`. */
  key: string;
  /** Extension fields as written (e.g. `W1234 GXXXX`), kept on rewrite. */
  ext: string;
}

interface FileSig {
  ino: number;
  size: number;
  mtimeNs: bigint;
}

/** Number of decimal digits of a positive integer. */
function decimalDigits(n: number): number {
  let d = 1;
  for (let p = 10; p <= n; p *= 10) d++;
  return d;
}

/** Writes a positive integer in decimal at buf[at]; returns the offset after it. */
function writeDecimal(buf: Buffer, at: number, n: number): number {
  const end = at + decimalDigits(n);
  let v = n;
  for (let j = end - 1; j >= at; j--) {
    buf[j] = 48 + (v % 10);
    v = Math.floor(v / 10);
  }
  return end;
}

/** Base name of a Maildir file name (drops the `:2,flags` info). */
export function baseKey(file: string): string {
  const i = file.indexOf(":");
  return i >= 0 ? file.slice(0, i) : file;
}

export class UidList {
  readonly file: string;
  uidValidity = 0;
  nextUid = 1;
  guid = "";
  /** Header fields other than V, N, G, kept on rewrite. */
  private headerExtra: string[] = [];
  /** key → UID, the list's content; extension fields (rare) apart. */
  private byKey = new Records();
  private exts = new Map<string, string>();
  private sig: FileSig | null = null;
  private fh: FileHandle | null = null;
  /** Bytes of the file parsed (up to and including the last complete line). */
  private parsed = 0;
  /** Whether what is on disk ends with a complete line exactly at `parsed`. */
  private cleanTail = true;
  private exists = false;
  /** Records on disk whose keys we removed (rewrite when there are many). */
  private deadOnDisk = 0;
  /** Full disk: records assigned in memory only, and keys removed in memory only. */
  private pending: { uid: number; key: string }[] = [];
  private pendingRemoved = new Set<string>();
  /** Memory is ahead of the file (a write failed for lack of space): rewrite at the next update. */
  private unsaved = false;
  /** The transaction of the running locked update, if any. */
  private tx: UidListTx | null = null;

  constructor(readonly dir: string) {
    this.file = path.join(dir, UIDLIST_FILE);
  }

  get present(): boolean {
    return this.exists;
  }

  /** Whether changes wait in memory for disk space (see the header comment). */
  get hasUnsaved(): boolean {
    return this.unsaved;
  }

  get size(): number {
    return this.byKey.size;
  }

  uidOf(key: string): number | undefined {
    return this.byKey.get(key);
  }

  record(key: string): UidRecord | undefined {
    const uid = this.byKey.get(key);
    return uid === undefined ? undefined : { uid, key, ext: this.exts.get(key) ?? "" };
  }

  /** A record's extension fields as written (e.g. `W1234`), or "". */
  extOf(key: string): string {
    return this.exts.size === 0 ? "" : (this.exts.get(key) ?? "");
  }

  keys(): IterableIterator<string> {
    return this.byKey.keys();
  }

  /** Upper bound of the UIDs in the list. */
  maxUid = 0;

  /** Records with a UID above `uid` (cheap when there are none). */
  recordsAbove(uid: number): UidRecord[] {
    if (this.maxUid <= uid) return [];
    const out: UidRecord[] = [];
    for (const [key, u] of this.byKey.entries()) if (u > uid) out.push({ uid: u, key, ext: this.exts.get(key) ?? "" });
    return out;
  }

  /**
   * Re-reads the file if it changed on disk. Returns true when something was (re)read. Like
   * Dovecot, we keep the file open: while our descriptor pins the inode its number cannot be
   * reused, so "same inode number, bigger size" really means "appended to".
   */
  async refresh(): Promise<boolean> {
    // A re-read inside a locked update may change the records: pin what it appended so far.
    this.tx?.pinAppended();
    let st: import("node:fs").BigIntStats;
    try {
      // Synchronous: a stat is a few µs, a thread-pool round trip more (this runs per scan).
      st = statSync(this.file, { bigint: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      // Never written (disk full since): what we have in memory is all there is.
      if (this.unsaved) return false;
      const had = this.exists;
      await this.close();
      this.reset();
      return had;
    }
    const old = this.sig;
    if (this.fh && old && old.ino === Number(st.ino)) {
      if (old.size === Number(st.size) && old.mtimeNs === st.mtimeNs) return false;
      if (Number(st.size) > this.parsed && this.exists && this.parsed > 0) {
        const from = this.parsed;
        const len = Number(st.size) - from;
        const buf = Buffer.allocUnsafe(len);
        const { bytesRead } = await this.fh.read(buf, 0, len, from);
        this.parseRecords(buf.subarray(0, bytesRead), from);
        this.sig = { ino: old.ino, size: from + bytesRead, mtimeNs: st.mtimeNs };
        this.reconcile();
        return true;
      }
    }
    await this.close();
    let fh: FileHandle;
    try {
      fh = await fs.open(this.file, "r");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      if (this.unsaved) return false;
      this.reset();
      return true;
    }
    const fst = await fh.stat({ bigint: true });
    const data = await fh.readFile();
    this.reset();
    this.fh = fh;
    this.parseAll(data);
    this.sig = { ino: Number(fst.ino), size: data.length, mtimeNs: fst.mtimeNs };
    this.reconcile();
    return true;
  }

  /** Closes the descriptor kept on the file. */
  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    if (fh) await fh.close().catch(() => undefined);
  }

  private reset(): void {
    this.uidValidity = 0;
    this.nextUid = 1;
    this.guid = "";
    this.headerExtra = [];
    this.byKey = new Records();
    this.exts = new Map();
    this.sig = null;
    this.parsed = 0;
    this.cleanTail = true;
    this.exists = false;
    this.deadOnDisk = 0;
    this.maxUid = 0;
  }

  /**
   * After a re-read while changes wait in memory: put our in-memory records back over what the
   * file says, unless the file contradicts them (see the header comment: the disk wins).
   */
  private reconcile(): void {
    if (!this.unsaved) return;
    for (const k of this.pendingRemoved) if (this.forget(k)) this.deadOnDisk++;
    if (this.pending.length === 0) return;
    const mine = new Map<string, number>();
    let min = Number.MAX_SAFE_INTEGER;
    for (const r of this.pending) {
      mine.set(r.key, r.uid);
      min = Math.min(min, r.uid);
    }
    const taken = new Map<number, string>();
    for (const [key, uid] of this.byKey.entries()) if (uid >= min && mine.get(key) !== uid) taken.set(uid, key);
    const keep: { uid: number; key: string }[] = [];
    for (const r of this.pending) {
      // Never hand out again a UID we have shown.
      if (r.uid >= this.nextUid) this.nextUid = r.uid + 1;
      if (r.uid > this.maxUid) this.maxUid = r.uid;
      const d = this.byKey.get(r.key);
      if (d !== undefined && d !== r.uid) {
        debug(`${this.file}: ${r.key} got UID ${d} elsewhere while ours (${r.uid}) was in memory only`);
        continue;
      }
      const other = taken.get(r.uid);
      if (other !== undefined) {
        if (d === r.uid) this.forget(r.key);
        debug(`${this.file}: UID ${r.uid} went to ${other} elsewhere while ours (${r.key}) was in memory only`);
        continue;
      }
      this.byKey.set(r.key, r.uid);
      keep.push(r);
    }
    this.pending = keep;
  }

  /** Drops a key's record; whether it had one. */
  private forget(key: string): boolean {
    if (!this.byKey.delete(key)) return false;
    if (this.exts.size > 0) this.exts.delete(key);
    return true;
  }

  private parseAll(data: Buffer): void {
    const nl = data.indexOf(0x0a);
    if (nl < 0) {
      // Torn header: treat as missing; the next locked update rewrites it.
      this.exists = data.length > 0;
      this.cleanTail = data.length === 0;
      return;
    }
    const header = data.subarray(0, nl).toString("utf8").trim().split(/\s+/);
    const version = header[0];
    this.exists = true;
    if (version === "3") {
      for (const f of header.slice(1)) {
        const v = f.slice(1);
        if (f[0] === "V") this.uidValidity = Number(v) >>> 0;
        else if (f[0] === "N") this.nextUid = Math.max(1, Number(v) >>> 0);
        else if (f[0] === "G") this.guid = v;
        else if (f) this.headerExtra.push(f);
      }
    } else if (version === "1") {
      this.uidValidity = Number(header[1]) >>> 0;
      this.nextUid = Math.max(1, Number(header[2]) >>> 0);
    } else {
      // Unknown version: start over (a rewrite assigns a new UIDVALIDITY).
      this.exists = false;
      this.parsed = 0;
      this.cleanTail = false;
      return;
    }
    this.parseRecords(data.subarray(nl + 1), nl + 1, version === "1", true);
  }

  /** Parses record lines; `whole`: the list was empty before (the whole file is being read). */
  private parseRecords(buf: Buffer, base: number, v1 = false, whole = false): void {
    const lastNl = buf.lastIndexOf(0x0a);
    const complete = lastNl >= 0 ? buf.subarray(0, lastNl + 1) : buf.subarray(0, 0);
    this.parsed = base + complete.length;
    this.cleanTail = complete.length === buf.length;
    const text = complete.toString("utf8");
    let start = 0;
    while (start < text.length) {
      let end = text.indexOf("\n", start);
      if (end < 0) end = text.length;
      const line = text.slice(start, end);
      start = end + 1;
      const sp = line.indexOf(" ");
      if (sp <= 0) continue;
      const uid = Number(line.slice(0, sp));
      if (!Number.isInteger(uid) || uid <= 0) continue;
      let ext = "";
      let name: string;
      if (v1) name = line.slice(sp + 1).trim();
      else {
        const rest = line.slice(sp + 1);
        const c = rest.startsWith(":") ? 0 : rest.indexOf(" :");
        if (c < 0) continue;
        ext = rest.slice(0, c).trim();
        name = rest.slice(c === 0 ? 1 : c + 2);
      }
      if (!name) continue;
      const key = baseKey(name);
      // (A whole file is read without look-ups: a name listed twice is settled, the higher UID
      // winning, when the first look-up needs the map.)
      if (whole) this.byKey.addUnchecked(key, uid);
      else {
        const prev = this.byKey.get(key);
        if (prev !== undefined && prev >= uid) continue;
        this.byKey.set(key, uid);
      }
      if (ext) this.exts.set(key, ext);
      else if (this.exts.size > 0) this.exts.delete(key);
      if (uid >= this.nextUid) this.nextUid = uid + 1;
      if (uid > this.maxUid) this.maxUid = uid;
    }
  }

  /**
   * Runs `fn` under the uidlist dotlock with the list freshly re-read, then writes what `fn`
   * changed through the transaction (append or atomic rewrite).
   */
  async locked<T>(fn: (tx: UidListTx) => Promise<T> | T): Promise<T> {
    let started = false;
    const body = async (write: boolean): Promise<T> => {
      started = true;
      await this.refresh();
      const tx = new UidListTx(this, this.byKey);
      this.tx = tx;
      if (!this.exists || this.uidValidity === 0 || this.unsaved) tx.needRewrite = true;
      if (this.uidValidity === 0) {
        this.uidValidity = Math.max(1, Math.floor(Date.now() / 1000)) >>> 0;
        this.nextUid = Math.max(this.nextUid, 1);
      }
      if (!this.guid) {
        this.guid = randomBytes(16).toString("hex");
        tx.needRewrite = true;
      }
      let result: T;
      try {
        result = await fn(tx);
      } finally {
        // (From here only commit() or keepInMemory() read the records it gave out.)
        this.tx = null;
      }
      if (!write) this.keepInMemory(tx);
      else {
        try {
          await this.commit(tx);
          this.pending = [];
          this.pendingRemoved.clear();
          this.unsaved = false;
        } catch (err) {
          if (!isNoSpace(err)) throw err;
          this.keepInMemory(tx);
        }
      }
      return result;
    };
    try {
      return await withDotlock(this.file, () => body(true));
    } catch (err) {
      if (started || !isNoSpace(err)) throw err;
    }
    // Not even an empty lock file could be created: assign in memory, unlocked (the trade-off in
    // the header comment; this process's own updates of the folder are serialised by its index).
    return body(false);
  }

  /** A write failed for lack of space: keep the transaction's changes in memory only. */
  private keepInMemory(tx: UidListTx): void {
    tx.forEachAppended((key, uid) => this.pending.push({ uid, key }));
    for (const k of tx.removedKeys) this.pendingRemoved.add(k);
    this.unsaved = true;
    debug(`${this.file}: disk full, ${this.pending.length} record(s) kept in memory`);
  }

  /** @internal */
  assign(tx: UidListTx, key: string): number {
    if (this.forget(key)) {
      // Reassign (the message must look new: its old UID went missing somewhere).
      this.deadOnDisk++;
      tx.needRewrite = true;
    }
    return this.assignNew(tx, key);
  }

  /** @internal Like assign, for a key the caller knows has no record. */
  assignNew(tx: UidListTx, key: string): number {
    const uid = this.nextUid++;
    if (uid > this.maxUid) this.maxUid = uid;
    this.byKey.add(key, uid);
    tx.noteAppended(key, uid);
    return uid;
  }

  /** @internal */
  remove(tx: UidListTx, key: string): boolean {
    if (!this.forget(key)) return false;
    this.deadOnDisk++;
    tx.removed++;
    tx.removedKeys.push(key);
    return true;
  }

  private async commit(tx: UidListTx): Promise<void> {
    const many = this.deadOnDisk > 0 && (this.byKey.size < 20_000 || this.deadOnDisk * 4 > this.byKey.size);
    if (tx.needRewrite || !this.cleanTail || !this.exists || many) {
      await this.rewrite();
      return;
    }
    let lines = "";
    tx.forEachAppended((key, uid) => {
      lines += `${uid} :${key}\n`;
    });
    if (lines === "") return;
    const buf = Buffer.from(lines);
    const fh = await fs.open(this.file, "a");
    try {
      const before = (await fh.stat()).size;
      try {
        const { bytesWritten } = await fh.write(buf, 0, buf.length);
        if (bytesWritten < buf.length) throw Object.assign(new Error(`short write to ${this.file}`), { code: "ENOSPC" as const });
        await fh.datasync();
      } catch (err) {
        // Leave no torn tail behind (it would cost the appended records' UIDs on re-read).
        await fh.truncate(before).catch(() => undefined);
        throw err;
      }
    } finally {
      await fh.close();
    }
    const st = await fs.stat(this.file, { bigint: true });
    this.parsed += buf.length;
    if (Number(st.size) === this.parsed && this.sig && this.sig.ino === Number(st.ino))
      this.sig = { ino: Number(st.ino), size: Number(st.size), mtimeNs: st.mtimeNs };
    else {
      // Somebody else wrote meanwhile (should not happen under the lock): read it all again.
      this.sig = null;
      await this.close();
    }
  }

  private async rewrite(): Promise<void> {
    // Records ascending by UID: the order they were added in (the usual case), else sorted.
    const recs = this.byKey;
    const order = recs.inUidOrder();
    const n = order ? order.length : recs.length;
    for (let k = n - 1; k >= 0; k--) {
      const uid = recs.uidAt(order ? order[k]! : k);
      if (uid === 0) continue;
      if (uid >= this.nextUid) this.nextUid = uid + 1;
      break;
    }
    const header = [`3`, `V${this.uidValidity}`, `N${this.nextUid}`, `G${this.guid}`, ...this.headerExtra].join(" ");
    const data = (order === null && this.exts.size === 0 ? recs.plainText(`${header}\n`) : null) ?? this.text(header, order);
    const tmp = `${this.file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
    const fh = await fs.open(tmp, "w+", 0o600);
    try {
      // One write() call (writeFile would make one thread-pool round trip per 512 KiB).
      for (let off = 0; off < data.length; ) {
        const { bytesWritten } = await fh.write(data, off, data.length - off, off);
        if (bytesWritten === 0) throw Object.assign(new Error(`short write to ${tmp}`), { code: "ENOSPC" as const });
        off += bytesWritten;
      }
      await fh.sync();
      await fs.rename(tmp, this.file);
    } catch (err) {
      await fh.close().catch(() => undefined);
      await fs.unlink(tmp).catch(() => undefined);
      throw err;
    }
    await this.close();
    this.fh = fh;
    await syncDir(this.dir);
    const st = await fh.stat({ bigint: true });
    this.sig = { ino: Number(st.ino), size: Number(st.size), mtimeNs: st.mtimeNs };
    this.parsed = data.length;
    this.cleanTail = true;
    this.exists = true;
    this.deadOnDisk = 0;
    this.byKey.compact();
  }

  /** The file's text, any records (extension fields, records not in UID order, any names). */
  private text(header: string, order: number[] | null): Buffer {
    const recs = this.byKey;
    const n = order ? order.length : recs.length;
    const parts: string[] = [`${header}\n`];
    let chunk = "";
    for (let k = 0; k < n; k++) {
      const i = order ? order[k]! : k;
      const uid = recs.uidAt(i);
      if (uid === 0) continue;
      const key = recs.nameAt(i);
      const ext = this.exts.size > 0 ? this.exts.get(key) : undefined;
      chunk += ext ? `${uid} ${ext} :${key}\n` : `${uid} :${key}\n`;
      if (chunk.length > 65536) {
        parts.push(chunk);
        chunk = "";
      }
    }
    parts.push(chunk);
    return Buffer.from(parts.join(""));
  }
}

/**
 * The list's records: names and UIDs in the order they were added (a removed one leaves a hole
 * until the next rewrite), and a name → position map made when a look-up first needs it (a
 * folder's first scan adds 100,000s of records and looks none up). Plain arrays and numbers,
 * not an object per record.
 */
class Records {
  private readonly names: string[] = [];
  private readonly uids: number[] = [];
  private live = 0;
  private holes = 0;
  private map: Map<string, number> | null = null;
  /** Records were added unchecked: a name may be listed twice until positions() settles it. */
  private unsettled = false;

  private positions(): Map<string, number> {
    if (this.map === null) {
      this.unsettled = false;
      const m = new Map<string, number>();
      for (let i = 0; i < this.names.length; i++) {
        const uid = this.uids[i]!;
        if (uid === 0) continue;
        const name = this.names[i]!;
        const prev = m.get(name);
        if (prev !== undefined) {
          // Listed twice: the higher UID wins.
          const loser = this.uids[prev]! >= uid ? i : prev;
          this.hole(loser);
          if (loser === i) continue;
        }
        m.set(name, i);
      }
      this.map = m;
    }
    return this.map;
  }

  private hole(i: number): void {
    this.uids[i] = 0;
    this.live--;
    this.holes++;
  }

  get size(): number {
    if (this.unsettled) this.positions(); // settles names listed twice
    return this.live;
  }

  get(name: string): number | undefined {
    const p = this.positions().get(name);
    return p === undefined ? undefined : this.uids[p];
  }

  /** Adds a record for a name that has none (the caller knows). */
  add(name: string, uid: number): void {
    const p = this.names.length;
    this.names.push(name);
    this.uids.push(uid);
    this.live++;
    this.map?.set(name, p);
  }

  /** Adds while reading a whole file (see positions()). */
  addUnchecked(name: string, uid: number): void {
    this.names.push(name);
    this.uids.push(uid);
    this.live++;
    this.map = null;
    this.unsettled = true;
  }

  set(name: string, uid: number): void {
    const p = this.positions().get(name);
    if (p !== undefined) this.hole(p);
    this.add(name, uid);
  }

  delete(name: string): boolean {
    const m = this.positions();
    const p = m.get(name);
    if (p === undefined) return false;
    this.hole(p);
    m.delete(name);
    return true;
  }

  *entries(): IterableIterator<[string, number]> {
    if (this.unsettled) this.positions();
    for (let i = 0; i < this.names.length; i++) if (this.uids[i] !== 0) yield [this.names[i]!, this.uids[i]!];
  }

  *keys(): IterableIterator<string> {
    for (const [name] of this.entries()) yield name;
  }

  /** Positions of the live records in UID order (usually the order they were added in). */
  inUidOrder(): number[] | null {
    if (this.unsettled) this.positions();
    let prev = 0;
    for (let i = 0; i < this.names.length; i++) {
      const uid = this.uids[i]!;
      if (uid === 0) continue;
      if (uid < prev) {
        const order: number[] = [];
        for (let j = 0; j < this.names.length; j++) if (this.uids[j] !== 0) order.push(j);
        return order.sort((a, b) => this.uids[a]! - this.uids[b]!);
      }
      prev = uid;
    }
    return null;
  }

  nameAt(i: number): string {
    return this.names[i]!;
  }

  /**
   * The file's bytes when every name is ASCII: `head`, then `<uid> :<name>\n` per live record
   * in the order added, UIDs ascending (else null). No string per record: the names of each run
   * of UIDs with the same number of digits are joined with a separator as wide as their
   * `<uid> :` prefixes, and the UIDs are written over the separators' spaces.
   */
  plainText(head: string): Buffer | null {
    let names = this.names;
    let uids = this.uids;
    if (this.holes > 0) {
      names = names.filter((_, i) => uids[i] !== 0);
      uids = uids.filter((u) => u !== 0);
    }
    const n = names.length;
    const runs: string[] = [head];
    let total = head.length;
    for (let i = 0; i < n; ) {
      const digits = decimalDigits(uids[i]!);
      const limit = 10 ** digits;
      let j = i + 1;
      while (j < n && uids[j]! < limit) j++;
      const pad = `${" ".repeat(digits)} :`;
      // (Written piece by piece: a concatenation would be copied once more to flatten it.)
      const joined = (i === 0 && j === n ? names : names.slice(i, j)).join(`\n${pad}`);
      runs.push(pad, joined, "\n");
      total += pad.length + joined.length + 1;
      i = j;
    }
    const buf = Buffer.allocUnsafe(total);
    let at = 0;
    for (const r of runs) {
      const written = buf.write(r, at, "utf8");
      if (written !== r.length) return null; // (a name or the header is not ASCII)
      at += written;
    }
    if (!isAscii(buf)) return null;
    at = head.length;
    for (let i = 0; i < n; i++) at = writeDecimal(buf, at, uids[i]!) + 2 + names[i]!.length + 1;
    return buf;
  }

  /** Calls `fn` for the live records at positions from `from` on (in the order added). */
  forEachFrom(from: number, fn: (name: string, uid: number) => void): void {
    for (let i = from; i < this.names.length; i++) {
      const uid = this.uids[i]!;
      if (uid !== 0) fn(this.names[i]!, uid);
    }
  }

  uidAt(i: number): number {
    return this.uids[i]!;
  }

  get length(): number {
    return this.names.length;
  }

  /** Drops the holes (after a rewrite, when there are many). */
  compact(): void {
    if (this.holes * 4 < this.names.length) return;
    let o = 0;
    for (let i = 0; i < this.names.length; i++) {
      if (this.uids[i] === 0) continue;
      this.names[o] = this.names[i]!;
      this.uids[o] = this.uids[i]!;
      o++;
    }
    this.names.length = o;
    this.uids.length = o;
    this.holes = 0;
    this.map = null;
  }
}

/**
 * The changes one locked update makes. The records it gives out are the list's records added
 * since it began (no copy of them: a big folder's first scan adds 100,000s), until something
 * else may add records too (a re-read of the file): then those so far are copied out
 * (`pinAppended`) and later ones noted one by one.
 */
export class UidListTx {
  /** Records given out, once pinned (else: records[from…] of the list at the start). */
  private keys: string[] | null = null;
  private uids: number[] | null = null;
  private readonly from: number;
  readonly removedKeys: string[] = [];
  removed = 0;
  needRewrite = false;

  /** @internal */
  constructor(
    private readonly list: UidList,
    private readonly records: Records,
  ) {
    this.from = records.length;
  }

  /** @internal A record given out (noted only once pinned). */
  noteAppended(key: string, uid: number): void {
    if (this.keys !== null) {
      this.keys.push(key);
      this.uids!.push(uid);
    }
  }

  /** @internal Copies out the records given out so far; later ones are noted one by one. */
  pinAppended(): void {
    if (this.keys !== null) return;
    const keys: string[] = [];
    const uids: number[] = [];
    this.records.forEachFrom(this.from, (key, uid) => {
      keys.push(key);
      uids.push(uid);
    });
    this.keys = keys;
    this.uids = uids;
  }

  /** @internal The records given out in this transaction, in the order given. */
  forEachAppended(fn: (key: string, uid: number) => void): void {
    if (this.keys === null) this.records.forEachFrom(this.from, fn);
    else for (let i = 0; i < this.keys.length; i++) fn(this.keys[i]!, this.uids![i]!);
  }

  get uidValidity(): number {
    return this.list.uidValidity;
  }

  uidOf(key: string): number | undefined {
    return this.list.uidOf(key);
  }

  recordsAbove(uid: number): UidRecord[] {
    return this.list.recordsAbove(uid);
  }

  /** Gives `key` the next UID (a new one even if it had one). */
  assign(key: string): number {
    return this.list.assign(this, key);
  }

  /** Gives `key`, which has no record (the caller just looked), the next UID. */
  assignNew(key: string): number {
    return this.list.assignNew(this, key);
  }

  /** Number of records in the list. */
  get size(): number {
    return this.list.size;
  }

  remove(key: string): boolean {
    return this.list.remove(this, key);
  }
}
