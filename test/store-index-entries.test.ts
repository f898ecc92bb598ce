/**
 * The folder index keeps one object per message (store/index-folder.ts: the `Msg` handed out is
 * also the index's record): a change makes a new one that takes the old one's place, so what a
 * session was shown stays as it was, while the index (file location, cached values, the cache
 * LRU keyed by UID) follows the message. And the uidlist a first scan writes
 * (store/uidlist.ts): one `<uid> :<name>` line per file, in UID order, whatever the names.
 */
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { MaildirDelivery } from "../store/deliver";
import { ExpungedError, flushAllIndexes, forgetIndexes } from "../store/index-folder";
import type { MaildirMailbox } from "../store/mailbox";
import { maildirRoot } from "../store/maildir";
import { MaildirStore } from "../store/mailstore";

let dataDir: string;
let store: MaildirStore;

beforeEach(async () => {
  dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "mailstack-ixe-"));
  store = new MaildirStore(dataDir, { idleMs: 0, cacheBudget: 4096 });
});

afterEach(async () => {
  await flushAllIndexes();
  forgetIndexes(dataDir);
  await fs.rm(dataDir, { recursive: true, force: true });
});

const msg = (n: number | string) => Buffer.from(`Subject: test ${n}\r\nFrom: a@b.c\r\n\r\nbody ${n}\r\n`);
const big = (n: number) => ({ n, pad: "x".repeat(1000) });

async function openWith(count: number): Promise<MaildirMailbox> {
  const mb = (await store.open("lx")) as MaildirMailbox;
  for (let i = 0; i < count; i++) await mb.append(msg(i));
  await mb.sync();
  return mb;
}

/** Drops every index this process holds, as a restart would. */
async function forgetAll(): Promise<void> {
  await flushAllIndexes();
  forgetIndexes(dataDir);
}

/** lx's INBOX made once (directories, empty uidlist) and then forgotten: its Maildir root. */
async function madeAndForgotten(): Promise<string> {
  await (await store.open("lx")).close();
  await forgetAll();
  return maildirRoot(dataDir, "lx");
}

/** Writes files straight into cur/ (as another program would), names in delivery order. */
async function writeCur(root: string, names: string[]): Promise<void> {
  for (const [i, n] of names.entries()) await fs.writeFile(path.join(root, "cur", n), msg(i));
}

