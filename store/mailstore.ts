/**
 * The read/write side of the Maildir store for POP3 and IMAP (`MailStore`), laid out as Dovecot
 * lays a Maildir out (maildir.ts):
 *
 * - INBOX is the user's Maildir root; other folders are Maildir++ directories `.<name>` with `.`
 *   as the hierarchy separator on disk (IMAP separator `/`): `Archive/2024` ↔ `.Archive.2024`.
 * - Folder names arrive here decoded (UTF-8) and are stored on disk in IMAP modified UTF-7
 *   (RFC 3501 §5.1.3), as Dovecot does by default: `Entwürfe` ↔ `.Entw&APw-rfe`. A name that is
 *   not valid modified UTF-7 on disk (e.g. made by hand in UTF-8) is listed as it is.
 * - `subscriptions` in the root: one folder per line, storage names (modified UTF-7). A file in
 *   Dovecot 2.x's layout (`V\t2` header, levels separated by a tab, tab-escaped) is read and
 *   written in that layout; otherwise the v1 layout (levels separated by `.`) that
 *   ensureUserMaildir starts with, which Dovecot reads as well.
 * - Per folder: `dovecot-uidlist` (uidlist.ts), `dovecot-keywords` (index-keywords.ts), and our
 *   caches `mailstack-index` / `mailstack-cache` (index-folder.ts).
 * - The POP3 maildrop lock is `mailstack-pop3.lock` in the root (lock.ts). It is not Dovecot's
 *   `dovecot-uidlist.lock`, which Dovecot's pop3_lock_session holds for a whole session and would
 *   stall IMAP and delivery meanwhile.
 */
import { existsSync, promises as fs, statSync } from "node:fs";
import * as path from "node:path";
import { decodeMutf7, encodeMutf7 } from "../lib/mutf7";
import { acquireIndex, flushAllIndexes, forgetIndexes, type IndexOptions } from "./index-folder";
import { tryHoldLock, withDotlock } from "./lock";
import { MaildirMailbox } from "./mailbox";
import { ensureMaildir, ensureUserMaildir, folderDir, folderNameFromDir, maildirRoot, SPECIAL_FOLDERS, sweepTmp } from "./maildir";
import { type FolderInfo, type Mailbox, type MailStore, NoSuchFolderError } from "./types";

export { ExpungedError } from "./mailbox";

export const POP3_LOCK_FILE = "mailstack-pop3.lock";
const SUBSCRIPTIONS = "subscriptions";

/** Dovecot's str_tabescape: \001 → \0011, \t → \001t, \r → \001r, \n → \001n. */
function tabEscape(s: string): string {
  return s.replace(/[\x01\t\r\n]/g, (c) => `\x01${c === "\x01" ? "1" : c === "\t" ? "t" : c === "\r" ? "r" : "n"}`);
}

function tabUnescape(s: string): string {
  return s.replace(/\x01([1trn])/g, (_, c: string) => (c === "1" ? "\x01" : c === "t" ? "\t" : c === "r" ? "\r" : "\n"));
}

function normalise(name: string): string {
  let n = name;
  while (n.endsWith("/")) n = n.slice(0, -1);
  if (n.toUpperCase() === "INBOX") return "INBOX";
  if (n.toUpperCase().startsWith("INBOX/")) n = `INBOX${n.slice(5)}`;
  return n;
}

export interface MaildirStoreOptions extends IndexOptions {}

export class MaildirStore implements MailStore {
  constructor(
    readonly dataDir: string,
    private readonly opts: MaildirStoreOptions = {},
  ) {}

  /** The user's Maildir root, created on first use with the special-use folders. */
  private async root(user: string): Promise<string> {
    return ensureUserMaildir(this.dataDir, user);
  }

  /**
   * The user's Maildir root with at least the INBOX in it: what POP3 (lock, INBOX) needs. The
   * special-use folders are left to the first listing or use of another folder (and to the SMTP
   * service, which creates every user's Maildir at start): creating them costs a first POP3
   * login a dozen directory creations that it never uses.
   */
  private async inboxRoot(user: string): Promise<string> {
    const root = maildirRoot(this.dataDir, user);
    if (!(existsSync(path.join(root, "cur")) && existsSync(path.join(root, "new")) && existsSync(path.join(root, "tmp"))))
      await ensureMaildir(root);
    return root;
  }

