/**
 * Mailbox commands over a raw socket: CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST
 * (with LIST-EXTENDED, SPECIAL-USE, CHILDREN, LIST-STATUS), LSUB, STATUS, and mailbox names
 * (modified UTF-7, UTF-8 after ENABLE IMAP4rev2, names that try to leave the Maildir).
 */
import { existsSync, readdirSync } from "node:fs";
import * as path from "node:path";
import { type ImapEnv, message, RawImap, startImapEnv } from "./imap-helpers";

let env: ImapEnv;
beforeAll(async () => {
  env = await startImapEnv();
});
afterAll(() => env.cleanup());

async function session(user = "lx"): Promise<RawImap> {
  const c = await RawImap.connect(env.port);
  await c.login(user);
  return c;
}

/** The raw client reads latin1; this is how UTF-8 text looks there. */
const u8 = (s: string) => Buffer.from(s, "utf8").toString("latin1");
const listNames = (untagged: string[]) => untagged.map((u) => /"\/" (.*)$/.exec(u)?.[1]);

describe("LIST and the special-use folders", () => {
  test("a new user has INBOX, Drafts, Sent, Trash and Junk with special-use attributes", async () => {
    const c = await session("lei");
    const r = await c.cmd('LIST "" "*"');
    expect(r.untagged).toEqual([
      '* LIST (\\HasNoChildren) "/" "INBOX"',
      '* LIST (\\HasNoChildren \\Drafts) "/" "Drafts"',
      '* LIST (\\HasNoChildren \\Junk) "/" "Junk"',
      '* LIST (\\HasNoChildren \\Sent) "/" "Sent"',
      '* LIST (\\HasNoChildren \\Trash) "/" "Trash"',
    ]);
    const su = await c.cmd('LIST (SPECIAL-USE) "" "*"');
    expect(listNames(su.untagged)).toEqual(['"Drafts"', '"Junk"', '"Sent"', '"Trash"']);
    const ret = await c.cmd('LIST "" "%" RETURN (SPECIAL-USE SUBSCRIBED CHILDREN)');
    expect(ret.untagged).toContain('* LIST (\\HasNoChildren \\Subscribed \\Sent) "/" "Sent"');
    const delim = await c.cmd('LIST "" ""');
    expect(delim.untagged).toEqual(['* LIST (\\Noselect) "/" ""']);
    c.close();
  });

  test("patterns, references, INBOX case-insensitivity and several patterns", async () => {
    const c = await session();
    for (const n of ["Work", "Work/2024", "Work/2024/Q1", "Play"]) expect((await c.cmd(`CREATE ${n}`)).status).toMatch(/OK/);
    expect(listNames((await c.cmd('LIST "" "%"')).untagged)).toEqual([
      '"INBOX"',
      '"Drafts"',
      '"Junk"',
      '"Play"',
      '"Sent"',
      '"Trash"',
      '"Work"',
    ]);
    expect(listNames((await c.cmd('LIST "Work/" "%"')).untagged)).toEqual(['"Work/2024"']);
    expect(listNames((await c.cmd('LIST "" "Work/*"')).untagged)).toEqual(['"Work/2024"', '"Work/2024/Q1"']);
    expect(listNames((await c.cmd('LIST "" "inbox"')).untagged)).toEqual(['"INBOX"']);
    expect(listNames((await c.cmd('LIST "" ("Play" "Work")')).untagged)).toEqual(['"Play"', '"Work"']);
    const attrs = (await c.cmd('LIST "" "Work*"')).untagged;
    expect(attrs[0]).toBe('* LIST (\\HasChildren) "/" "Work"');
    expect(attrs[2]).toBe('* LIST (\\HasNoChildren) "/" "Work/2024/Q1"');
    const status = await c.cmd('LIST "" "Sent" RETURN (STATUS (MESSAGES UIDNEXT UNSEEN))');
    expect(status.untagged[1]).toMatch(/^\* STATUS "Sent" \(MESSAGES \d+ UIDNEXT \d+ UNSEEN \d+\)$/);
    expect((await c.cmd('LIST (BOGUS) "" "*"')).status).toMatch(/BAD/);
    expect((await c.cmd('LIST "" "*" RETURN (BOGUS)')).status).toMatch(/BAD/);
    c.close();
  });
});