describe("one object per message", () => {
  test("a flag change makes a new message object; sessions keep what they were shown until sync", async () => {
    const mb = await openWith(3);
    const other = (await store.open("lx")) as MaildirMailbox;
    const before = mb.messages()[1]!;
    const seenBefore = other.messages()[1]!;
    expect(seenBefore).toBe(before);
    const res = await mb.setFlags([2], "add", ["\\Flagged"]);
    expect(res.get(2)).toEqual(["\\Flagged"]);
    expect(before.flags).toEqual([]);
    expect(other.messages()[1]!.flags).toEqual([]);
    const ch = await other.sync();
    expect(ch.flagsChanged).toEqual([2]);
    const after = other.messages()[1]!;
    expect(after).not.toBe(before);
    expect(after.flags).toEqual(["\\Flagged"]);
    expect(after.modseq > before.modseq).toBe(true);
    expect([after.uid, after.key, after.size]).toEqual([before.uid, before.key, before.size]);
    // The index reads the renamed file.
    expect((await mb.read(2)).equals(msg(1))).toBe(true);
    await other.close();
    await mb.close();
  });

  test("a UID named twice in one STORE is renamed once and ends with the flags", async () => {
    const mb = await openWith(2);
    const res = await mb.setFlags([1, 1, 2], "add", ["\\Seen"]);
    expect(res.get(1)).toEqual(["\\Seen"]);
    const cur = await fs.readdir(path.join(maildirRoot(dataDir, "lx"), "cur"));
    expect(cur.map((f) => f.slice(f.indexOf(":2,"))).sort()).toEqual([":2,S", ":2,S"]);
    expect((await mb.read(1)).equals(msg(0))).toBe(true);
    await mb.close();
  });

  test("cached values (small and big) stay with a message across flag changes, its own and others'", async () => {
    const mb = await openWith(3);
    await mb.cached(1, "small", async () => "s1");
    await mb.cached(1, "big", async () => big(1));
    await mb.setFlags([1], "add", ["\\Answered"]);
    let computed = 0;
    expect(await mb.cached(1, "small", async () => ++computed)).toBe("s1");
    expect(await mb.cached(1, "big", async () => ++computed)).toEqual(big(1));
    // Another program renames the file (new flags): the index follows, the values stay.
    const cur = path.join(maildirRoot(dataDir, "lx"), "cur");
    const file = (await fs.readdir(cur)).find((f) => f.startsWith(mb.messages()[0]!.key))!;
    await fs.rename(path.join(cur, file), path.join(cur, `${mb.messages()[0]!.key}:2,FR`));
    await new Promise((r) => setTimeout(r, 20));
    await mb.index.refresh();
    const ch = await mb.sync();
    expect(ch.flagsChanged).toEqual([1]);
    expect(mb.messages()[0]!.flags).toEqual(["\\Flagged", "\\Answered"]);
    expect(await mb.cached(1, "small", async () => ++computed)).toBe("s1");
    expect(await mb.cached(1, "big", async () => ++computed)).toEqual(big(1));
    expect(computed).toBe(0);
    expect((await mb.read(1)).equals(msg(0))).toBe(true);
    await mb.close();
  });

  test("a value computed while the message changes is kept with the message as it is now", async () => {
    const mb = await openWith(2);
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const pending = mb.cached(2, "late", async () => {
      await gate;
      return "v";
    });
    await mb.setFlags([2], "add", ["\\Seen"]);
    release();
    expect(await pending).toBe("v");
    expect(mb.peekCached(2, "late")).toBe("v");
    let computed = 0;
    expect(await mb.cached(2, "late", async () => ++computed)).toBe("v");
    expect(computed).toBe(0);
    await mb.close();
  });

  test("big values are bounded by the budget (LRU by UID), and an expunge drops a message's values", async () => {
    const mb = await openWith(8);
    for (let uid = 1; uid <= 8; uid++) await mb.cached(uid, "big", async () => big(uid));
    let stats = mb.index.cacheStats();
    expect(stats.bigBytes).toBeLessThanOrEqual(4096);
    expect(stats.big).toBeGreaterThan(0);
    expect(stats.big).toBeLessThan(8);
    // The most recent ones stay; a hit moves a value to the back.
    let computed = 0;
    expect(await mb.cached(8, "big", async () => ++computed)).toEqual(big(8));
    expect(computed).toBe(0);
    await mb.cached(8, "small", async () => 8);
    await mb.setFlags([8], "add", ["\\Deleted"]);
    expect(await mb.expunge([8])).toEqual([8]);
    stats = mb.index.cacheStats();
    expect(stats.small).toBe(0);
    expect(stats.bigBytes).toBeLessThanOrEqual(4096);
    expect(mb.peekCached(8, "big")).toBeUndefined();
    await expect(mb.read(8)).rejects.toBeInstanceOf(ExpungedError);
    // The expunged message's big value is gone: the others fit, none counted twice.
    for (let uid = 5; uid <= 7; uid++) await mb.cached(uid, "big", async () => big(uid));
    const total = mb.index.cacheStats();
    expect(total.bigBytes).toBe(total.big * JSON.stringify(big(5)).length);
    await mb.close();
  });

  test("an expunge by another program and an expunge through the store both drop the message", async () => {
    const mb = await openWith(4);
    await mb.cached(3, "small", async () => "three");
    const cur = path.join(maildirRoot(dataDir, "lx"), "cur");
    const key3 = mb.messages()[2]!.key;
    const file = (await fs.readdir(cur)).find((f) => f.startsWith(key3))!;
    await fs.unlink(path.join(cur, file));
    // The uidlist record goes too (as the other program's expunge would).
    const ul = path.join(maildirRoot(dataDir, "lx"), "dovecot-uidlist");
    const lines = (await fs.readFile(ul, "utf8")).split("\n").filter((l) => !l.endsWith(`:${key3}`));
    await fs.writeFile(ul, lines.join("\n"));
    await new Promise((r) => setTimeout(r, 20));
    await mb.index.refresh();
    let ch = await mb.sync();
    expect(ch.removed).toEqual([3]);
    expect(mb.index.cacheStats().small).toBe(0);
    expect(await mb.expunge([1])).toEqual([1]);
    ch = await mb.sync();
    expect(mb.messages().map((m) => m.uid)).toEqual([2, 4]);
    await mb.close();
  });

  test("a wrong W= in a name is corrected on read; the message keeps its values", async () => {
    const mb = (await store.open("lx")) as MaildirMailbox;
    const root = maildirRoot(dataDir, "lx");
    const data = msg("w");
    await fs.writeFile(path.join(root, "cur", `1700000000.M1P1.test,S=${data.length},W=7:2,S`), data);
    await new Promise((r) => setTimeout(r, 20));
    await mb.sync();
    expect(mb.messages()[0]!.size).toBe(7);
    await mb.cached(1, "small", async () => "kept");
    expect((await mb.read(1)).equals(data)).toBe(true);
    expect(mb.index.infoOf(1)!.size).toBe(data.length);
    expect(mb.index.infoOf(1)!.flags).toEqual(["\\Seen"]);
    expect(mb.peekCached(1, "small")).toBe("kept");
    await mb.close();
  });

  test("after a restart the index file gives back the same messages", async () => {
    const mb = await openWith(5);
    await mb.setFlags([2, 4], "add", ["\\Seen", "\\Flagged"]);
    const seen = mb.messages().map((m) => ({ uid: m.uid, key: m.key, size: m.size, flags: m.flags, modseq: m.modseq }));
    void mb.messages()[0]!.internalDate;
    await mb.close();
    await forgetAll();
    const again = (await new MaildirStore(dataDir).open("lx")) as MaildirMailbox;
    expect(again.messages().map((m) => ({ uid: m.uid, key: m.key, size: m.size, flags: m.flags, modseq: m.modseq }))).toEqual(seen);
    expect((await again.read(4)).equals(msg(3))).toBe(true);
    await again.close();
  });
});

