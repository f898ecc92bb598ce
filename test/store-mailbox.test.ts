/**
 * The Maildir MailStore (store/mailstore.ts, mailbox.ts, uidlist.ts, index-folder.ts): folders,
 * messages, flags in file names, UIDs in dovecot-uidlist, sessions seeing each other, restart
 * persistence, the POP3 maildrop lock.
 */
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { decodeMutf7 as decodeMUtf7, encodeMutf7 as encodeMUtf7 } from "../lib/mutf7";
import { MaildirDelivery } from "../store/deliver";
import { flushAllIndexes, forgetIndexes } from "../store/index-folder";
import { withDotlock } from "../store/lock";
import { maildirRoot } from "../store/maildir";
import { MaildirStore } from "../store/mailstore";
import { NoSuchFolderError, TemporaryFailure } from "../store/types";

let dataDir: string;
let store: MaildirStore;

beforeEach(async () => {
  dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "mailstack-mbx-"));
  store = new MaildirStore(dataDir, { idleMs: 0 });
});

afterEach(async () => {
  await flushAllIndexes();
  forgetIndexes(dataDir);
  await fs.rm(dataDir, { recursive: true, force: true });
});

const msg = (n: number | string) => Buffer.from(`Subject: test ${n}\r\nFrom: a@b.c\r\n\r\nbody ${n}\r\n`);

async function uidlistLines(dir: string): Promise<string[]> {
  return (await fs.readFile(path.join(dir, "dovecot-uidlist"), "utf8")).trim().split("\n");
}

describe("messages and UIDs", () => {
  test("delivered mail gets UIDs, moves new/ → cur/, and reads back with CRLF", async () => {
    const delivery = new MaildirDelivery(dataDir);
    await delivery.deliverLocal(["lx"], msg(1));
    await delivery.deliverLocal(["lx"], Buffer.from("Subject: lf\n\nbare\nlf\n"));
    const mb = await store.open("lx");
    expect(mb.name).toBe("INBOX");
    const ms = mb.messages();
    expect(ms.map((m) => m.uid)).toEqual([1, 2]);
    const root = maildirRoot(dataDir, "lx");
    expect(await fs.readdir(path.join(root, "new"))).toEqual([]);
    const cur = await fs.readdir(path.join(root, "cur"));
    expect(cur).toHaveLength(2);
    for (const f of cur) expect(f).toMatch(/:2,$/);
    const second = await mb.read(2);
    expect(second.toString()).toBe("Subject: lf\r\n\r\nbare\r\nlf\r\n");
    expect(ms[1]!.size).toBe(second.length);
    expect((await mb.read(1)).equals(msg(1))).toBe(true);
    const lines = await uidlistLines(root);
    expect(lines[0]).toMatch(new RegExp(`^3 V${mb.uidValidity} N3 G[0-9a-f]{32}$`));
    expect(lines[1]).toMatch(/^1 :\d+\.M/);
    expect(mb.uidNext).toBe(3);
    await mb.close();
  });

  test("append, setFlags, expunge; flags live in file names; UIDs never reused", async () => {
    const mb = await store.open("lx");
    const u1 = await mb.append(msg(1), ["\\Seen"], new Date("2020-01-02T03:04:05Z"));
    const u2 = await mb.append(msg(2));
    expect([u1, u2]).toEqual([1, 2]);
    let ch = await mb.sync();
    expect(ch.added).toEqual([1, 2]);
    expect(mb.messages()[0]!.flags).toEqual(["\\Seen"]);
    expect(mb.messages()[0]!.internalDate.toISOString()).toBe("2020-01-02T03:04:05.000Z");
    const before = mb.highestModseq;
    const res = await mb.setFlags([1, 2], "add", ["\\Flagged", "\\Answered"]);
    expect(res.get(1)!.sort()).toEqual(["\\Answered", "\\Flagged", "\\Seen"]);
    expect(mb.highestModseq > before).toBe(true);
    const cur = await fs.readdir(path.join(maildirRoot(dataDir, "lx"), "cur"));
    expect(cur.map((f) => f.slice(f.indexOf(":2,"))).sort()).toEqual([":2,FR", ":2,FRS"]);
    ch = await mb.sync();
    expect(ch.flagsChanged).toEqual([]); // own change: not reported again
    await mb.setFlags([1], "remove", ["\\Seen"]);
    await mb.setFlags([2], "set", ["\\Deleted"]);
    expect(mb.messages().map((m) => m.flags)).toEqual([["\\Flagged", "\\Answered"], ["\\Deleted"]]);
    expect(await mb.expunge([2])).toEqual([2]);
    expect(mb.messages()).toHaveLength(2); // view changes in sync()
    ch = await mb.sync();
    expect(ch.removed).toEqual([2]);
    expect(await mb.append(msg(3))).toBe(3);
    const lines = await uidlistLines(maildirRoot(dataDir, "lx"));
    expect(lines.slice(1).map((l) => Number(l.split(" ")[0]))).toEqual([1, 3]);
    await mb.close();
  });

  test("keywords map to dovecot-keywords letters", async () => {
    const mb = await store.open("lx");
    const uid = await mb.append(msg(1), ["$Forwarded", "\\Seen"]);
    await mb.setFlags([uid], "add", ["Junk"]);
    const root = maildirRoot(dataDir, "lx");
    expect(await fs.readFile(path.join(root, "dovecot-keywords"), "utf8")).toBe("0 $Forwarded\n1 Junk\n");
    const [file] = await fs.readdir(path.join(root, "cur"));
    expect(file).toMatch(/:2,Sab$/);
    await mb.sync();
    expect(mb.messages()[0]!.flags).toEqual(["\\Seen", "$Forwarded", "Junk"]);
    await mb.close();
  });

  test("read() of a message expunged by another session throws EXPUNGED", async () => {
    const a = await store.open("lx");
    const b = await store.open("lx");
    const uid = await a.append(msg(1));
    await a.sync();
    await b.sync();
    await a.expunge([uid]);
    expect(b.messages().map((m) => m.uid)).toEqual([uid]);
    await expect(b.read(uid)).rejects.toMatchObject({ code: "EXPUNGED" });
    expect((await b.sync()).removed).toEqual([uid]);
    await a.close();
    await b.close();
  });
});