describe("CREATE, DELETE, RENAME", () => {
  test("CREATE makes a Maildir++ folder; duplicates and INBOX are refused", async () => {
    const c = await session();
    expect((await c.cmd("CREATE Projects/")).status).toMatch(/^A\d+ OK/);
    expect(existsSync(path.join(env.dataDir, "mail", "lx", ".Projects", "cur"))).toBe(true);
    expect((await c.cmd("CREATE Projects")).status).toMatch(/NO \[ALREADYEXISTS\]/);
    expect((await c.cmd("CREATE inbox")).status).toMatch(/NO \[ALREADYEXISTS\]/);
    // missing superiors are created too
    expect((await c.cmd("CREATE a/b/c")).status).toMatch(/OK/);
    expect(listNames((await c.cmd('LIST "" "a*"')).untagged)).toEqual(['"a"', '"a/b"', '"a/b/c"']);
    c.close();
  });

  test("names that could leave the Maildir are refused", async () => {
    const c = await session();
    for (const bad of [
      '"a*b"',
      '"50%"',
      `"${"&ZeVnLIqe-".repeat(30)}"`,
      '".."',
      '"../../etc"',
      '"a/../b"',
      '"/abs"',
      '"x.y"',
      '"a\\\\b"',
      '"a//b"',
      '"~root"',
    ]) {
      const r = await c.cmd(`CREATE ${bad}`);
      expect(r.status).toMatch(/^A\d+ NO \[CANNOT\]/);
    }
    expect((await c.cmd('SELECT "../lei"')).status).toMatch(/NO \[CANNOT\]/);
    expect((await c.cmd('RENAME Sent "../x"')).status).toMatch(/NO \[CANNOT\]/);
    expect((await c.cmd('STATUS "../../x" (MESSAGES)')).status).toMatch(/NO \[CANNOT\]/);
    c.write('A50 APPEND "a/../../b" {3}\r\n');
    expect(await c.response()).toMatch(/^\+ /);
    c.write("x\r\n\r\n");
    expect((await c.collect("A50")).status).toMatch(/^A50 NO \[CANNOT\]/);
    expect(readdirSync(path.join(env.dataDir, "mail"))).toEqual(expect.arrayContaining(["lx"]));
    expect(existsSync(path.join(env.dataDir, "x"))).toBe(false);
    c.close();
  });

  test("DELETE removes the folder; INBOX and missing ones are refused; inferiors stay", async () => {
    const c = await session();
    await c.cmd("CREATE Old/Keep");
    expect((await c.cmd("DELETE Old")).status).toMatch(/OK/);
    expect((await c.cmd('LIST "" "Old*"')).untagged).toEqual([
      '* LIST (\\Noselect \\HasChildren) "/" "Old"',
      '* LIST (\\HasNoChildren) "/" "Old/Keep"',
    ]);
    expect((await c.cmd("DELETE INBOX")).status).toMatch(/NO \[CANNOT\]/);
    expect((await c.cmd("DELETE Nope")).status).toMatch(/NO \[NONEXISTENT\]/);
    c.close();
  });

  test("RENAME moves a folder with its inferiors; RENAME INBOX moves the messages", async () => {
    await env.deliver("lx", message("to be moved by rename"));
    const c = await session();
    await c.cmd("CREATE R1/sub");
    expect((await c.cmd("RENAME R1 R2")).status).toMatch(/OK/);
    expect(listNames((await c.cmd('LIST "" "R*"')).untagged)).toEqual(['"R2"', '"R2/sub"']);
    expect((await c.cmd("RENAME R2 Sent")).status).toMatch(/NO \[ALREADYEXISTS\]/);
    expect((await c.cmd("RENAME Nope X")).status).toMatch(/NO \[NONEXISTENT\]/);
    expect((await c.cmd("RENAME R2 R2/inside")).status).toMatch(/NO \[CANNOT\]/);
    const before = await c.cmd("STATUS INBOX (MESSAGES)");
    const count = Number(/MESSAGES (\d+)/.exec(before.untagged[0]!)![1]);
    expect(count).toBeGreaterThan(0);
    expect((await c.cmd("RENAME INBOX Archive/Old-Inbox")).status).toMatch(/OK/);
    expect((await c.cmd("STATUS INBOX (MESSAGES)")).untagged[0]).toBe('* STATUS "INBOX" (MESSAGES 0)');
    expect((await c.cmd('STATUS "Archive/Old-Inbox" (MESSAGES)')).untagged[0]).toBe(`* STATUS "Archive/Old-Inbox" (MESSAGES ${count})`);
    c.close();
  });
});