describe("the uidlist of a first scan", () => {
  test("one line per file in delivery order, new/ moved to cur/, the file read back the same after a restart", async () => {
    const root = await madeAndForgotten();
    await fs.rm(path.join(root, "dovecot-uidlist"), { force: true });
    await fs.rm(path.join(root, "mailstack-index"), { force: true });
    const names = Array.from({ length: 40 }, (_, i) => `${1700000000 + i}.M${i}P9.host,S=40,W=41:2,${i % 3 ? "S" : ""}`);
    await writeCur(root, names);
    await fs.writeFile(path.join(root, "new", "1800000000.M1P9.host"), msg("new"));
    const mb = await new MaildirStore(dataDir).open("lx");
    const keys = [...names.map((n) => n.slice(0, n.indexOf(":"))), "1800000000.M1P9.host"];
    expect(mb.messages().map((m) => [m.uid, m.key])).toEqual(keys.map((k, i) => [i + 1, k]));
    const text = await fs.readFile(path.join(root, "dovecot-uidlist"), "utf8");
    const lines = text.split("\n");
    expect(lines[0]).toMatch(new RegExp(`^3 V${mb.uidValidity} N42 G[0-9a-f]{32}$`));
    expect(lines.slice(1)).toEqual([...keys.map((k, i) => `${i + 1} :${k}`), ""]);
    expect(await fs.readdir(path.join(root, "new"))).toEqual([]);
    await mb.close();
    await forgetAll();
    await fs.rm(path.join(root, "mailstack-index"), { force: true });
    const again = await new MaildirStore(dataDir).open("lx");
    expect(again.messages().map((m) => [m.uid, m.key])).toEqual(keys.map((k, i) => [i + 1, k]));
    expect(again.uidValidity).toBe(mb.uidValidity);
    await again.close();
  });

  test("names that are not ASCII, and UIDs of many digits, are written whole", async () => {
    const root = await madeAndForgotten();
    // A Dovecot uidlist with a next UID of many digits, and no records yet.
    await fs.writeFile(path.join(root, "dovecot-uidlist"), "3 V1234 N999998 G00112233445566778899aabbccddeeff\n");
    await fs.rm(path.join(root, "mailstack-index"), { force: true });
    const names = ["1700000001.M1P1.hôst:2,S", "1700000002.M2P1.host:2,", "1700000003.M3P1.日本:2,F"];
    await writeCur(root, names);
    const mb = await new MaildirStore(dataDir).open("lx");
    expect(mb.messages().map((m) => m.uid)).toEqual([999998, 999999, 1000000]);
    const lines = (await fs.readFile(path.join(root, "dovecot-uidlist"), "utf8")).split("\n");
    expect(lines.slice(1)).toEqual(["999998 :1700000001.M1P1.hôst", "999999 :1700000002.M2P1.host", "1000000 :1700000003.M3P1.日本", ""]);
    await mb.close();
  });

  test("a rewrite keeps other programs' extension fields and header fields, and drops expunged records", async () => {
    const root = await madeAndForgotten();
    const names = ["1700000001.M1P1.h,S=40:2,S", "1700000002.M2P1.h,S=40:2,", "1700000003.M3P1.h,S=40:2,"];
    await writeCur(root, names);
    const size = msg(0).length;
    await fs.writeFile(
      path.join(root, "dovecot-uidlist"),
      `3 V77 N10 G00112233445566778899aabbccddeeff X9\n4 W${size} :1700000001.M1P1.h,S=40\n5 :1700000002.M2P1.h,S=40\n`,
    );
    await fs.rm(path.join(root, "mailstack-index"), { force: true });
    const mb = await new MaildirStore(dataDir).open("lx");
    expect(mb.uidValidity).toBe(77);
    expect(mb.messages().map((m) => m.uid)).toEqual([4, 5, 10]);
    expect(mb.messages()[0]!.size).toBe(size);
    // Enough dead records in a small list make the expunge rewrite the file.
    expect(await mb.expunge([5])).toEqual([5]);
    const lines = (await fs.readFile(path.join(root, "dovecot-uidlist"), "utf8")).split("\n");
    expect(lines[0]).toBe("3 V77 N11 G00112233445566778899aabbccddeeff X9");
    expect(lines.slice(1)).toEqual([`4 W${size} :1700000001.M1P1.h,S=40`, "10 :1700000003.M3P1.h,S=40", ""]);
    await mb.close();
  });

  test("mail delivered after the first scan is appended to the list", async () => {
    const mb = await store.open("lx");
    const delivery = new MaildirDelivery(dataDir);
    await delivery.deliverLocal(["lx"], msg(1));
    await delivery.deliverLocal(["lx"], msg(2));
    await new Promise((r) => setTimeout(r, 20));
    await mb.sync();
    expect(mb.messages().map((m) => m.uid)).toEqual([1, 2]);
    const lines = (await fs.readFile(path.join(maildirRoot(dataDir, "lx"), "dovecot-uidlist"), "utf8")).trim().split("\n");
    expect(lines.slice(1).map((l) => l.split(" :")[0])).toEqual(["1", "2"]);
    expect(lines.slice(1).map((l) => l.split(" :")[1])).toEqual(mb.messages().map((m) => m.key));
    // An expunge rewrites the (small) list without the record.
    const key2 = mb.messages()[1]!.key;
    expect(await mb.expunge([1])).toEqual([1]);
    const after = (await fs.readFile(path.join(maildirRoot(dataDir, "lx"), "dovecot-uidlist"), "utf8")).split("\n");
    expect(after[0]).toMatch(/^3 V\d+ N3 G[0-9a-f]{32}$/);
    expect(after.slice(1)).toEqual([`2 :${key2}`, ""]);
    await mb.close();
  });
});
