/**
 * One session's handle on a folder (`Mailbox`). Every Mailbox of a folder in this process shares
 * one FolderIndex (index-folder.ts); each keeps its own view, the list `messages()` returns,
 * which is what IMAP sequence numbers index. The view changes only:
 *
 * - in `sync()`: messages added or expunged by anybody (this session included: `append()`,
 *   `copyTo()` into the same folder and `expunge()` show up as `added`/`removed` there, so the
 *   IMAP layer reports EXISTS/EXPUNGE from one place), and flag changes made by anybody else
 *   (`flagsChanged`);
 * - in `setFlags()`: this session's own flag changes are applied to the view at once, returned,
 *   and not reported again by `sync()` (so STORE .SILENT stays silent).
 *
 * `read()` and `cached()` of a UID that another session expunged (still in this view) throw
 * `ExpungedError` (code `EXPUNGED`).
 */
import { ExpungedError, type FolderIndex } from "./index-folder";
import { sizesFromName, wireSize } from "./maildir";
import type { FolderChanges, Mailbox, MessageInfo } from "./types";

export { ExpungedError };

/** A message's file, for readers that read it themselves (`MaildirMailbox.messageFile`). */
export interface MessageFile {
  path: string;
  /** Bytes on disk from the name's S=, or null when the name lacks it. */
  diskSize: number | null;
  /** The name vouches for CRLF line ends only (S= equals W=). */
  crlf: boolean;
}

