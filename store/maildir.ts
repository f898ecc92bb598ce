/**
 * Maildir on disk, laid out as Dovecot lays it out, so an existing Dovecot Maildir works as it is:
 *
 *   <dataDir>/mail/<user>/            the INBOX (cur/ new/ tmp/)
 *   <dataDir>/mail/<user>/.Sent/      Maildir++ subfolders, `.` as hierarchy separator
 *   file names  <unique>,S=<bytes>,W=<crlf bytes>:2,<flags>
 *
 * Durable writes follow the Maildir protocol: write into tmp/, fsync the file, link/rename into
 * new/ (or cur/), fsync the directory. Directory fsyncs of concurrent deliveries are grouped
 * (one fsync covers every rename that happened before it started).
 */
import { randomBytes } from "node:crypto";
import { existsSync, promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { TemporaryFailure } from "./types";

export const SPECIAL_FOLDERS: ReadonlyArray<{ name: string; specialUse: string }> = [
  { name: "Drafts", specialUse: "\\Drafts" },
  { name: "Sent", specialUse: "\\Sent" },
  { name: "Trash", specialUse: "\\Trash" },
  { name: "Junk", specialUse: "\\Junk" },
];

const HOST = os.hostname().replace(/\//g, "\\057").replace(/:/g, "\\072");
let counter = 0;
let lastMicros = 0;

/** Root of a user's Maildir (which is also the INBOX). */
export function maildirRoot(dataDir: string, user: string): string {
  if (!/^[a-z0-9!#$%&'*=?^_`{|}~.-]+$/.test(user) || user.startsWith(".") || user.includes(".."))
    throw new Error(`refusing unsafe user name ${JSON.stringify(user)}`);
  return path.join(dataDir, "mail", user);
}

/**
 * The directory of an IMAP folder name (separator `/`) under a Maildir root, or null when the
 * name could escape the Maildir or is not representable (`..`, empty parts, `.` inside a part
 * or control characters).
 */
export function folderDir(root: string, name: string): string | null {
  if (name.toUpperCase() === "INBOX") return root;
  const parts = name.split("/");
  for (const p of parts) {
    if (p === "" || p === "." || p === ".." || p.includes(".") || p.includes("\\") || /[\x00-\x1f\x7f]/.test(p)) return null;
    if (p.startsWith("~")) return null;
  }
  if (Buffer.byteLength(name) > 200) return null;
  return path.join(root, `.${parts.join(".")}`);
}

/** IMAP name of a Maildir++ subfolder directory name (`.Archive.2024` → `Archive/2024`). */
export function folderNameFromDir(dirName: string): string | null {
  if (!dirName.startsWith(".") || dirName === "." || dirName === "..") return null;
  return dirName.slice(1).split(".").join("/");
}

/** Creates cur/ new/ tmp/ (idempotent). Subfolders also get the `maildirfolder` marker. */
export async function ensureMaildir(dir: string, isSubfolder = false): Promise<void> {
  await Promise.all(["cur", "new", "tmp"].map((d) => fs.mkdir(path.join(dir, d), { recursive: true, mode: 0o700 })));
  if (isSubfolder) await fs.writeFile(path.join(dir, "maildirfolder"), "", { flag: "a" });
}

/**
 * Creates a user's Maildir with the special-use folders (Drafts, Sent, Trash, Junk), subscribed.
 * Directory creation can take a millisecond each: the folders are made in parallel.
 */
export async function ensureUserMaildir(dataDir: string, user: string): Promise<string> {
  const root = maildirRoot(dataDir, user);
  // A synchronous check (one access() syscall): this runs on every open, and the answer is
  // nearly always yes.
  if (existsSync(path.join(root, "subscriptions"))) return root;
  await ensureMaildir(root);
  await Promise.all(SPECIAL_FOLDERS.map((f) => ensureMaildir(path.join(root, `.${f.name}`), true)));
  // Several processes may create the same Maildir at once: each writes its own temporary file
  // and the first to publish wins (link fails with EEXIST for the others).
  const subs = path.join(root, "subscriptions");
  const tmp = `${subs}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  await fs.writeFile(tmp, `${SPECIAL_FOLDERS.map((f) => f.name).join("\n")}\n`);
  try {
    await fs.link(tmp, subs);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  } finally {
    await fs.unlink(tmp).catch(() => undefined);
  }
  return root;
}

/**
 * A unique Maildir base name, as the Maildir spec and Dovecot build it:
 * `<seconds>.M<usec>P<pid>Q<n>R<random>.<host>` with `,S=<size>,W=<crlf size>` appended.
 */
export function uniqueName(size?: number, wireSize?: number, atMs?: number): string {
  // Microsecond clock, strictly increasing within the process, so names sort in delivery order.
  let micros = Math.floor((atMs ?? performance.timeOrigin + performance.now()) * 1000);
  if (atMs === undefined) {
    if (micros <= lastMicros) micros = lastMicros + 1;
    lastMicros = micros;
  }
  const sec = Math.floor(micros / 1e6);
  const usec = micros % 1e6;
  counter = (counter + 1) % 1e9;
  let name = `${sec}.M${usec}P${process.pid}Q${counter}R${randomBytes(4).toString("hex")}.${HOST}`;
  if (size !== undefined) name += `,S=${size}`;
  if (wireSize !== undefined) name += `,W=${wireSize}`;
  return name;
}

/** Parses `base,S=..,W=..:2,FLAGS` into its parts. */
export function parseFileName(file: string): { key: string; size?: number; wireSize?: number; flags: string } {
  const colon = file.indexOf(":2,");
  const base = colon >= 0 ? file.slice(0, colon) : file;
  const flags = colon >= 0 ? file.slice(colon + 3) : "";
  const s = /,S=(\d+)/.exec(base);
  const w = /,W=(\d+)/.exec(base);
  const out: { key: string; size?: number; wireSize?: number; flags: string } = { key: base, flags };
  if (s) out.size = Number(s[1]);
  if (w) out.wireSize = Number(w[1]);
  return out;
}

/**
 * S= (bytes on disk) and W= (bytes with CRLF line ends) from a Maildir base name, without regular
 * expressions (this runs once per message read). Fields are `,S=<digits>` / `,W=<digits>`.
 */
export function sizesFromName(key: string): { size?: number; wireSize?: number } {
  const out: { size?: number; wireSize?: number } = {};
  for (let i = key.indexOf(","); i >= 0; i = key.indexOf(",", i + 1)) {
    const tag = key.charCodeAt(i + 1);
    if ((tag !== 0x53 && tag !== 0x57) || key.charCodeAt(i + 2) !== 0x3d) continue; // "S=" or "W="
    let n = 0;
    let j = i + 3;
    for (; j < key.length; j++) {
      const c = key.charCodeAt(j) - 0x30;
      if (c < 0 || c > 9) break;
      n = n * 10 + c;
    }
    if (j === i + 3) continue;
    if (tag === 0x53) out.size ??= n;
    else out.wireSize ??= n;
  }
  return out;
}

/** Maildir info letters ↔ IMAP flags (Maildir spec; Dovecot uses a-z for keywords). */
export const FLAG_LETTERS: Record<string, string> = {
  D: "\\Draft",
  F: "\\Flagged",
  R: "\\Answered",
  S: "\\Seen",
  T: "\\Deleted",
};

export function lettersToFlags(letters: string): string[] {
  const out: string[] = [];
  for (const c of letters) if (FLAG_LETTERS[c]) out.push(FLAG_LETTERS[c]!);
  return out;
}

export function flagsToLetters(flags: readonly string[]): string {
  const letters: string[] = [];
  for (const [l, f] of Object.entries(FLAG_LETTERS)) if (flags.some((x) => x.toLowerCase() === f.toLowerCase())) letters.push(l);
  return letters.sort().join("");
}

/** Number of bytes the message has on the wire with every line ending as CRLF. */
export function wireSize(data: Buffer): number {
  let extra = 0;
  for (let i = 0; i < data.length; i++) if (data[i] === 0x0a && (i === 0 || data[i - 1] !== 0x0d)) extra++;
  return data.length + extra;
}

/** Groups directory fsyncs: every caller waits for an fsync that started after its own rename. */
class DirSyncer {
  private readonly state = new Map<string, { running: Promise<void> | null; next: Promise<void> | null }>();

  sync(dir: string): Promise<void> {
    let s = this.state.get(dir);
    if (!s) {
      s = { running: null, next: null };
      this.state.set(dir, s);
    }
    const st = s;
    if (!st.running) {
      st.running = fsyncPath(dir).finally(() => {
        st.running = null;
        if (!st.next) this.state.delete(dir);
      });
      return st.running;
    }
    if (!st.next) {
      // One more fsync after the running one covers every caller that arrives meanwhile.
      st.next = st.running
        .catch(() => undefined)
        .then(() => {
          st.next = null;
          return this.sync(dir);
        });
    }
    return st.next;
  }
}

const dirSyncer = new DirSyncer();

async function fsyncPath(p: string): Promise<void> {
  const fh = await fs.open(p, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** fsync of a directory (grouped with concurrent callers). */
export function syncDir(dir: string): Promise<void> {
  return dirSyncer.sync(dir);
}

/** Writes `data` to `tmp/<name>` and fsyncs it. Removes the file on any failure. */
export async function writeTmp(maildir: string, name: string, data: Buffer): Promise<string> {
  const tmp = path.join(maildir, "tmp", name);
  let fh: fs.FileHandle | undefined;
  try {
    fh = await fs.open(tmp, "wx", 0o600);
    await fh.writeFile(data);
    await fh.sync();
    await fh.close();
    fh = undefined;
    return tmp;
  } catch (err) {
    if (fh) await fh.close().catch(() => undefined);
    await fs.unlink(tmp).catch(() => undefined);
    throw asTemporary(err);
  }
}

/**
 * Durably stores one message in a Maildir folder: tmp/ → fsync → new/ (or cur/ with flags) →
 * fsync dir. Returns the file name in its final directory.
 */
export async function writeMessage(
  maildir: string,
  data: Buffer,
  opts: { flags?: readonly string[]; mtime?: Date; intoCur?: boolean } = {},
): Promise<{ dir: "new" | "cur"; file: string }> {
  const base = uniqueName(data.length, wireSize(data));
  const tmp = await writeTmp(maildir, base, data);
  const intoCur = opts.intoCur || (opts.flags && opts.flags.length > 0);
  const dir = intoCur ? "cur" : "new";
  const file = intoCur ? `${base}:2,${flagsToLetters(opts.flags ?? [])}` : base;
  const dest = path.join(maildir, dir, file);
  try {
    if (opts.mtime) await fs.utimes(tmp, opts.mtime, opts.mtime);
    await fs.rename(tmp, dest);
    await syncDir(path.join(maildir, dir));
    return { dir, file };
  } catch (err) {
    await fs.unlink(tmp).catch(() => undefined);
    await fs.unlink(dest).catch(() => undefined);
    throw asTemporary(err);
  }
}

/** A file this long in tmp/ was left by a writer that died before its rename (qmail, Dovecot: 36 h). */
export const TMP_MAX_AGE_MS = 36 * 3_600_000;
/** A folder's tmp/ is read at most this often (Dovecot: 8 h, kept in tmp/'s atime). */
export const TMP_SWEEP_INTERVAL_MS = 8 * 3_600_000;

/**
 * Removes what a crashed writer left in a Maildir's tmp/, as Dovecot does when it opens a folder:
 * files whose inode last changed (ctime) more than TMP_MAX_AGE_MS ago. A message being written
 * now is never that old (writeTmp creates, writes, fsyncs and renames within one delivery). The
 * sweep runs at most once per TMP_SWEEP_INTERVAL_MS: when it has looked, it sets tmp/'s atime to
 * now (mtime kept), so a `noatime` mount and other processes see the same mark. Resolves to the
 * number of files removed.
 */
export async function sweepTmp(maildir: string, now = Date.now()): Promise<number> {
  const tmp = path.join(maildir, "tmp");
  let dirStat: import("node:fs").Stats;
  try {
    dirStat = await fs.stat(tmp);
  } catch {
    return 0;
  }
  if (now - dirStat.atimeMs < TMP_SWEEP_INTERVAL_MS) return 0;
  let removed = 0;
  for (const name of await fs.readdir(tmp)) {
    const file = path.join(tmp, name);
    try {
      const st = await fs.lstat(file);
      // ctime, as Dovecot: mtime can be set to anything (utimes), ctime is the last real change.
      if (st.isFile() && now - st.ctimeMs > TMP_MAX_AGE_MS) {
        await fs.unlink(file);
        removed++;
      }
    } catch {
      // gone meanwhile, or not ours to remove: leave it
    }
  }
  await fs.utimes(tmp, new Date(now), dirStat.mtime).catch(() => undefined);
  return removed;
}

export function asTemporary(err: unknown): TemporaryFailure {
  if (err instanceof TemporaryFailure) return err;
  const e = err as NodeJS.ErrnoException;
  return new TemporaryFailure(e?.message ?? String(err), e?.code ?? "EIO");
}