describe("sessions see each other", () => {
  test("two mailboxes: adds, flag changes and expunges are reported by sync()", async () => {
    const a = await store.open("lx");
    const b = await store.open("lx");
    await a.append(msg(1));
    await a.append(msg(2));
    expect((await b.sync()).added).toEqual([1, 2]);
    expect((await a.sync()).added).toEqual([1, 2]);
    await a.setFlags([1], "add", ["\\Seen"]);
    let ch = await b.sync();
    expect(ch.flagsChanged).toEqual([1]);
    expect(b.messages()[0]!.flags).toEqual(["\\Seen"]);
    expect(b.messages()[0]!.modseq).toBe(a.messages()[0]!.modseq);
    await b.expunge([2]);
    ch = await a.sync();
    expect(ch.removed).toEqual([2]);
    await a.close();
    await b.close();
  });

  test("changes made by another process (plain file operations) are noticed", async () => {
    const a = await store.open("lx");
    await a.append(msg(1));
    await a.append(msg(2));
    await a.sync();
    const root = maildirRoot(dataDir, "lx");
    const files = (await fs.readdir(path.join(root, "cur"))).sort();
    // Like another process: flag one message, delete another, deliver a third.
    await fs.rename(path.join(root, "cur", files[0]!), path.join(root, "cur", `${files[0]!.split(":")[0]}:2,S`));
    await fs.unlink(path.join(root, "cur", files[1]!));
    await new MaildirDelivery(dataDir).deliverLocal(["lx"], msg(3));
    const ch = await a.sync();
    expect(ch.added).toEqual([3]);
    expect(ch.flagsChanged).toEqual([1]);
    // A file unlinked behind the store's back (its uidlist record left) may just be mid-rename:
    // it counts as expunged once the directory has been quiet or after a short grace period.
    const removed = [...ch.removed];
    for (let i = 0; i < 50 && removed.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      removed.push(...(await a.sync()).removed);
    }
    expect(removed).toEqual([2]);
    expect(a.messages().map((m) => m.uid)).toEqual([1, 3]);
    await a.close();
  });

  test("watch() fires when another writer delivers", async () => {
    const a = await store.open("lx");
    const fired = new Promise<void>((resolve) => {
      const off = a.watch(() => {
        off();
        resolve();
      });
    });
    await new MaildirDelivery(dataDir).deliverLocal(["lx"], msg(1));
    await fired;
    expect((await a.sync()).added).toEqual([1]);
    await a.close();
  });
});

