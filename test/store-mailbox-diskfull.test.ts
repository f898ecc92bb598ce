/**
 * The Maildir store on a full disk (store/lock.ts, uidlist.ts, index-folder.ts): once nothing
 * can be written, mail already in the Maildir is still served. Locks are kept as empty files,
 * UIDs are assigned in memory (continuing from the uidlist's next UID, never twice) and written
 * to dovecot-uidlist by the first update after space is freed.
 *
 * The data directory is a small tmpfs mounted here (root only; skipped otherwise) and unmounted
 * afterwards.
 */
import { execFileSync } from "node:child_process";
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { MaildirDelivery } from "../store/deliver";
import { flushAllIndexes, forgetIndexes } from "../store/index-folder";
import { tryHoldLock, withDotlock } from "../store/lock";
import { maildirRoot } from "../store/maildir";
import { MaildirStore, POP3_LOCK_FILE } from "../store/mailstore";

const isRoot = process.getuid?.() === 0;
const describeIf = isRoot ? describe : describe.skip;

let dir: string;
let dataDir: string;
let mounted = false;

beforeEach(async () => {
  if (!isRoot) return;
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "mailstack-full-"));
  dataDir = path.join(dir, "data");
  await fs.mkdir(dataDir);
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", dataDir]);
  mounted = true;
});

afterEach(async () => {
  if (!isRoot) return;
  await flushAllIndexes();
  forgetIndexes(dataDir);
  if (mounted) execFileSync("umount", [dataDir]);
  mounted = false;
  await fs.rm(dir, { recursive: true, force: true });
});

const msg = (n: number | string) => Buffer.from(`Subject: test ${n}\r\nFrom: a@b.c\r\n\r\nbody ${n}\r\n`);

/** Takes every byte left on the file system. */
async function fill(file: string): Promise<void> {
  const fh = await fs.open(file, "w");
  try {
    for (const size of [64 * 1024, 4096, 512, 1]) {
      try {
        for (;;) await fh.write(Buffer.alloc(size, 0x41));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOSPC") throw err;
      }
    }
  } finally {
    await fh.close();
  }
}

async function uidlistRecords(root: string): Promise<{ header: string; uids: Map<string, number> }> {
  const lines = (await fs.readFile(path.join(root, "dovecot-uidlist"), "utf8")).trim().split("\n");
  const uids = new Map<string, number>();
  for (const l of lines.slice(1)) {
    const [uid, rest] = [l.slice(0, l.indexOf(" ")), l.slice(l.indexOf(":") + 1)];
    uids.set(rest, Number(uid));
  }
  return { header: lines[0]!, uids };
}

