/**
 * The folder index under IMAP, on folders others wrote too (store/index-folder.ts):
 *
 * - INTERNALDATE is the message file's mtime, as in Dovecot, read when a client first asks (not
 *   while a folder is scanned) and kept across restarts; a file name's own timestamp is never
 *   taken for it (names made before the write, COPY's new names, APPEND dates, `touch`);
 * - RFC822.SIZE comes from W= in the name, else from reading the file once;
 * - the per-message cache keeps small values (SEARCH's fields) for every message, in memory and
 *   in the cache file, and big ones (MIME trees) in memory for the most recently used only,
 *   within `cacheBudget` (computed again after an eviction or a restart).
 *
 * A new process is simulated by forgetting the in-memory indexes between two servers.
 */
import { promises as fs, statSync } from "node:fs";
import * as path from "node:path";
import { startImap } from "../imap";
import { formatDateTime } from "../imap/compiler";
import { silentLogger } from "../lib/log";
import type { RunningService } from "../lib/service";
import { MaildirDelivery } from "../store/deliver";
import { CACHE_FILE, flushAllIndexes, forgetIndexes, INDEX_FILE } from "../store/index-folder";
import type { MaildirMailbox } from "../store/mailbox";
import { maildirRoot } from "../store/maildir";
import { MaildirStore } from "../store/mailstore";
import { testStack } from "./helpers/stack";
import { message, RawImap } from "./imap-helpers";

const CACHE_BUDGET = 16 * 1024;

let dataDir: string;
let config: ReturnType<typeof testStack>["config"];
let store: MaildirStore;
let service: RunningService;
let port: number;
let n = 0;

async function boot(): Promise<void> {
  store = new MaildirStore(dataDir, { cacheBudget: CACHE_BUDGET });
  service = await startImap(config, { log: silentLogger, store });
  port = service.listeners.find((l) => l.name === "imap")!.port;
}

/** Stops the server and drops every in-memory index: the next server starts as a new process would. */
async function restart(): Promise<void> {
  await service.close();
  await flushAllIndexes();
  forgetIndexes(dataDir);
  await boot();
}

beforeAll(async () => {
  ({ config, dataDir } = testStack({ listen: ["imap", "imaps"], prefix: "mailstack-imap-index-" }));
  await boot();
});

afterAll(async () => {
  await service.close();
  await flushAllIndexes();
  forgetIndexes(dataDir);
  await fs.rm(dataDir, { recursive: true, force: true });
});

async function session(user = "lx"): Promise<RawImap> {
  const c = await RawImap.connect(port);
  await c.login(user);
  return c;
}

/** A new folder; returns its name and Maildir directory. */
async function newFolder(c: RawImap): Promise<{ name: string; dir: string }> {
  const name = `Idx${++n}`;
  expect((await c.cmd(`CREATE ${name}`)).status).toMatch(/OK/);
  return { name, dir: path.join(maildirRoot(dataDir, "lx"), `.${name}`) };
}

async function writeMail(dir: string, file: string, data: string | Buffer, mtime?: Date): Promise<string> {
  const p = path.join(dir, "cur", file);
  await fs.writeFile(p, data);
  if (mtime) await fs.utimes(p, mtime, mtime);
  return p;
}

const quotedDate = (d: Date) => formatDateTime(d);
const crlf = (s: string) => s.replace(/\r?\n/g, "\r\n");