describe("persistence", () => {
  test("UIDs, UIDVALIDITY, flags, modseqs and cached fields survive a restart", async () => {
    let mb = await store.open("lx");
    await mb.append(msg(1));
    await mb.append(msg(2));
    await mb.append(msg(3));
    await mb.sync();
    await mb.expunge([2]);
    await mb.sync();
    await mb.setFlags([3], "add", ["\\Seen"]);
    const v = mb.uidValidity;
    const before = mb.messages().map((m) => ({ ...m }));
    expect(await mb.cached(3, "envelope", async () => ({ subject: "test 3" }))).toEqual({ subject: "test 3" });
    await mb.close();
    await flushAllIndexes();
    forgetIndexes(dataDir); // as a new process would start: nothing in memory
    const store2 = new MaildirStore(dataDir);
    mb = await store2.open("lx");
    expect(mb.uidValidity).toBe(v);
    expect(mb.messages().map((m) => ({ ...m }))).toEqual(before);
    let computed = false;
    expect(
      await mb.cached(3, "envelope", async () => {
        computed = true;
        return null;
      }),
    ).toEqual({ subject: "test 3" });
    expect(computed).toBe(false);
    expect(await mb.append(msg(4))).toBe(4);
    await mb.close();
  });

  test("index file lost: the Maildir and uidlist are the truth", async () => {
    let mb = await store.open("lx");
    await mb.append(msg(1), ["\\Seen"]);
    await mb.append(msg(2));
    await mb.close();
    await flushAllIndexes();
    forgetIndexes(dataDir);
    const root = maildirRoot(dataDir, "lx");
    await fs.rm(path.join(root, "mailstack-index"), { force: true });
    mb = await new MaildirStore(dataDir).open("lx");
    expect(mb.messages().map((m) => [m.uid, m.flags])).toEqual([
      [1, ["\\Seen"]],
      [2, []],
    ]);
    await mb.close();
  });
});

describe("copy", () => {
  test("copyTo keeps flags and date, returns UID mapping (UIDPLUS)", async () => {
    const inbox = await store.open("lx");
    await inbox.append(msg(1), ["\\Seen", "Work"], new Date("2021-05-06T07:08:09Z"));
    await inbox.append(msg(2));
    await inbox.sync();
    const sent = await store.open("lx", "Sent");
    await sent.append(msg("x"));
    const map = await inbox.copyTo([1, 2], sent);
    expect([...map]).toEqual([
      [1, 2],
      [2, 3],
    ]);
    await sent.sync();
    const m = sent.messages()[1]!;
    expect(m.flags).toEqual(["\\Seen", "Work"]);
    expect(m.internalDate.toISOString()).toBe("2021-05-06T07:08:09.000Z");
    expect((await sent.read(2)).equals(msg(1))).toBe(true);
    await inbox.close();
    await sent.close();
  });
});