function findPos(view: readonly MessageInfo[], uid: number): number {
  let lo = 0;
  let hi = view.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const u = view[mid]!.uid;
    if (u === uid) return mid;
    if (u < uid) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

export class MaildirMailbox implements Mailbox {
  private view: MessageInfo[];
  private pos: number;
  private _uidNext: number;
  private _highestModseq: bigint;
  private closed = false;
  private readonly unwatchers = new Set<() => void>();

  constructor(
    readonly user: string,
    readonly name: string,
    /** @internal */ readonly index: FolderIndex,
  ) {
    this.view = index.infos();
    this.pos = index.logEnd;
    index.positions.set(this, this.pos);
    this._uidNext = Math.max(index.nextUid, (this.view[this.view.length - 1]?.uid ?? 0) + 1);
    this._highestModseq = index.highestModseq;
  }

  get uidValidity(): number {
    return this.index.uidValidity;
  }

  get uidNext(): number {
    return this._uidNext;
  }

  get highestModseq(): bigint {
    return this._highestModseq;
  }

  /** Folder directory on disk. */
  get path(): string {
    return this.index.dir;
  }

  messages(): readonly MessageInfo[] {
    return this.view;
  }

  private check(): void {
    if (this.closed) throw new Error(`mailbox ${this.name} is closed`);
  }

  async sync(): Promise<FolderChanges> {
    this.check();
    await this.index.refresh();
    const events = this.index.eventsSince(this.pos);
    this.pos = this.index.logEnd;
    this.index.positions.set(this, this.pos);
    this.index.trimLog();
    const changes: FolderChanges = { added: [], removed: [], flagsChanged: [] };
    if (events.length > 0) {
      const added = new Set<number>();
      const removed = new Set<number>();
      const flagged = new Set<number>();
      const own = new Set<number>();
      for (const ev of events) {
        if (ev.kind === "add") added.add(ev.uid);
        else if (ev.kind === "remove") {
          if (added.has(ev.uid)) added.delete(ev.uid);
          else removed.add(ev.uid);
        } else if (ev.origin === this) own.add(ev.uid);
        else flagged.add(ev.uid);
      }
      let view = this.view;
      if (removed.size > 0) {
        const kept: MessageInfo[] = [];
        for (const m of view) {
          if (removed.has(m.uid)) changes.removed.push(m.uid);
          else kept.push(m);
        }
        view = kept;
      }
      if (added.size > 0) {
        const last = view[view.length - 1]?.uid ?? 0;
        const fresh = [...added]
          .filter((u) => u > last)
          .sort((a, b) => a - b)
          .map((u) => this.index.infoOf(u))
          .filter((m): m is MessageInfo => m !== undefined);
        if (fresh.length > 0) {
          view = view === this.view ? view.slice() : view;
          for (const m of fresh) {
            view.push(m);
            changes.added.push(m.uid);
          }
        }
      }
      for (const uid of [...flagged, ...own]) {
        if (added.has(uid)) continue;
        const p = findPos(view, uid);
        const info = this.index.infoOf(uid);
        if (p < 0 || !info || view[p] === info) continue;
        if (view === this.view) view = view.slice();
        view[p] = info;
        if (flagged.has(uid)) changes.flagsChanged.push(uid);
      }
      changes.flagsChanged.sort((a, b) => a - b);
      this.view = view;
    }
    this._uidNext = Math.max(this.index.nextUid, (this.view[this.view.length - 1]?.uid ?? 0) + 1, this._uidNext);
    if (this.index.highestModseq > this._highestModseq) this._highestModseq = this.index.highestModseq;
    return changes;
  }

  async read(uid: number): Promise<Buffer> {
    this.check();
    return this.index.readMessage(uid);
  }

  /**
   * Where a message's file is now, for a reader that reads it itself (POP3 RETR streams it), or
   * null when the message is no longer in the folder. The file moves when flags change and goes
   * when it is expunged: on ENOENT use `read()`, which looks again. `diskSize` is S= from the
   * name (null when the name lacks it: stat the file); `crlf` is true when the name vouches for
   * CRLF line ends only (S= equals W=, as Dovecot and mailstack name files), so that no
   * conversion is needed. Mail files never change once written, so what is read is the message.
   */
  messageFile(uid: number): MessageFile | null {
    this.check();
    const file = this.index.filePath(uid);
    const info = this.index.infoOf(uid);
    if (file === null || info === undefined) return null;
    const { size, wireSize } = sizesFromName(info.key);
    return { path: file, diskSize: size ?? null, crlf: size !== undefined && size === wireSize };
  }

  async setFlags(uids: number[], mode: "set" | "add" | "remove", flags: string[]): Promise<Map<number, string[]>> {
    this.check();
    const infos = await this.index.setFlags(uids, mode, flags, this);
    const out = new Map<number, string[]>();
    for (const [uid, info] of infos) {
      out.set(uid, [...info.flags]);
      const p = findPos(this.view, uid);
      if (p >= 0) this.view[p] = info;
      if (info.modseq > this._highestModseq) this._highestModseq = info.modseq;
    }
    return out;
  }

  /** The MessageInfo this session's view has for a UID (with modseq after `setFlags`). */
  info(uid: number): MessageInfo | undefined {
    const p = findPos(this.view, uid);
    return p >= 0 ? this.view[p] : undefined;
  }

  async expunge(uids: number[]): Promise<number[]> {
    this.check();
    return this.index.expunge(uids);
  }

  async append(data: Buffer, flags: string[] = [], internalDate?: Date): Promise<number> {
    this.check();
    const size = wireSize(data);
    const t = await this.index.writeToTmp(data, size, internalDate);
    const [uid] = await this.index.commitTmp([{ key: t.key, flags, size, mtime: t.mtime }]);
    return uid!;
  }

  async copyTo(uids: number[], dest: Mailbox): Promise<Map<number, number>> {
    this.check();
    if (!(dest instanceof MaildirMailbox)) throw new Error("copyTo: destination is not a Maildir mailbox");
    const items: { src: number; key: string; size: number; mtime: number; flags: readonly string[] }[] = [];
    try {
      for (const uid of uids) {
        const t = await this.index.linkToTmp(uid, dest.index);
        if (t) items.push({ src: uid, ...t });
      }
    } catch (err) {
      const { promises: fs } = await import("node:fs");
      const pathMod = await import("node:path");
      await Promise.all(items.map((i) => fs.unlink(pathMod.join(dest.index.dir, "tmp", i.key)).catch(() => undefined)));
      throw err;
    }
    const out = new Map<number, number>();
    if (items.length === 0) return out;
    const newUids = await dest.index.commitTmp(
      items.map((i) => ({ key: i.key, flags: i.flags.filter((f) => f !== "\\Recent"), size: i.size, mtime: i.mtime })),
    );
    for (let n = 0; n < items.length; n++) out.set(items[n]!.src, newUids[n]!);
    return out;
  }

  watch(listener: () => void): () => void {
    this.check();
    const off = this.index.watch(listener);
    this.unwatchers.add(off);
    return () => {
      if (this.unwatchers.delete(off)) off();
    };
  }

  async readHeader(uid: number): Promise<Buffer> {
    this.check();
    return this.index.readHeader(uid);
  }

  peekCached(uid: number, field: string): unknown {
    return this.closed ? undefined : this.index.peekCached(uid, field);
  }

  async cached<T>(uid: number, field: string, compute: () => Promise<T>): Promise<T> {
    this.check();
    if (this.index.infoOf(uid) === undefined) throw new ExpungedError(uid);
    return this.index.cached(uid, field, compute);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const off of this.unwatchers) off();
    this.unwatchers.clear();
    this.index.positions.delete(this);
    this.index.unref();
  }
}