describe("INTERNALDATE", () => {
  test("is the file's mtime, read when first asked for, not the name's time", async () => {
    const c = await session();
    const { name, dir } = await newFolder(c);
    // Dovecot-style name whose time (2020-09-13) is not the file's mtime.
    const dovecotName = `1600000000.M1P1.otherhost,S=${message("dovecot").length},W=${message("dovecot").length}:2,S`;
    const p1 = await writeMail(dir, dovecotName, message("dovecot"), new Date("2001-02-03T04:05:06Z"));
    // A name without time, size or flags (written by some other program), LF line ends.
    const lf = "From: a@example.org\nSubject: foreign\n\nline one\nline two\n";
    await writeMail(dir, "foreign-message", lf, new Date("2010-05-06T07:08:09Z"));
    const sel = await c.cmd(`SELECT ${name}`);
    expect(sel.untagged).toContain("* 2 EXISTS");
    // Scanning read no mtime: a change made now is what FETCH reports.
    const later = new Date("2002-03-04T05:06:07Z");
    await fs.utimes(p1, later, later);
    const f = await c.cmd("FETCH 1:* (INTERNALDATE RFC822.SIZE FLAGS)");
    expect(f.untagged).toEqual([
      `* 1 FETCH (INTERNALDATE ${quotedDate(later)} RFC822.SIZE ${message("dovecot").length} FLAGS (\\Seen))`,
      `* 2 FETCH (INTERNALDATE ${quotedDate(new Date("2010-05-06T07:08:09Z"))} RFC822.SIZE ${crlf(lf).length} FLAGS ())`,
    ]);
    expect((await c.cmd("SEARCH BEFORE 1-Jan-2003")).untagged).toEqual(["* SEARCH 1"]);
    expect((await c.cmd("SEARCH SINCE 1-Jan-2010")).untagged).toEqual(["* SEARCH 2"]);
    expect((await c.cmd("SEARCH ON 6-May-2010")).untagged).toEqual(["* SEARCH 2"]);
    c.close();
    // Kept in the index file: a new process reports the same without the files' help.
    await restart();
    const d = await session();
    await d.cmd(`SELECT ${name}`);
    expect((await d.cmd("FETCH 1:* (INTERNALDATE RFC822.SIZE FLAGS)")).untagged).toEqual(f.untagged);
    d.close();
  });

  test("of delivered mail is what a stat of its file says, also when first read after a restart", async () => {
    const delivery = new MaildirDelivery(dataDir);
    await delivery.deliverLocal(["lei"], Buffer.from(message("delivered 1")));
    await new Promise((r) => setTimeout(r, 1100)); // another second
    await delivery.deliverLocal(["lei"], Buffer.from(message("delivered 2")));
    const c = await session("lei");
    expect((await c.cmd("SELECT INBOX")).untagged).toContain("* 2 EXISTS");
    c.close();
    // Nobody asked for the dates yet: the new process reads them.
    await restart();
    const d = await session("lei");
    await d.cmd("SELECT INBOX");
    const f = await d.cmd("FETCH 1:2 (INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    const cur = path.join(maildirRoot(dataDir, "lei"), "cur");
    const bySubject = new Map<string, string>();
    for (const file of await fs.readdir(cur)) {
      const subject = /Subject: (.*)\r\n/.exec(await fs.readFile(path.join(cur, file), "utf8"))![1]!;
      bySubject.set(subject, quotedDate(statSync(path.join(cur, file)).mtime));
    }
    expect(f.untagged.map((l) => [/Subject: (.*)\r\n/.exec(l)![1], /INTERNALDATE ("[^"]+")/.exec(l)![1]])).toEqual([
      ["delivered 1", bySubject.get("delivered 1")],
      ["delivered 2", bySubject.get("delivered 2")],
    ]);
    d.close();
  });

  test("APPEND's date and COPY keep INTERNALDATE (a copy's new name has another time)", async () => {
    const c = await session();
    const { name } = await newFolder(c);
    const { name: other } = await newFolder(c);
    const m = message("dated");
    expect((await c.cmd(`APPEND ${name} "07-Aug-2015 10:11:12 +0000" {${m.length}+}\r\n${m}`)).status).toMatch(/OK/);
    await c.cmd(`SELECT ${name}`);
    expect((await c.cmd("FETCH 1 (INTERNALDATE)")).untagged).toEqual(['* 1 FETCH (INTERNALDATE " 7-Aug-2015 10:11:12 +0000")']);
    expect((await c.cmd(`COPY 1 ${other}`)).status).toMatch(/OK/);
    c.close();
    await restart();
    const d = await session();
    await d.cmd(`SELECT ${other}`);
    expect((await d.cmd("FETCH 1 (INTERNALDATE)")).untagged).toEqual(['* 1 FETCH (INTERNALDATE " 7-Aug-2015 10:11:12 +0000")']);
    d.close();
  });

  test("index file: written for a folder, with INTERNALDATEs once known", async () => {
    const c = await session();
    const { name, dir } = await newFolder(c);
    for (let i = 0; i < 3; i++)
      await writeMail(dir, `170000000${i}.M${i}P9.host,S=10,W=10:2,`, "Subject: x\r\n\r\n", new Date(Date.UTC(2011, 0, i + 1)));
    await c.cmd(`SELECT ${name}`);
    await c.cmd("FETCH 2 (INTERNALDATE)");
    await c.cmd("UNSELECT");
    c.close();
    await flushAllIndexes();
    const lines = (await fs.readFile(path.join(dir, INDEX_FILE), "utf8")).trim().split("\n");
    expect(JSON.parse(lines[0]!)).toMatchObject({ v: 2, count: 3 });
    // uid, dir, file, size, mtime (empty until somebody asked), modseq
    expect(lines.slice(1).map((l) => l.split("\t")[4])).toEqual(["", String(Date.UTC(2011, 0, 2)), ""]);
  });
});

describe("dovecot-uidlist", () => {
  test("extension fields (W= sizes, GUIDs) serve names without W= and survive our rewrites", async () => {
    const c = await session();
    const { name, dir } = await newFolder(c);
    await c.cmd("UNSELECT");
    const m1 = "From: a@example.org\nSubject: postfix 1\n\nbody one\n";
    const m2 = "From: b@example.org\nSubject: postfix 2\n\nbody two\n";
    // Names as Postfix's virtual(8) makes them: no S=, no W=.
    await writeMail(dir, "1700000000.V801I11M1.mail.lx.com:2,S", m1);
    await writeMail(dir, "1700000001.V801I12M2.mail.lx.com:2,", m2);
    await fs.writeFile(
      path.join(dir, "dovecot-uidlist"),
      `3 V1699999999 N9 G0123456789abcdef0123456789abcdef\n3 W${crlf(m1).length} :1700000000.V801I11M1.mail.lx.com\n` +
        `4 W${crlf(m2).length} G00112233445566778899aabbccddeeff :1700000001.V801I12M2.mail.lx.com\n`,
    );
    await c.cmd(`SELECT ${name}`);
    expect((await c.cmd("UID FETCH 1:* (RFC822.SIZE)")).untagged).toEqual([
      `* 1 FETCH (UID 3 RFC822.SIZE ${crlf(m1).length})`,
      `* 2 FETCH (UID 4 RFC822.SIZE ${crlf(m2).length})`,
    ]);
    // Expunging rewrites the list (few records, one dead): the other record keeps its fields.
    await c.cmd("UID STORE 3 +FLAGS.SILENT (\\Deleted)");
    expect((await c.cmd("EXPUNGE")).untagged).toEqual(["* 1 EXPUNGE"]);
    const list = await fs.readFile(path.join(dir, "dovecot-uidlist"), "utf8");
    expect(list).toMatch(/^3 V1699999999 N9 G0123456789abcdef0123456789abcdef\n/);
    expect(list.split("\n").slice(1)).toEqual([
      `4 W${crlf(m2).length} G00112233445566778899aabbccddeeff :1700000001.V801I12M2.mail.lx.com`,
      "",
    ]);
    c.close();
  });
});

describe("SEARCH reads headers, not whole messages", () => {
  test("fields after a 16 KiB prefix of a long header are found", async () => {
    const c = await session();
    const { name, dir } = await newFolder(c);
    const filler = Array.from({ length: 40 }, (_, i) => `X-Filler-${i}: ${"f".repeat(1000)}`);
    const long = message("long header needle", ["body needle"], filler);
    // The Subject comes after 40 KB of other fields.
    const moved = long.replace(/^Subject: .*\r\n/m, "").replace("\r\n\r\n", "\r\nSubject: long header needle\r\nX-Last: end\r\n\r\n");
    await writeMail(dir, `1700000001.M1P1.host,S=${moved.length},W=${moved.length}:2,`, moved);
    // LF line ends, and a message that is all header (no blank line).
    await writeMail(dir, "1700000002.M2P1.host:2,", "From: Lf Sender <lf@example.org>\nSubject: lf needle\n\nbody\n");
    await writeMail(dir, "1700000003.M3P1.host:2,", "From: x@example.org\r\nSubject: headeronly needle\r\n");
    await c.cmd(`SELECT ${name}`);
    expect((await c.cmd('SEARCH SUBJECT "needle"')).untagged).toEqual(["* SEARCH 1 2 3"]);
    expect((await c.cmd('SEARCH SUBJECT "header needle"')).untagged).toEqual(["* SEARCH 1"]);
    expect((await c.cmd("SEARCH FROM lf@example.org")).untagged).toEqual(["* SEARCH 2"]);
    expect((await c.cmd('SEARCH FROM "Lf Sender"')).untagged).toEqual(["* SEARCH 2"]);
    expect((await c.cmd("SEARCH HEADER X-Last end")).untagged).toEqual(["* SEARCH 1"]);
    expect((await c.cmd("SEARCH BODY needle")).untagged).toEqual(["* SEARCH 1"]);
    // Again (from the cache), and after a restart (from the cache file).
    expect((await c.cmd('SEARCH SUBJECT "needle"')).untagged).toEqual(["* SEARCH 1 2 3"]);
    // The store's header reader: a 16 KiB first read, extended to the end of this 41 KB header.
    const mb = (await store.open("lx", name)) as MaildirMailbox;
    try {
      const header = await mb.index.readHeader(mb.messages()[0]!.uid);
      expect(header.toString()).toBe(moved.slice(0, moved.indexOf("\r\n\r\n") + 4));
      expect(header.length).toBeGreaterThan(40_000);
      expect((await mb.index.readHeader(mb.messages()[1]!.uid)).toString()).toBe(
        "From: Lf Sender <lf@example.org>\r\nSubject: lf needle\r\n\r\n",
      );
      expect((await mb.index.readHeader(mb.messages()[2]!.uid)).toString()).toBe("From: x@example.org\r\nSubject: headeronly needle\r\n");
    } finally {
      await mb.close();
    }
    c.close();
    await restart();
    const d = await session();
    await d.cmd(`SELECT ${name}`);
    expect((await d.cmd('SEARCH OR SUBJECT "lf needle" SUBJECT headeronly')).untagged).toEqual(["* SEARCH 2 3"]);
    expect((await d.cmd("SEARCH SENTON 6-Jan-2025 SUBJECT long")).untagged).toEqual(["* SEARCH 1"]);
    d.close();
  });
});

describe("cache", () => {
  /** A multipart message (its MIME tree is well over the small-value size). */
  const multipart = (i: number) =>
    message(
      `cached ${i}`,
      ["--b", "Content-Type: text/plain", "", `part one ${i}`, "--b", "Content-Type: text/html", "", `<p>${i}</p>`, "--b--"],
      ['Content-Type: multipart/alternative; boundary="b"', "MIME-Version: 1.0"],
    );

  test("big values stay within the budget, small ones for every message; the file holds small ones only", async () => {
    const c = await session();
    const { name, dir } = await newFolder(c);
    const count = 200;
    for (let i = 1; i <= count; i++) {
      const m = multipart(i);
      await writeMail(dir, `17000${String(i).padStart(5, "0")}.M${i}P1.host,S=${m.length},W=${m.length}:2,`, m);
    }
    await c.cmd(`SELECT ${name}`);
    const first = await c.cmd("FETCH 1:* (BODYSTRUCTURE ENVELOPE)");
    expect(first.untagged).toHaveLength(count);
    expect(first.untagged[0]).toMatch(/^\* 1 FETCH \(BODYSTRUCTURE \(\("TEXT" "PLAIN"/);
    expect((await c.cmd('SEARCH SUBJECT "cached 17"')).untagged).toEqual([
      `* SEARCH 17 ${Array.from({ length: 10 }, (_, i) => 170 + i).join(" ")}`,
    ]);
    await flushAllIndexes();
    const size1 = (await fs.stat(path.join(dir, CACHE_FILE))).size;
    // The same answers after eviction (computed again), and the cache file does not grow.
    const again = await c.cmd("FETCH 1:* (BODYSTRUCTURE ENVELOPE)");
    expect(again.untagged).toEqual(first.untagged);
    await flushAllIndexes();
    expect((await fs.stat(path.join(dir, CACHE_FILE))).size).toBe(size1);
    const mb = (await store.open("lx", name)) as MaildirMailbox;
    try {
      const stats = mb.index.cacheStats();
      expect(stats.bigBytes).toBeLessThanOrEqual(CACHE_BUDGET);
      expect(stats.big).toBeGreaterThan(0);
      expect(stats.big).toBeLessThan(count);
      expect(stats.small).toBe(count); // SEARCH's fields, one per message
    } finally {
      await mb.close();
    }
    c.close();
  });

  test("after a restart small values come from the file, big ones are computed again", async () => {
    const c = await session();
    const { name, dir } = await newFolder(c);
    for (let i = 1; i <= 5; i++) {
      const m = multipart(i);
      await writeMail(dir, `17100${String(i).padStart(5, "0")}.M${i}P1.host,S=${m.length},W=${m.length}:2,`, m);
    }
    await c.cmd(`SELECT ${name}`);
    const tree = await c.cmd("FETCH 1:* (BODYSTRUCTURE)");
    await c.cmd('SEARCH SUBJECT "cached"');
    c.close();
    await restart();
    const size1 = (await fs.stat(path.join(dir, CACHE_FILE))).size;
    const d = await session();
    await d.cmd(`SELECT ${name}`);
    const mb = (await store.open("lx", name)) as MaildirMailbox;
    try {
      expect((await d.cmd('SEARCH SUBJECT "cached 3"')).untagged).toEqual(["* SEARCH 3"]);
      expect(mb.index.cacheStats()).toMatchObject({ small: 5, big: 0 });
      expect((await d.cmd("FETCH 1:* (BODYSTRUCTURE)")).untagged).toEqual(tree.untagged);
      expect(mb.index.cacheStats().big).toBe(5);
    } finally {
      await mb.close();
    }
    await flushAllIndexes();
    expect((await fs.stat(path.join(dir, CACHE_FILE))).size).toBe(size1);
    d.close();
  });

  test("a cache file mostly of gone messages (or of big values, from older versions) is compacted on load", async () => {
    const c = await session();
    const { name, dir } = await newFolder(c);
    const file = "1720000000.M1P1.host,S=20,W=20";
    await writeMail(dir, `${file}:2,`, "Subject: compact\r\n\r\nx\r\n");
    await c.cmd(`SELECT ${name}`);
    c.close();
    await restart();
    const lines: string[] = [];
    for (let i = 0; i < 1500; i++) lines.push(JSON.stringify([`gone.${i}`, "imap-search-1", "x"]));
    lines.push(JSON.stringify([file, "old-big-field", "y".repeat(4000)]));
    lines.push(JSON.stringify([file, "kept", "small"]));
    await fs.writeFile(path.join(dir, CACHE_FILE), `${lines.join("\n")}\n`);
    const mb = (await store.open("lx", name)) as MaildirMailbox;
    try {
      expect(await mb.cached(mb.messages()[0]!.uid, "kept", async () => "computed")).toBe("small");
    } finally {
      await mb.close();
    }
    expect(await fs.readFile(path.join(dir, CACHE_FILE), "utf8")).toBe(`${JSON.stringify([file, "kept", "small"])}\n`);
  });

  test("a long run of new values is written as it comes, and all of it comes back after a restart", async () => {
    const c = await session();
    const { name, dir } = await newFolder(c);
    c.close();
    const count = 1500;
    for (let i = 0; i < count; i++) await writeMail(dir, `1730000000.M${i}P1.host,S=12,W=12:2,`, "Subject: z\r\n\r\n");
    const value = (i: number) => `value ${i} ${"v".repeat(200)}`;
    let mb = (await store.open("lx", name)) as MaildirMailbox;
    try {
      for (const m of mb.messages()) await mb.cached(m.uid, "long-run", async () => value(m.uid));
      // More than 256 KiB of lines: most are on disk already, before any timer or flush.
      expect((await fs.stat(path.join(dir, CACHE_FILE))).size).toBeGreaterThan(200 * 1024);
    } finally {
      await mb.close();
    }
    await restart();
    mb = (await store.open("lx", name)) as MaildirMailbox;
    try {
      let computed = 0;
      for (const m of mb.messages())
        expect(
          await mb.cached(m.uid, "long-run", async () => {
            computed++;
            return "";
          }),
        ).toBe(value(m.uid));
      expect(computed).toBe(0);
      expect(mb.index.cacheStats().small).toBe(count);
    } finally {
      await mb.close();
    }
  });
});