describe("folders", () => {
  test("list with special use and subscriptions; create, rename, delete", async () => {
    let list = await store.listFolders("lx");
    expect(list).toEqual([
      { name: "INBOX", subscribed: false },
      { name: "Drafts", specialUse: "\\Drafts", subscribed: true },
      { name: "Junk", specialUse: "\\Junk", subscribed: true },
      { name: "Sent", specialUse: "\\Sent", subscribed: true },
      { name: "Trash", specialUse: "\\Trash", subscribed: true },
    ]);
    await store.createFolder("lx", "Archive/2024");
    await store.createFolder("lx", "Entwürfe & Ideen");
    const root = maildirRoot(dataDir, "lx");
    expect(await fs.readdir(root)).toEqual(expect.arrayContaining([".Archive.2024", ".Entw&APw-rfe &- Ideen"]));
    await expect(store.createFolder("lx", "Archive/2024")).rejects.toThrow(/already exists/);
    for (const bad of ["../x", "a/../b", "a.b", "", "/x", "a//b", "~x"])
      await expect(store.createFolder("lx", bad)).rejects.toThrow(/invalid folder name|exists/);
    await store.subscribe("lx", "Archive/2024", true);
    await store.subscribe("lx", "Entwürfe & Ideen", true);
    list = await store.listFolders("lx");
    expect(list.find((f) => f.name === "Entwürfe & Ideen")).toEqual({ name: "Entwürfe & Ideen", subscribed: true });
    expect(list.find((f) => f.name === "Archive/2024")?.subscribed).toBe(true);

    const mb = await store.open("lx", "Archive/2024");
    await mb.append(msg(1));
    await mb.close();
    // Archive itself never existed (Maildir++ needs no parents):
    await expect(store.renameFolder("lx", "Archive", "Old")).rejects.toThrow(NoSuchFolderError);
    await store.createFolder("lx", "Archive");
    await store.renameFolder("lx", "Archive", "Old");
    const moved = await store.open("lx", "Old/2024");
    expect(moved.messages()).toHaveLength(1);
    await moved.close();
    list = await store.listFolders("lx");
    expect(list.find((f) => f.name === "Old/2024")?.subscribed).toBe(true);
    await store.deleteFolder("lx", "Old/2024");
    await expect(store.open("lx", "Old/2024")).rejects.toThrow(NoSuchFolderError);
    await expect(store.deleteFolder("lx", "INBOX")).rejects.toThrow(/INBOX/);
    await expect(store.deleteFolder("lx", "Nope")).rejects.toThrow(NoSuchFolderError);
  });

  test("renaming INBOX moves its messages and leaves INBOX empty", async () => {
    const inbox = await store.open("lx");
    await inbox.append(msg(1), ["\\Seen"]);
    await inbox.append(msg(2));
    await inbox.sync();
    await store.renameFolder("lx", "INBOX", "Old Mail");
    const changes = await inbox.sync();
    expect(changes.removed).toEqual([1, 2]);
    const old = await store.open("lx", "Old Mail");
    expect(old.messages().map((m) => m.flags)).toEqual([["\\Seen"], []]);
    expect((await old.read(old.messages()[1]!.uid)).equals(msg(2))).toBe(true);
    await inbox.close();
    await old.close();
  });

  test("modified UTF-7 round trip", () => {
    for (const s of ["Entwürfe", "日本語", "a&b", "&", "~peter/mail/台北/日本語", "x😀y"]) {
      expect(decodeMUtf7(encodeMUtf7(s))).toBe(s);
    }
    expect(encodeMUtf7("~peter/mail/台北/日本語")).toBe("~peter/mail/&U,BTFw-/&ZeVnLIqe-");
    expect(decodeMUtf7("&Jjo!")).toBeNull();
    expect(decodeMUtf7("&AGE-")).toBeNull(); // encodes "a", which must be written directly
  });
});

describe("POP3 maildrop lock", () => {
  test("exclusive; released; stale lock of a dead process is broken", async () => {
    const release = await store.lockMaildrop("lx");
    expect(release).not.toBeNull();
    expect(await store.lockMaildrop("lx")).toBeNull();
    await release!();
    const again = await store.lockMaildrop("lx");
    expect(again).not.toBeNull();
    await again!();
    const lock = path.join(maildirRoot(dataDir, "lx"), "mailstack-pop3.lock");
    await fs.writeFile(lock, `999999:${os.hostname()}:dead`);
    const taken = await store.lockMaildrop("lx");
    expect(taken).not.toBeNull();
    await taken!();
  });
});