  /** Directory of a folder, or null when the name is not allowed. */
  private dirOf(root: string, name: string): string | null {
    const n = normalise(name);
    if (n === "INBOX") return root;
    return folderDir(root, encodeMutf7(n));
  }

  /** Whether a folder exists (its cur/). A synchronous stat: one syscall, no thread-pool trip. */
  private async exists(dir: string): Promise<boolean> {
    try {
      return statSync(path.join(dir, "cur"), { throwIfNoEntry: false })?.isDirectory() ?? false;
    } catch {
      return false;
    }
  }

  async open(user: string, folder = "INBOX"): Promise<Mailbox> {
    const name = normalise(folder);
    const root = name === "INBOX" ? await this.inboxRoot(user) : await this.root(user);
    const dir = this.dirOf(root, name);
    if (dir === null || !(await this.exists(dir))) throw new NoSuchFolderError(folder);
    let index: Awaited<ReturnType<typeof acquireIndex>>;
    try {
      index = await acquireIndex(dir, this.opts);
    } catch (err) {
      if (err instanceof NoSuchFolderError) throw new NoSuchFolderError(folder);
      throw err;
    }
    // What a crashed writer left in tmp/ goes, as when Dovecot opens a folder; off the reply's path.
    sweepTmp(dir).catch(() => undefined);
    return new MaildirMailbox(user, name, index);
  }

