/**
 * State across sessions and time: two sessions on one mailbox (EXISTS, EXPUNGE, FETCH FLAGS at
 * the points RFC 3501 allows), IDLE with mail delivered by the SMTP delivery path, CONDSTORE and
 * QRESYNC (RFC 7162), IMAP4rev2 via ENABLE, and UIDs and flags surviving a restart.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { ensureUserMaildir } from "../store/maildir";
import { type ImapEnv, message, RawImap, startImapEnv } from "./imap-helpers";

let env: ImapEnv;
let n = 0;
beforeAll(async () => {
  env = await startImapEnv();
});
afterAll(() => env.cleanup());

async function session(): Promise<RawImap> {
  const c = await RawImap.connect(env.port);
  await c.login();
  return c;
}

async function folderWith(c: RawImap, count: number): Promise<string> {
  const name = `S${++n}`;
  await c.cmd(`CREATE ${name}`);
  for (let i = 1; i <= count; i++) {
    const m = message(`${name} message ${i}`);
    expect((await c.cmd(`APPEND ${name} {${m.length}+}\r\n${m}`)).status).toMatch(/OK/);
  }
  return name;
}

/** Polls with NOOP until an untagged response matches (changes from other processes take a moment). */
async function noopUntil(c: RawImap, re: RegExp, ms = 5000): Promise<string[]> {
  const seen: string[] = [];
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const r = await c.cmd("NOOP");
    seen.push(...r.untagged);
    if (seen.some((u) => re.test(u))) return seen;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`no ${re} in ${JSON.stringify(seen)}`);
}

describe("two concurrent sessions", () => {
  test("flag changes, expunges and new messages are reported where allowed", async () => {
    const a = await session();
    const b = await session();
    const name = await folderWith(a, 3);
    await a.cmd(`SELECT ${name}`);
    await b.cmd(`SELECT ${name}`);
    await a.cmd("STORE 2 +FLAGS (\\Flagged)");
    expect(await noopUntil(b, /FETCH/)).toContain("* 2 FETCH (FLAGS (\\Flagged))");
    // A expunges message 1; B is answering a FETCH by sequence number: no EXPUNGE then (RFC 3501 §7.4.1)
    await a.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)");
    expect((await a.cmd("EXPUNGE")).untagged).toEqual(["* 1 EXPUNGE"]);
    const f = await b.cmd("FETCH 2:3 (UID)");
    expect(f.untagged.filter((u) => u.includes("EXPUNGE"))).toEqual([]);
    expect(f.untagged).toContain("* 2 FETCH (UID 2)");
    const s = await b.cmd("SEARCH ALL");
    expect(s.untagged.filter((u) => u.includes("EXPUNGE"))).toEqual([]);
    expect((await b.cmd("NOOP")).untagged).toContain("* 1 EXPUNGE");
    // now B's numbering matches A's
    expect((await b.cmd("FETCH 1 (UID)")).untagged).toContain("* 1 FETCH (UID 2)");
    // a message appended by A shows up in B as EXISTS
    const m = message("late arrival");
    await a.cmd(`APPEND ${name} {${m.length}+}\r\n${m}`);
    expect(await noopUntil(b, /EXISTS/)).toContain("* 3 EXISTS");
    a.close();
    b.close();
  });

  test("a UID command may carry the EXPUNGE", async () => {
    const a = await session();
    const b = await session();
    const name = await folderWith(a, 2);
    await a.cmd(`SELECT ${name}`);
    await b.cmd(`SELECT ${name}`);
    await a.cmd("STORE 2 +FLAGS.SILENT (\\Deleted)");
    await a.cmd("EXPUNGE");
    const f = await b.cmd("UID FETCH 1:* (FLAGS)");
    expect(f.untagged).toContain("* 2 EXPUNGE");
    a.close();
    b.close();
  });
});