describe("SUBSCRIBE, UNSUBSCRIBE, LSUB", () => {
  test("subscriptions show in LSUB and LIST (SUBSCRIBED)", async () => {
    const c = await session();
    await c.cmd("CREATE Lists/ietf");
    expect((await c.cmd("SUBSCRIBE Lists/ietf")).status).toMatch(/OK/);
    expect((await c.cmd('LSUB "" "*"')).untagged).toContain('* LSUB () "/" "Lists/ietf"');
    // `%` shows the unsubscribed superior as \Noselect (RFC 3501 §6.3.9)
    expect((await c.cmd('LSUB "" "List%"')).untagged).toEqual(['* LSUB (\\Noselect) "/" "Lists"']);
    const sub = await c.cmd('LIST (SUBSCRIBED) "" "Lists*"');
    expect(sub.untagged).toEqual(['* LIST (\\HasNoChildren \\Subscribed) "/" "Lists/ietf"']);
    const rec = await c.cmd('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"');
    expect(rec.untagged).toContain('* LIST (\\HasChildren) "/" "Lists" ("CHILDINFO" ("SUBSCRIBED"))');
    expect((await c.cmd("UNSUBSCRIBE Lists/ietf")).status).toMatch(/OK/);
    expect((await c.cmd('LSUB "" "Lists*"')).untagged).toEqual([]);
    expect((await c.cmd('SUBSCRIBE "../x"')).status).toMatch(/NO \[CANNOT\]/);
    c.close();
  });
});

describe("STATUS", () => {
  test("counts from the index", async () => {
    await env.deliver("lei", message("status one"));
    await env.deliver("lei", message("status two"));
    const c = await session("lei");
    const r = await c.cmd("STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE HIGHESTMODSEQ)");
    expect(r.untagged[0]).toMatch(
      /^\* STATUS "INBOX" \(MESSAGES 2 RECENT 0 UIDNEXT 3 UIDVALIDITY \d+ UNSEEN 2 DELETED 0 SIZE \d+ HIGHESTMODSEQ \d+\)$/,
    );
    expect((await c.cmd("STATUS Nope (MESSAGES)")).status).toMatch(/NO \[NONEXISTENT\]/);
    expect((await c.cmd("STATUS INBOX (BOGUS)")).status).toMatch(/BAD/);
    expect((await c.cmd("STATUS INBOX ()")).status).toMatch(/BAD/);
    c.close();
  });
});

describe("international names", () => {
  test("modified UTF-7 on the wire, UTF-8 on request (IMAP4rev2)", async () => {
    const c = await session();
    expect((await c.cmd('CREATE "Entw&APw-rfe"')).status).toMatch(/OK/);
    expect(listNames((await c.cmd('LIST "" "Entw*"')).untagged)).toEqual(['"Entw&APw-rfe"']);
    expect((await c.cmd('CREATE "bad&name"')).status).toMatch(/NO \[CANNOT\]/);
    expect((await c.cmd("ENABLE IMAP4rev2")).untagged).toEqual(["* ENABLED IMAP4rev2"]);
    expect(listNames((await c.cmd('LIST "" "Entw*"')).untagged)).toEqual([u8('"Entwürfe"')]);
    c.write(`A99 CREATE "${"Grüße"}"\r\n`);
    expect((await c.collect("A99")).status).toMatch(/OK/);
    const sel = await c.cmd('SELECT "Grüße"');
    expect(sel.untagged).toContain(u8('* LIST () "/" "Grüße"'));
    expect(sel.untagged.some((u) => u.includes("RECENT"))).toBe(false);
    c.close();
    const d = await session();
    expect(listNames((await d.cmd('LIST "" "Gr*"')).untagged)).toEqual(['"Gr&APwA3w-e"']);
    d.close();
  });
});