  async listFolders(user: string): Promise<FolderInfo[]> {
    const root = await this.root(user);
    const subs = new Set((await this.readSubscriptions(root)).names);
    const out: FolderInfo[] = [{ name: "INBOX", subscribed: subs.has("INBOX") }];
    const entries = await fs.readdir(root, { withFileTypes: true });
    const names: string[] = [];
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const raw = folderNameFromDir(e.name);
      if (raw === null || raw.split("/").some((p) => p === "")) continue;
      const name = decodeMutf7(raw) ?? raw;
      if (name.toUpperCase() === "INBOX") continue;
      names.push(name);
    }
    names.sort();
    for (const name of names) {
      const info: FolderInfo = { name, subscribed: subs.has(name) };
      const special = SPECIAL_FOLDERS.find((f) => f.name === name);
      if (special) info.specialUse = special.specialUse;
      out.push(info);
    }
    return out;
  }

  async createFolder(user: string, name: string): Promise<void> {
    const root = await this.root(user);
    const n = normalise(name);
    if (n === "INBOX") throw new Error("INBOX already exists");
    const dir = this.dirOf(root, n);
    if (dir === null)
      throw new Error(`invalid folder name ${JSON.stringify(name)}: empty level, "." or "~" part, "\\", control character, or too long`);
    if (await this.exists(dir)) throw new Error(`folder ${JSON.stringify(n)} already exists`);
    await ensureMaildir(dir, true);
  }

  async deleteFolder(user: string, name: string): Promise<void> {
    const root = await this.root(user);
    const n = normalise(name);
    if (n === "INBOX") throw new Error("INBOX cannot be deleted");
    const dir = this.dirOf(root, n);
    if (dir === null || !(await this.exists(dir))) throw new NoSuchFolderError(name);
    // Rename out of sight first (atomic), then remove: a crash leaves no half-deleted folder.
    const trash = path.join(root, `..mailstack-deleted.${process.pid}.${Date.now()}`);
    await fs.rename(dir, trash);
    forgetIndexes(dir, false);
    await fs.rm(trash, { recursive: true, force: true });
    await this.setSubscribed(root, [n], false);
  }

  async renameFolder(user: string, from: string, to: string): Promise<void> {
    const root = await this.root(user);
    const src = normalise(from);
    const dst = normalise(to);
    const srcDir = this.dirOf(root, src);
    const dstDir = this.dirOf(root, dst);
    if (srcDir === null || !(await this.exists(srcDir))) throw new NoSuchFolderError(from);
    if (dst === "INBOX") throw new Error("cannot rename to INBOX: it exists");
    if (dstDir === null) throw new Error(`invalid folder name ${JSON.stringify(to)}`);
    if (await this.exists(dstDir)) throw new Error(`folder ${JSON.stringify(dst)} already exists`);
    if (src === "INBOX") {
      // RFC 3501 §6.3.5: move every message to the new folder; INBOX stays, empty.
      await ensureMaildir(dstDir, true);
      const inbox = await this.open(user, "INBOX");
      const dest = await this.open(user, dst);
      try {
        const uids = inbox.messages().map((m) => m.uid);
        if (uids.length > 0) {
          await inbox.copyTo(uids, dest);
          await inbox.expunge(uids);
        }
      } finally {
        await inbox.close();
        await dest.close();
      }
      return;
    }
    if (`${dst}/`.startsWith(`${src}/`)) throw new Error(`cannot rename ${JSON.stringify(src)} into itself`);
    // The folder and its children (`.a` and `.a.*`).
    const srcBase = path.basename(srcDir);
    const dstBase = path.basename(dstDir);
    const moves: [string, string][] = [[srcDir, dstDir]];
    for (const e of await fs.readdir(root)) {
      if (e.startsWith(`${srcBase}.`)) moves.push([path.join(root, e), path.join(root, dstBase + e.slice(srcBase.length))]);
    }
    for (const [, d] of moves) if (await this.exists(d)) throw new Error(`folder ${JSON.stringify(path.basename(d))} already exists`);
    for (const [s, d] of moves) {
      await fs.rename(s, d);
      forgetIndexes(s, false);
    }
    const subs = await this.readSubscriptions(root);
    const renamed = subs.names.filter((s) => s === src || s.startsWith(`${src}/`));
    if (renamed.length > 0) {
      await this.setSubscribed(root, renamed, false);
      await this.setSubscribed(
        root,
        renamed.map((s) => dst + s.slice(src.length)),
        true,
      );
    }
  }

  async subscribe(user: string, name: string, on: boolean): Promise<void> {
    const root = await this.root(user);
    const n = normalise(name);
    if (n !== "INBOX" && this.dirOf(root, n) === null) throw new Error(`invalid folder name ${JSON.stringify(name)}`);
    await this.setSubscribed(root, [n], on);
  }

  async lockMaildrop(user: string): Promise<(() => Promise<void>) | null> {
    const root = await this.inboxRoot(user);
    return tryHoldLock(path.join(root, POP3_LOCK_FILE));
  }

  /** Saves every open folder index now (call before a clean shutdown). */
  async flush(): Promise<void> {
    await flushAllIndexes();
  }

  // ---- subscriptions -----------------------------------------------------------------------

  private async readSubscriptions(root: string): Promise<{ v2: boolean; names: string[] }> {
    let text: string;
    try {
      text = await fs.readFile(path.join(root, SUBSCRIPTIONS), "utf8");
    } catch {
      return { v2: false, names: [] };
    }
    const lines = text.split("\n");
    const v2 = lines[0]?.startsWith("V\t") ?? false;
    const names: string[] = [];
    for (const line of v2 ? lines.slice(1) : lines) {
      if (!line) continue;
      // Storage names: modified UTF-7; v2 separates levels with a tab, v1 with Maildir++'s ".".
      const storage = v2 ? line.split("\t").map(tabUnescape).join("/") : line.includes("/") ? line : line.split(".").join("/");
      names.push(normalise(decodeMutf7(storage) ?? storage));
    }
    return { v2, names: [...new Set(names)] };
  }

  private async setSubscribed(root: string, names: string[], on: boolean): Promise<void> {
    const file = path.join(root, SUBSCRIPTIONS);
    await withDotlock(file, async () => {
      const cur = await this.readSubscriptions(root);
      const set = new Set(cur.names);
      for (const n of names) {
        if (on) set.add(n);
        else set.delete(n);
      }
      const list = [...set];
      const body = cur.v2
        ? `V\t2\n\n${list.map((n) => (n === "INBOX" ? n : encodeMutf7(n).split("/").map(tabEscape).join("\t"))).join("\n")}\n`
        : `${list.map((n) => (n === "INBOX" ? n : encodeMutf7(n).split("/").join("."))).join("\n")}\n`;
      const tmp = `${file}.${process.pid}.tmp`;
      await fs.writeFile(tmp, list.length === 0 && !cur.v2 ? "" : body);
      await fs.rename(tmp, file);
    });
  }
}

export { maildirRoot };