describe("another session changes the mailbox itself", () => {
  test("new keywords are announced with FLAGS; deleting the selected mailbox ends the session", async () => {
    const a = await session();
    const b = await session();
    const name = await folderWith(a, 1);
    await a.cmd(`SELECT ${name}`);
    await b.cmd(`SELECT ${name}`);
    await a.cmd("STORE 1 +FLAGS.SILENT (Invoice)");
    const seen = await noopUntil(b, /FETCH/);
    expect(seen).toContain("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft Invoice)");
    expect(seen).toContain("* 1 FETCH (FLAGS (Invoice))");
    await a.cmd("UNSELECT");
    expect((await a.cmd(`DELETE ${name}`)).status).toMatch(/OK/);
    b.write("Z1 NOOP\r\n");
    expect(await b.response()).toBe("Z1 OK NOOP completed");
    expect(await b.response()).toBe("* BYE Selected mailbox was deleted or renamed");
    expect(await b.waitClosed()).toBe(true);
    a.close();
  });
});

describe("a big folder", () => {
  test("SELECT, UID FETCH 1:* (UID FLAGS), SEARCH and ENVELOPE over 3000 messages", async () => {
    const root = await ensureUserMaildir(env.dataDir, "lei");
    const dir = path.join(root, ".Big");
    for (const d of ["cur", "new", "tmp"]) mkdirSync(path.join(dir, d), { recursive: true });
    const N = 3000;
    for (let i = 0; i < N; i++) {
      const body = `From: bulk${i}@example.org\r\nSubject: bulk ${i}\r\n\r\nmessage ${i}\r\n`;
      writeFileSync(path.join(dir, "cur", `${1700000000 + i}.M${i}P7.bulk,S=${body.length},W=${body.length}:2,${i % 2 ? "S" : ""}`), body);
    }
    const c = await RawImap.connect(env.port);
    await c.login("lei");
    const sel = await c.cmd("SELECT Big", 60000);
    expect(sel.untagged).toContain(`* ${N} EXISTS`);
    const f = await c.cmd("UID FETCH 1:* (UID FLAGS)", 60000);
    expect(f.untagged).toHaveLength(N);
    expect(f.untagged[0]).toBe("* 1 FETCH (UID 1 FLAGS ())");
    expect(f.untagged[N - 1]).toBe(`* ${N} FETCH (UID ${N} FLAGS (\\Seen))`);
    const s = await c.cmd("SEARCH UNSEEN", 60000);
    expect(s.untagged[0]!.split(" ").length - 2).toBe(N / 2);
    const e = await c.cmd("FETCH 1:* (ENVELOPE)", 60000);
    expect(e.untagged).toHaveLength(N);
    expect(e.untagged[N - 1]).toContain(`"bulk ${N - 1}"`);
    const h = await c.cmd(`SEARCH SUBJECT "bulk ${N - 1}"`, 60000);
    expect(h.untagged).toEqual([`* SEARCH ${N}`]);
    c.close();
  });
});

describe("IDLE", () => {
  test("mail delivered meanwhile is announced; DONE ends it", async () => {
    const c = await session();
    await c.cmd("SELECT INBOX");
    const before = Number(/(\d+) EXISTS/.exec((await c.cmd("NOOP")).untagged.join(" ") || "0 EXISTS")?.[1] ?? 0);
    void before;
    c.write("I1 IDLE\r\n");
    expect(await c.response()).toBe("+ idling");
    const t0 = Date.now();
    await env.deliver("lx", message("delivered during idle"));
    const r = await c.response(5000);
    expect(r).toMatch(/^\* \d+ EXISTS$/);
    expect(Date.now() - t0).toBeLessThan(5000);
    c.write("DONE\r\n");
    const done = await c.collect("I1");
    expect(done.status).toBe("I1 OK IDLE terminated");
    c.close();
  });

  test("flag changes by another session arrive during IDLE; IDLE works unselected; junk instead of DONE is BAD", async () => {
    const a = await session();
    const b = await session();
    const name = await folderWith(a, 1);
    await a.cmd(`SELECT ${name}`);
    await b.cmd(`SELECT ${name}`);
    b.write("I2 IDLE\r\n");
    expect(await b.response()).toBe("+ idling");
    await a.cmd("STORE 1 +FLAGS.SILENT (\\Answered)");
    expect(await b.response(5000)).toBe("* 1 FETCH (FLAGS (\\Answered))");
    b.write("DONE\r\n");
    expect((await b.collect("I2")).status).toMatch(/OK/);
    await b.cmd("UNSELECT");
    b.write("I3 IDLE\r\n");
    expect(await b.response()).toBe("+ idling");
    b.write("done\r\n");
    expect((await b.collect("I3")).status).toMatch(/OK/);
    b.write("I4 IDLE\r\n");
    expect(await b.response()).toBe("+ idling");
    b.write("NOOP\r\n");
    expect((await b.collect("I4")).status).toBe("I4 BAD Expected DONE");
    a.close();
    b.close();
  });
});