describeIf("full disk", () => {
  test("locks are kept as empty files and released", async () => {
    const delivery = new MaildirDelivery(dataDir);
    await delivery.deliverLocal(["lx"], msg(0));
    const root = maildirRoot(dataDir, "lx");
    await fill(path.join(dataDir, "filler"));
    const lockFile = path.join(root, POP3_LOCK_FILE);
    const release = await tryHoldLock(lockFile);
    expect(release).not.toBeNull();
    expect((await fs.readFile(lockFile)).length).toBe(0);
    // Still exclusive: a second taker finds it held (an empty lock is stale only by age).
    expect(await tryHoldLock(lockFile)).toBeNull();
    await release!();
    await expect(fs.stat(lockFile)).rejects.toMatchObject({ code: "ENOENT" });
    // The short-lived dotlock too.
    const target = path.join(root, "some-file");
    const seen = await withDotlock(target, async () => (await fs.readFile(`${target}.lock`)).length);
    expect(seen).toBe(0);
    await expect(fs.stat(`${target}.lock`)).rejects.toMatchObject({ code: "ENOENT" });
  });

  test("mail is served with in-memory UIDs, which are written once there is room", async () => {
    const delivery = new MaildirDelivery(dataDir);
    await delivery.deliverLocal(["lx"], msg(1));
    await delivery.deliverLocal(["lx"], msg(2));
    const store = new MaildirStore(dataDir, { idleMs: 0 });
    const early = await store.open("lx");
    expect(early.messages().map((m) => m.uid)).toEqual([1, 2]);
    const root = maildirRoot(dataDir, "lx");
    // More records than fit in the slack of the uidlist's last page (tmpfs allocates pages).
    const N = 90;
    for (let i = 3; i <= N; i++) await delivery.deliverLocal(["lx"], msg(i));
    await fill(path.join(dataDir, "filler"));
    const before = await fs.readFile(path.join(root, "dovecot-uidlist"), "utf8");

    // The session open before the disk filled sees the new mail.
    const ch = await early.sync();
    const more = Array.from({ length: N - 2 }, (_, i) => i + 3);
    expect(ch.added).toEqual(more);
    for (const m of early.messages()) expect((await early.read(m.uid)).equals(msg(m.uid))).toBe(true);
    // Nothing could be written: the uidlist is unchanged and no lock or temporary file is left.
    expect(await fs.readFile(path.join(root, "dovecot-uidlist"), "utf8")).toBe(before);
    expect((await fs.readdir(root)).filter((f) => f.endsWith(".lock") || f.endsWith(".tmp"))).toEqual([]);

    // A POP3-style session: maildrop lock, open, read everything.
    const release = await store.lockMaildrop("lx");
    expect(release).not.toBeNull();
    const pop = await store.open("lx");
    expect(pop.messages().map((m) => m.uid)).toEqual([1, 2, ...more]);
    for (const m of pop.messages()) expect((await pop.read(m.uid)).equals(msg(m.uid))).toBe(true);
    const shown = new Map(pop.messages().map((m) => [m.key, m.uid]));
    await pop.close();
    await release!();

    // UIDs are never handed out twice: with room again, the next update writes the in-memory
    // ones and continues after them.
    await fs.rm(path.join(dataDir, "filler"));
    const last = await early.append(msg(N + 1));
    expect(last).toBe(N + 1);
    // (The in-memory records went in with a rewrite, then UID N + 1 was appended.)
    const { uids } = await uidlistRecords(root);
    for (const [key, uid] of shown) expect(uids.get(key)).toBe(uid);
    expect([...uids.values()].sort((a, b) => a - b)).toEqual([1, 2, ...more, N + 1]);
    await early.close();

    // A new process sees the same UIDs.
    await flushAllIndexes();
    forgetIndexes(dataDir);
    const again = await new MaildirStore(dataDir, { idleMs: 0 }).open("lx");
    expect(again.messages().map((m) => [m.key, m.uid])).toEqual([...shown, [again.messages()[N]!.key, N + 1]]);
    await again.close();
  });

  test("a folder first opened on a full disk gets its UIDVALIDITY and UIDs in memory", async () => {
    const delivery = new MaildirDelivery(dataDir);
    for (let i = 1; i <= 3; i++) await delivery.deliverLocal(["lx"], msg(i));
    const root = maildirRoot(dataDir, "lx");
    await fill(path.join(dataDir, "filler"));
    const store = new MaildirStore(dataDir, { idleMs: 0 });
    const a = await store.open("lx");
    const b = await store.open("lx");
    expect(a.uidValidity).toBeGreaterThan(0);
    expect(a.messages().map((m) => m.uid)).toEqual([1, 2, 3]);
    expect(b.messages().map((m) => m.uid)).toEqual([1, 2, 3]);
    expect(a.uidNext).toBe(4);
    await a.sync();
    expect(a.messages().map((m) => m.uid)).toEqual([1, 2, 3]);
    expect((await a.read(2)).equals(msg(2))).toBe(true);
    await expect(fs.stat(path.join(root, "dovecot-uidlist"))).rejects.toMatchObject({ code: "ENOENT" });
    await fs.rm(path.join(dataDir, "filler"));
    await a.append(msg(4));
    await a.sync();
    const { header, uids } = await uidlistRecords(root);
    expect(header).toMatch(new RegExp(`^3 V${a.uidValidity} N5 `));
    expect(new Map(a.messages().map((m) => [m.key, m.uid]))).toEqual(new Map([...uids]));
    await a.close();
    await b.close();
  });

  test("UIDs another process wrote meanwhile win on disk; ours are never handed out again", async () => {
    const delivery = new MaildirDelivery(dataDir);
    await delivery.deliverLocal(["lx"], msg(1));
    await delivery.deliverLocal(["lx"], msg(2));
    const store = new MaildirStore(dataDir, { idleMs: 0 });
    const a = await store.open("lx");
    const root = maildirRoot(dataDir, "lx");
    const N = 90;
    for (let i = 3; i <= N; i++) await delivery.deliverLocal(["lx"], msg(i));
    await fill(path.join(dataDir, "filler"));
    await a.sync();
    const shown = a.messages().map((m) => [m.key, m.uid] as const);
    expect(shown.map(([, u]) => u)).toEqual(Array.from({ length: N }, (_, i) => i + 1));
    await fs.rm(path.join(dataDir, "filler"));
    // Another process, with room again, writes its own view: UIDs 3 and 4 the other way round,
    // and UID 5 for a message it delivered itself.
    const k3 = shown[2]![0];
    const k4 = shown[3]![0];
    await delivery.deliverLocal(["lx"], msg("other"));
    const [otherFile] = await fs.readdir(path.join(root, "new"));
    await fs.appendFile(path.join(root, "dovecot-uidlist"), `3 :${k4}\n4 :${k3}\n5 :${otherFile}\n`);
    const ch = await a.sync();
    // This session's UIDs do not change under it; the other message gets a UID above all ours.
    expect(
      a
        .messages()
        .slice(0, N)
        .map((m) => [m.key, m.uid]),
    ).toEqual(shown);
    expect(ch.added).toHaveLength(1);
    expect(ch.added[0]).toBeGreaterThan(N);
    const next = await a.append(msg("next"));
    expect(next).toBeGreaterThan(ch.added[0]!);
    const { uids } = await uidlistRecords(root);
    const all = [...uids.values()];
    expect(new Set(all).size).toBe(all.length);
    expect(uids.get(otherFile!)).toBe(ch.added[0]);
    expect(Math.max(...all)).toBe(next);
    await a.close();
  });
});