describe("a Dovecot-written Maildir", () => {
  /** Lays out a Maildir as Dovecot leaves it: uidlist v3 and v1, keywords, LF files, odd names. */
  async function makeDovecotMaildir(root: string): Promise<void> {
    const w = async (rel: string, body: string, mtime: number) => {
      const p = path.join(root, rel);
      await fs.mkdir(path.dirname(p), { recursive: true });
      await fs.writeFile(p, body);
      await fs.utimes(p, mtime, mtime);
    };
    for (const d of [
      "cur",
      "new",
      "tmp",
      ".Sent/cur",
      ".Sent/new",
      ".Sent/tmp",
      ".Entw&APw-rfe/cur",
      ".Entw&APw-rfe/new",
      ".Entw&APw-rfe/tmp",
    ])
      await fs.mkdir(path.join(root, d), { recursive: true });
    const m1 = "From: a@x\nSubject: one\n\nline 1\nline 2\n"; // 41 bytes LF, 46 CRLF
    const m2 = "From: b@x\nSubject: two\n\nbody\n";
    const m3 = "From: c@x\r\nSubject: three\r\n\r\ncrlf already\r\n";
    await w(`cur/1275660208.M1P1.mail,S=${m1.length},W=${m1.length + 5}:2,S`, m1, 1_275_660_208);
    await w(`cur/1275660209.M2P1.mail,S=${m2.length}:2,RSa`, m2, 1_275_660_209);
    await w("cur/1275660210.M3P1.mail:2,", m3, 1_275_660_210);
    await w("new/1275660300.M4P1.mail", "Subject: new\n\nunseen\n", 1_275_660_300);
    await fs.writeFile(
      path.join(root, "dovecot-uidlist"),
      "3 V1275660208 N5 G3085f01b7f11094c501100008c4a11c1\n" +
        `1 :1275660208.M1P1.mail,S=${m1.length},W=${m1.length + 5}\n` +
        `2 W${m2.length + 4} :1275660209.M2P1.mail,S=${m2.length}\n` +
        "4 :1275660210.M3P1.mail\n",
    );
    await fs.writeFile(path.join(root, "dovecot-keywords"), "0 $Forwarded\n1 NonJunk\n");
    await fs.writeFile(path.join(root, "dovecot.index"), Buffer.from([0, 1, 2, 3]));
    // Sent: a Courier-compatible version 1 uidlist.
    await w(".Sent/cur/1275660001.M5P1.mail:2,S", "Subject: sent\n\nhi\n", 1_275_660_001);
    await fs.writeFile(path.join(root, ".Sent", "dovecot-uidlist"), "1 1275660000 8\n7 1275660001.M5P1.mail:2,S\n");
    await fs.writeFile(path.join(root, ".Sent", "maildirfolder"), "");
    await fs.writeFile(path.join(root, "subscriptions"), "V\t2\n\nSent\nEntw&APw-rfe\n");
  }

  test("UIDs, UIDVALIDITY, flags, keywords, sizes and dates are read as Dovecot wrote them", async () => {
    const root = maildirRoot(dataDir, "dove");
    await makeDovecotMaildir(root);
    const mb = await store.open("dove");
    expect(mb.uidValidity).toBe(1275660208);
    const ms = mb.messages();
    expect(ms.map((m) => m.uid)).toEqual([1, 2, 4, 5]); // the new/ message gets the next UID
    expect(ms.map((m) => m.flags)).toEqual([["\\Seen"], ["\\Answered", "\\Seen", "$Forwarded"], [], []]);
    expect(ms[0]!.internalDate.getTime()).toBe(1_275_660_208_000);
    for (const m of ms) {
      const body = await mb.read(m.uid);
      expect(body.length).toBe(m.size);
      expect(/[^\r]\n/.test(body.toString("latin1"))).toBe(false);
    }
    expect((await mb.read(1)).toString()).toBe("From: a@x\r\nSubject: one\r\n\r\nline 1\r\nline 2\r\n");
    expect((await mb.read(4)).toString()).toBe("From: c@x\r\nSubject: three\r\n\r\ncrlf already\r\n");
    // The uidlist stays Dovecot's: header untouched (N not lowered), new record appended.
    const lines = await uidlistLines(root);
    expect(lines[0]).toBe("3 V1275660208 N5 G3085f01b7f11094c501100008c4a11c1");
    expect(lines[2]).toBe(`2 W${"From: b@x\nSubject: two\n\nbody\n".length + 4} :1275660209.M2P1.mail,S=29`);
    expect(lines[4]).toMatch(/^5 :1275660300\.M4P1\.mail$/);
    expect(await fs.readdir(path.join(root, "new"))).toEqual([]);
    expect(await fs.readdir(path.join(root, "cur"))).toContain("1275660300.M4P1.mail:2,");
    // Flag changes keep Dovecot's letters and keywords.
    await mb.setFlags([2], "add", ["NonJunk"]);
    expect(await fs.readdir(path.join(root, "cur"))).toContain("1275660209.M2P1.mail,S=29:2,RSab");
    await mb.setFlags([2], "remove", ["$Forwarded", "\\Answered"]);
    expect(await fs.readdir(path.join(root, "cur"))).toContain("1275660209.M2P1.mail,S=29:2,Sb");
    await mb.close();

    const sent = await store.open("dove", "Sent");
    expect(sent.uidValidity).toBe(1275660000);
    expect(sent.messages().map((m) => [m.uid, m.flags])).toEqual([[7, ["\\Seen"]]]);
    expect(await sent.append(Buffer.from("Subject: more\r\n\r\n"))).toBe(8);
    await sent.close();
    // Rewritten in version 3 on first change, keeping UIDVALIDITY and UIDs.
    const sentLines = await uidlistLines(path.join(root, ".Sent"));
    expect(sentLines[0]).toMatch(/^3 V1275660000 N\d+ G[0-9a-f]{32}$/);
    expect(sentLines[1]).toBe("7 :1275660001.M5P1.mail");

    const folders = await store.listFolders("dove");
    expect(folders).toEqual([
      { name: "INBOX", subscribed: false },
      { name: "Entwürfe", subscribed: true },
      { name: "Sent", specialUse: "\\Sent", subscribed: true },
    ]);
    await store.subscribe("dove", "INBOX", true);
    expect(await fs.readFile(path.join(root, "subscriptions"), "utf8")).toBe("V\t2\n\nSent\nEntw&APw-rfe\nINBOX\n");
  });
});