describe("CONDSTORE", () => {
  test("MODSEQ, CHANGEDSINCE, UNCHANGEDSINCE, SEARCH MODSEQ, HIGHESTMODSEQ", async () => {
    const c = await session();
    const name = await folderWith(c, 3);
    const sel = await c.cmd(`SELECT ${name} (CONDSTORE)`);
    const highest = BigInt(/HIGHESTMODSEQ (\d+)/.exec(sel.untagged.join("\n"))![1]!);
    const f = await c.cmd("FETCH 1:* (MODSEQ)");
    const mods = f.untagged.map((u) => BigInt(/MODSEQ \((\d+)\)/.exec(u)![1]!));
    expect(mods).toHaveLength(3);
    for (const m of mods) expect(m <= highest).toBe(true);
    const st = await c.cmd("STORE 2 +FLAGS (\\Seen)");
    const m2 = BigInt(/MODSEQ \((\d+)\)/.exec(st.untagged[0]!)![1]!);
    expect(m2 > highest).toBe(true);
    expect(st.untagged[0]).toBe(`* 2 FETCH (FLAGS (\\Seen) MODSEQ (${m2}))`);
    const changed = await c.cmd(`FETCH 1:* (FLAGS) (CHANGEDSINCE ${highest})`);
    expect(changed.untagged).toEqual([`* 2 FETCH (FLAGS (\\Seen) MODSEQ (${m2}))`]);
    const cond = await c.cmd(`STORE 1:3 (UNCHANGEDSINCE ${highest}) +FLAGS.SILENT (\\Flagged)`);
    expect(cond.status).toMatch(/^A\d+ OK \[MODIFIED 2\]/);
    expect(cond.untagged.every((u) => /^\* [13] FETCH \(MODSEQ \(\d+\)\)$/.test(u))).toBe(true);
    const uidCond = await c.cmd(`UID STORE 2 (UNCHANGEDSINCE 1) -FLAGS (\\Seen)`);
    expect(uidCond.status).toMatch(/OK \[MODIFIED 2\]/);
    const s = await c.cmd(`SEARCH MODSEQ ${m2}`);
    expect(s.untagged[0]).toMatch(/^\* SEARCH 1 2 3 \(MODSEQ \d+\)$/);
    const status = await c.cmd(`STATUS ${name} (HIGHESTMODSEQ)`);
    expect(BigInt(/HIGHESTMODSEQ (\d+)/.exec(status.untagged[0]!)![1]!) > m2).toBe(true);
    expect((await c.cmd("FETCH 1 (FLAGS) (CHANGEDSINCE x)")).status).toMatch(/BAD/);
    c.close();
  });
});

