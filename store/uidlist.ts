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
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
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
  /** key → record (the only authority; `records` may hold dead entries until `compact`). */
  private byKey = new Map<string, UidRecord>();
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
  private pending: UidRecord[] = [];
  private pendingRemoved = new Set<string>();
  /** Memory is ahead of the file (a write failed for lack of space): rewrite at the next update. */
  private unsaved = false;

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
    return this.byKey.get(key)?.uid;
  }

  record(key: string): UidRecord | undefined {
    return this.byKey.get(key);
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
    for (const r of this.byKey.values()) if (r.uid > uid) out.push(r);
    return out;
  }

  /**
   * Re-reads the file if it changed on disk. Returns true when something was (re)read. Like
   * Dovecot, we keep the file open: while our descriptor pins the inode its number cannot be
   * reused, so "same inode number, bigger size" really means "appended to".
   */
  async refresh(): Promise<boolean> {
    let st: import("node:fs").BigIntStats;
    try {
      st = await fs.stat(this.file, { bigint: true });
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
    this.byKey = new Map();
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
    for (const k of this.pendingRemoved) if (this.byKey.delete(k)) this.deadOnDisk++;
    if (this.pending.length === 0) return;
    const mine = new Set(this.pending);
    let min = Number.MAX_SAFE_INTEGER;
    for (const r of this.pending) min = Math.min(min, r.uid);
    const taken = new Map<number, string>();
    for (const rec of this.recordsAbove(min - 1)) if (!mine.has(rec)) taken.set(rec.uid, rec.key);
    const keep: UidRecord[] = [];
    for (const r of this.pending) {
      // Never hand out again a UID we have shown.
      if (r.uid >= this.nextUid) this.nextUid = r.uid + 1;
      if (r.uid > this.maxUid) this.maxUid = r.uid;
      const d = this.byKey.get(r.key);
      if (d && d !== r) {
        if (d.uid !== r.uid) debug(`${this.file}: ${r.key} got UID ${d.uid} elsewhere while ours (${r.uid}) was in memory only`);
        continue;
      }
      const other = taken.get(r.uid);
      if (other !== undefined) {
        if (d === r) this.byKey.delete(r.key);
        debug(`${this.file}: UID ${r.uid} went to ${other} elsewhere while ours (${r.key}) was in memory only`);
        continue;
      }
      this.byKey.set(r.key, r);
      keep.push(r);
    }
    this.pending = keep;
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
    this.parseRecords(data.subarray(nl + 1), nl + 1, version === "1");
  }

  private parseRecords(buf: Buffer, base: number, v1 = false): void {
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
      const prev = this.byKey.get(key);
      if (prev && prev.uid >= uid) continue;
      this.byKey.set(key, { uid, key, ext });
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
      const tx = new UidListTx(this);
      if (!this.exists || this.uidValidity === 0 || this.unsaved) tx.needRewrite = true;
      if (this.uidValidity === 0) {
        this.uidValidity = Math.max(1, Math.floor(Date.now() / 1000)) >>> 0;
        this.nextUid = Math.max(this.nextUid, 1);
      }
      if (!this.guid) {
        this.guid = randomBytes(16).toString("hex");
        tx.needRewrite = true;
      }
      const result = await fn(tx);
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
    this.pending.push(...tx.appended);
    for (const k of tx.removedKeys) this.pendingRemoved.add(k);
    this.unsaved = true;
    debug(`${this.file}: disk full, ${this.pending.length} record(s) kept in memory`);
  }

  /** @internal */
  assign(tx: UidListTx, key: string): number {
    const existing = this.byKey.get(key);
    if (existing) {
      // Reassign (the message must look new: its old UID went missing somewhere).
      this.byKey.delete(key);
      this.deadOnDisk++;
      tx.needRewrite = true;
    }
    const uid = this.nextUid++;
    if (uid > this.maxUid) this.maxUid = uid;
    const rec: UidRecord = { uid, key, ext: "" };
    this.byKey.set(key, rec);
    tx.appended.push(rec);
    return uid;
  }

  /** @internal */
  remove(tx: UidListTx, key: string): boolean {
    if (!this.byKey.delete(key)) return false;
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
    if (tx.appended.length === 0) return;
    const lines = tx.appended.map((r) => `${r.uid} ${r.ext ? `${r.ext} ` : ""}:${r.key}\n`).join("");
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
    const recs = [...this.byKey.values()].sort((a, b) => a.uid - b.uid);
    const last = recs[recs.length - 1];
    if (last && last.uid >= this.nextUid) this.nextUid = last.uid + 1;
    const header = [`3`, `V${this.uidValidity}`, `N${this.nextUid}`, `G${this.guid}`, ...this.headerExtra].join(" ");
    const parts: string[] = [`${header}\n`];
    for (const r of recs) parts.push(`${r.uid} ${r.ext ? `${r.ext} ` : ""}:${r.key}\n`);
    const data = Buffer.from(parts.join(""));
    const tmp = `${this.file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
    const fh = await fs.open(tmp, "w+", 0o600);
    try {
      await fh.writeFile(data);
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
  }
}

/** The changes one locked update makes. */
export class UidListTx {
  readonly appended: UidRecord[] = [];
  readonly removedKeys: string[] = [];
  removed = 0;
  needRewrite = false;

  constructor(private readonly list: UidList) {}

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

  remove(key: string): boolean {
    return this.list.remove(this, key);
  }
}