describe("dotlock", () => {
  test("serialises holders, breaks a dead holder's lock, times out on a live one", async () => {
    const target = path.join(dataDir, "dovecot-uidlist");
    const order: string[] = [];
    await Promise.all(
      ["a", "b", "c"].map((n) =>
        withDotlock(target, async () => {
          order.push(`${n}+`);
          await new Promise((r) => setTimeout(r, 5));
          order.push(`${n}-`);
        }),
      ),
    );
    expect(order.join(" ")).toBe("a+ a- b+ b- c+ c-");
    // Left behind by a process that died (same host, pid gone): broken at once.
    await fs.writeFile(`${target}.lock`, `999999:${os.hostname()}`);
    expect(await withDotlock(target, async () => "got it")).toBe("got it");
    await expect(fs.access(`${target}.lock`)).rejects.toThrow();
    // Held by a live process elsewhere (another host): waited for, then a TemporaryFailure.
    await fs.writeFile(`${target}.lock`, "1:some-other-host");
    await expect(withDotlock(target, async () => "never", { timeoutMs: 200 })).rejects.toThrow(TemporaryFailure);
    // ...unless it is older than the stale timeout (holder hung or gone).
    const old = new Date(Date.now() - 10 * 60_000);
    await fs.utimes(`${target}.lock`, old, old);
    expect(await withDotlock(target, async () => "after stale", { timeoutMs: 200 })).toBe("after stale");
  });
});