describe("QRESYNC", () => {
  test("SELECT (QRESYNC ...) reports VANISHED (EARLIER) and changed flags; EXPUNGE becomes VANISHED", async () => {
    const c = await session();
    const name = await folderWith(c, 5);
    expect((await c.cmd("ENABLE QRESYNC")).untagged).toEqual(["* ENABLED QRESYNC"]);
    const sel = await c.cmd(`SELECT ${name}`);
    const uv = /UIDVALIDITY (\d+)/.exec(sel.untagged.join("\n"))![1];
    const ms = /HIGHESTMODSEQ (\d+)/.exec(sel.untagged.join("\n"))![1];
    // changes the client will miss
    const other = await session();
    await other.cmd(`SELECT ${name}`);
    await other.cmd("STORE 2,4 +FLAGS.SILENT (\\Deleted)");
    await other.cmd("EXPUNGE");
    await other.cmd("STORE 3 +FLAGS.SILENT (\\Flagged)");
    other.close();
    await c.cmd("UNSELECT");
    const r = await c.cmd(`SELECT ${name} (QRESYNC (${uv} ${ms} 1:5))`);
    expect(r.untagged).toContain("* VANISHED (EARLIER) 2,4");
    expect(r.untagged).toContainEqual(expect.stringMatching(/^\* 3 FETCH \(UID 5 FLAGS \(\\Flagged\) MODSEQ \(\d+\)\)$/));
    // selecting again closes the previous mailbox with [CLOSED]
    const again = await c.cmd(`SELECT ${name} (QRESYNC (${uv} ${ms}))`);
    expect(again.untagged[0]).toBe("* OK [CLOSED] Previous mailbox closed");
    expect(again.untagged).toContain("* VANISHED (EARLIER) 2,4");
    const wrong = await c.cmd(`SELECT ${name} (QRESYNC (1 ${ms}))`);
    expect(wrong.untagged.some((u) => u.includes("VANISHED"))).toBe(false);
    const v = await c.cmd(`UID FETCH 1:* (FLAGS) (CHANGEDSINCE ${ms} VANISHED)`);
    expect(v.untagged[0]).toBe("* VANISHED (EARLIER) 2,4");
    await c.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)");
    const e = await c.cmd("EXPUNGE");
    expect(e.untagged).toEqual(["* VANISHED 1"]);
    expect(e.status).toMatch(/OK \[HIGHESTMODSEQ \d+\]/);
    c.close();
    const plain = await session();
    expect((await plain.cmd(`SELECT ${name} (QRESYNC (${uv} ${ms}))`)).status).toMatch(/BAD/);
    plain.close();
  });
});

describe("IMAP4rev2 via ENABLE", () => {
  test("no RECENT, LIST in SELECT, ESEARCH answers", async () => {
    const c = await session();
    const name = await folderWith(c, 2);
    await c.cmd("ENABLE IMAP4rev2");
    const sel = await c.cmd(`SELECT ${name}`);
    expect(sel.untagged.some((u) => /RECENT|UNSEEN/.test(u))).toBe(false);
    expect(sel.untagged).toContain(`* LIST () "/" "${name}"`);
    expect((await c.cmd("SEARCH ALL")).untagged[0]).toMatch(/^\* ESEARCH \(TAG "A\d+"\) ALL 1:2$/);
    expect((await c.cmd("UID SEARCH ALL")).untagged[0]).toMatch(/^\* ESEARCH \(TAG "A\d+"\) UID ALL 1:2$/);
    c.close();
  });
});

describe("restart", () => {
  test("UIDVALIDITY, UIDs, UIDNEXT and flags persist", async () => {
    const c = await session();
    const name = await folderWith(c, 3);
    await env.deliver("lx", message("persist me"));
    const sel = await c.cmd(`SELECT ${name}`);
    await c.cmd("STORE 2 +FLAGS (\\Answered Custom)");
    await c.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)");
    await c.cmd("EXPUNGE");
    const before = (await c.cmd("UID FETCH 1:* (FLAGS)")).untagged;
    const inbox = (await c.cmd("EXAMINE INBOX")).untagged.filter((u) => /UIDVALIDITY|UIDNEXT|EXISTS/.test(u));
    c.close();
    await env.restart();
    const d = await session();
    const sel2 = await d.cmd(`SELECT ${name}`);
    const pick = (u: string[], re: RegExp) => u.find((x) => re.test(x));
    expect(pick(sel2.untagged, /UIDVALIDITY/)).toBe(pick(sel.untagged, /UIDVALIDITY/));
    expect(pick(sel2.untagged, /UIDNEXT/)).toBe("* OK [UIDNEXT 4] Predicted next UID");
    expect((await d.cmd("UID FETCH 1:* (FLAGS)")).untagged).toEqual(before);
    expect(before).toEqual(["* 1 FETCH (UID 2 FLAGS (\\Answered Custom))", "* 2 FETCH (UID 3 FLAGS ())"]);
    expect((await d.cmd("EXAMINE INBOX")).untagged.filter((u) => /UIDVALIDITY|UIDNEXT|EXISTS/.test(u))).toEqual(inbox);
    d.close();
  });
});
