/**
 * Real clients against a live server: a Thunderbird-style session (its command sequence, over a
 * raw socket), the same flow through imapflow, Python's imaplib (plain, STARTTLS and IMAPS),
 * curl imap:// and imaps://, and a Maildir written the way Dovecot writes it.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { ensureUserMaildir } from "../store/maildir";
import { curl, flow, type ImapEnv, message, python, RawImap, startImapEnv } from "./imap-helpers";

let env: ImapEnv;
beforeAll(async () => {
  env = await startImapEnv();
});
afterAll(() => env.cleanup());

const THUNDERBIRD_HEADERS =
  "From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To";

test("a Thunderbird-style session", async () => {
  await env.deliver("lei", message("first for lei"));
  await env.deliver("lei", message("second for lei", ["Some text", "More text"]));
  const c = await RawImap.connect(env.port);
  expect((await c.cmd("capability")).untagged[0]).toMatch(/AUTH=PLAIN/);
  expect((await c.cmd('ID ("name" "Thunderbird" "version" "128.0")')).untagged[0]).toMatch(/^\* ID /);
  c.write("A3 authenticate PLAIN\r\n");
  expect(await c.response()).toBe("+ ");
  c.write(`${Buffer.from("\0lei\0lei-password").toString("base64")}\r\n`);
  expect((await c.collect("A3")).status).toMatch(/^A3 OK \[CAPABILITY .*CONDSTORE/);
  expect((await c.cmd("namespace")).untagged).toEqual(['* NAMESPACE (("" "/")) NIL NIL']);
  expect((await c.cmd("enable CONDSTORE")).untagged).toEqual(["* ENABLED CONDSTORE"]);
  const list = await c.cmd('list (subscribed) "" "*" return (special-use)');
  expect(list.untagged).toEqual(
    expect.arrayContaining([
      '* LIST (\\HasNoChildren \\Subscribed \\Sent) "/" "Sent"',
      '* LIST (\\HasNoChildren \\Subscribed \\Trash) "/" "Trash"',
    ]),
  );
  const sel = await c.cmd('select "INBOX" (CONDSTORE)');
  expect(sel.untagged).toContain("* 2 EXISTS");
  expect(sel.untagged.some((u) => /HIGHESTMODSEQ \d+/.test(u))).toBe(true);
  const flags = await c.cmd("UID fetch 1:* (FLAGS)");
  expect(flags.untagged).toEqual([
    expect.stringMatching(/^\* 1 FETCH \(UID 1 FLAGS \(\) MODSEQ \(\d+\)\)$|^\* 1 FETCH \(UID 1 FLAGS \(\)\)$/),
    expect.stringMatching(/^\* 2 FETCH \(UID 2 FLAGS \(\)/),
  ]);
  const headers = await c.cmd(`UID fetch 1:2 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (${THUNDERBIRD_HEADERS})])`);
  expect(headers.untagged).toHaveLength(2);
  expect(headers.untagged[1]).toMatch(
    /BODY\[HEADER.FIELDS \(From To .* Reply-To\)\] \{\d+\}\r\nFrom: Sender <sender@example.org>\r\nTo: lx@lx.com\r\nSubject: second for lei\r\n/,
  );
  const body = await c.cmd("UID fetch 2 (UID RFC822.SIZE BODY.PEEK[] BODYSTRUCTURE)");
  expect(body.untagged[0]).toContain("Some text\r\nMore text");
  expect(body.untagged[0]).toMatch(/BODYSTRUCTURE \("TEXT" "PLAIN" \("CHARSET" "us-ascii"\) NIL NIL "7BIT" \d+ 2 NIL NIL NIL NIL\)/);
  // IDLE, and a message delivered (the way SMTP delivers) meanwhile
  c.write("A10 IDLE\r\n");
  expect(await c.response()).toBe("+ idling");
  await env.deliver("lei", message("arrives while idle"));
  expect(await c.response(5000)).toBe("* 3 EXISTS");
  c.write("DONE\r\n");
  const done = await c.collect("A10");
  expect(done.status).toBe("A10 OK IDLE terminated");
  const sent = message("my reply");
  const app = await c.cmd(`append "Sent" (\\Seen) {${sent.length}+}\r\n${sent}`);
  expect(app.status).toMatch(/^A\d+ OK \[APPENDUID \d+ 1\]/);
  const mv = await c.cmd('UID move 1 "Trash"');
  expect(mv.untagged).toEqual([expect.stringMatching(/^\* OK \[COPYUID \d+ 1 1\]/), "* 1 EXPUNGE"]);
  const st = await c.cmd("UID store 2 +Flags (\\Deleted)");
  expect(st.untagged[0]).toMatch(/^\* 1 FETCH \(UID 2 FLAGS \(\\Deleted\) MODSEQ \(\d+\)\)$/);
  expect((await c.cmd("expunge")).untagged).toEqual(["* 1 EXPUNGE"]);
  expect((await c.cmd('STATUS "Trash" (MESSAGES)')).untagged).toEqual(['* STATUS "Trash" (MESSAGES 1)']);
  expect((await c.cmd('STATUS "Sent" (MESSAGES UNSEEN)')).untagged).toEqual(['* STATUS "Sent" (MESSAGES 1 UNSEEN 0)']);
  await c.cmd("logout");
  expect(await c.waitClosed()).toBe(true);
});

test("imapflow: list, fetch, idle, append, move, search, expunge", async () => {
  await env.deliver("lx", message("imapflow one"));
  const client = flow(env);
  await client.connect();
  try {
    const boxes = await client.list();
    expect(boxes.map((b) => [b.path, b.specialUse ?? null])).toEqual(
      expect.arrayContaining([
        ["INBOX", "\\Inbox"],
        ["Sent", "\\Sent"],
        ["Drafts", "\\Drafts"],
        ["Trash", "\\Trash"],
        ["Junk", "\\Junk"],
      ]),
    );
    const lock = await client.getMailboxLock("INBOX");
    try {
      const before = (client.mailbox as { exists: number }).exists;
      const got: Array<{ uid: number; subject?: string; size?: number }> = [];
      for await (const m of client.fetch("1:*", { uid: true, envelope: true, size: true, bodyStructure: true }))
        got.push({ uid: m.uid, subject: m.envelope?.subject, size: m.size });
      expect(got.some((g) => g.subject === "imapflow one")).toBe(true);
      const exists = new Promise<number>((resolve) => client.on("exists", (d: { count: number }) => resolve(d.count)));
      const idling = client.idle();
      await new Promise((r) => setTimeout(r, 100));
      await env.deliver("lx", message("imapflow two"));
      expect(await exists).toBe(before + 1);
      void idling;
      const src = (await client.fetchOne("*", { source: true, flags: true })) || undefined;
      expect(src?.source?.toString()).toContain("Subject: imapflow two");
      const uids = (await client.search({ subject: "imapflow" }, { uid: true })) as number[];
      expect(uids.length).toBeGreaterThanOrEqual(2);
      const appended = (await client.append("Sent", message("imapflow sent"), ["\\Seen"])) || undefined;
      expect(appended?.uid).toBeGreaterThan(0);
      const moved = (await client.messageMove(String(uids[0]), "Trash", { uid: true })) || undefined;
      expect(moved?.uidMap?.size).toBe(1);
      await client.messageFlagsAdd({ uid: String(uids[1]) } as never, ["\\Flagged"], { uid: true });
      const flagged = (await client.search({ flagged: true }, { uid: true })) as number[];
      expect(flagged).toContain(uids[1]);
      expect(await client.messageDelete(String(uids[1]), { uid: true })).toBe(true);
    } finally {
      lock.release();
    }
    const status = (await client.status("Sent", { messages: true, uidNext: true })) || undefined;
    expect(status?.messages).toBeGreaterThanOrEqual(1);
  } finally {
    await client.logout();
  }
});

const PY_SESSION = String.raw`
import imaplib, json, ssl, sys
mode, port, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False
if mode == "ssl":
    m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx)
else:
    m = imaplib.IMAP4("127.0.0.1", port)
    if mode == "starttls":
        m.starttls(ssl_context=ctx)
out = {}
out["login"] = m.login("lx", "lx-password")[0]
out["caps"] = list(m.capabilities)
typ, data = m.select("INBOX")
out["select"] = [typ, data[0].decode()]
typ, data = m.search(None, "SUBJECT", '"python one"')
num = data[0].split()[-1]
typ, data = m.fetch(num, "(RFC822)")
out["rfc822"] = data[0][1].decode()
typ, data = m.uid("FETCH", "1:*", "(FLAGS)")
out["uidfetch"] = typ
out["store"] = m.store(num, "+FLAGS", "\\Flagged")[0]
out["copy"] = m.copy(num, "Trash")[0]
typ, data = m.list()
out["list"] = [d.decode() for d in data]
out["create"] = m.create("PyFolder-" + mode)[0]
out["rename"] = m.rename("PyFolder-" + mode, "PyRenamed-" + mode)[0]
out["delete"] = m.delete("PyRenamed-" + mode)[0]
out["status"] = m.status("INBOX", "(MESSAGES UNSEEN)")[1][0].decode()
out["bad"] = m.select("Nope")[0]
m.select("INBOX")
out["noop"] = m.noop()[0]
out["close"] = m.close()[0]
out["logout"] = m.logout()[0]
print(json.dumps(out))
`;

test.each(["plain", "starttls", "ssl"])("Python imaplib (%s)", async (mode) => {
  const msg = message("python one", ["Line one", "Line two"]);
  await env.deliver("lx", msg);
  const out = JSON.parse(await python(PY_SESSION, [mode, String(mode === "ssl" ? env.tlsPort : env.port), env.caFile]));
  expect(out.login).toBe("OK");
  expect(out.caps).toContain("IMAP4REV1");
  expect(out.select[0]).toBe("OK");
  expect(out.rfc822).toBe(msg);
  for (const k of ["uidfetch", "store", "copy", "create", "rename", "delete", "noop", "close"]) expect([k, out[k]]).toEqual([k, "OK"]);
  expect(out.bad).toBe("NO");
  expect(out.logout).toBe("BYE");
  expect(out.list).toContain('(\\HasNoChildren \\Sent) "/" "Sent"');
  expect(out.status).toMatch(/^"INBOX" \(MESSAGES \d+ UNSEEN \d+\)$/);
});

test("curl imap:// and imaps://", async () => {
  const msg = message("curl one", ["for curl"]);
  await env.deliver("lei", msg);
  const uidSearch = await curl(["-u", "lei:lei-password", "-X", "UID SEARCH SUBJECT curl", `imap://127.0.0.1:${env.port}/INBOX`]);
  const uid = /\* SEARCH (\d+)/.exec(uidSearch.stdout)![1];
  const fetched = await curl(["-u", "lei:lei-password", `imap://127.0.0.1:${env.port}/INBOX;UID=${uid}`]);
  expect(fetched.code).toBe(0);
  expect(fetched.stdout).toBe(msg);
  const search = await curl(["-u", "lei:lei-password", `imap://127.0.0.1:${env.port}/INBOX?SUBJECT%20curl`]);
  expect(search.stdout.trim()).toMatch(/^\* SEARCH( \d+)+$/);
  const num = search.stdout.trim().split(" ").pop();
  const byNum = await curl(["-u", "lei:lei-password", `imap://127.0.0.1:${env.port}/INBOX;MAILINDEX=${num}`]);
  expect(byNum.stdout).toBe(msg);
  const listing = await curl(["-u", "lei:lei-password", `imap://127.0.0.1:${env.port}/`]);
  expect(listing.stdout).toContain('* LIST (\\HasNoChildren \\Trash) "/" "Trash"');
  const tlsFetch = await curl([
    "--cacert",
    env.caFile,
    "--resolve",
    `mail.lx.com:${env.tlsPort}:127.0.0.1`,
    "-u",
    "lei:lei-password",
    `imaps://mail.lx.com:${env.tlsPort}/INBOX;MAILINDEX=${num}`,
  ]);
  expect(tlsFetch.code).toBe(0);
  expect(tlsFetch.stdout).toBe(msg);
  const starttls = await curl([
    "--ssl-reqd",
    "--cacert",
    env.caFile,
    "--resolve",
    `mail.lx.com:${env.port}:127.0.0.1`,
    "-u",
    "lei:lei-password",
    `imap://mail.lx.com:${env.port}/INBOX;MAILINDEX=${num}`,
  ]);
  expect(starttls.stdout).toBe(msg);
  const wrong = await curl(["-u", "lei:wrong", `imap://127.0.0.1:${env.port}/INBOX;UID=${uid}`]);
  expect(wrong.code).not.toBe(0);
  const cmd = await curl(["-u", "lei:lei-password", "-X", "EXAMINE INBOX", `imap://127.0.0.1:${env.port}/`]);
  expect(cmd.stdout).toMatch(/\* OK \[UIDVALIDITY \d+\]/);
});

test("a Maildir written by Dovecot (uidlist, keywords, flags in file names)", async () => {
  const root = await ensureUserMaildir(env.dataDir, "lx");
  const dir = path.join(root, ".Dovecot");
  for (const d of ["cur", "new", "tmp"]) mkdirSync(path.join(dir, d), { recursive: true });
  writeFileSync(path.join(dir, "maildirfolder"), "");
  const m1 = "From: a@example.org\nSubject: from dovecot 1\n\nbody one\n";
  const m2 = "From: b@example.org\nSubject: from dovecot 2\n\nbody two\n";
  const crlf = (s: string) => s.replace(/\n/g, "\r\n");
  writeFileSync(path.join(dir, "cur", `1700000000.M1P10.dove,S=${m1.length},W=${crlf(m1).length}:2,RS`), m1);
  writeFileSync(path.join(dir, "cur", `1700000001.M2P10.dove,S=${m2.length},W=${crlf(m2).length}:2,ab`), m2);
  writeFileSync(
    path.join(dir, "dovecot-uidlist"),
    `3 V1699999999 N20 G0123456789abcdef0123456789abcdef\n7 :1700000000.M1P10.dove,S=${m1.length},W=${crlf(m1).length}\n12 :1700000001.M2P10.dove,S=${m2.length},W=${crlf(m2).length}\n`,
  );
  writeFileSync(path.join(dir, "dovecot-keywords"), "0 $Label1\n1 Work\n");
  const c = await RawImap.connect(env.port);
  await c.login();
  const sel = await c.cmd("SELECT Dovecot");
  expect(sel.untagged).toEqual(
    expect.arrayContaining(["* 2 EXISTS", "* OK [UIDVALIDITY 1699999999] UIDs valid", "* OK [UIDNEXT 20] Predicted next UID"]),
  );
  const f = await c.cmd("UID FETCH 1:* (FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
  expect(f.untagged).toEqual([
    `* 1 FETCH (UID 7 FLAGS (\\Answered \\Seen) RFC822.SIZE ${crlf(m1).length} BODY[HEADER.FIELDS (SUBJECT)] {27}\r\nSubject: from dovecot 1\r\n\r\n)`,
    `* 2 FETCH (UID 12 FLAGS ($Label1 Work) RFC822.SIZE ${crlf(m2).length} BODY[HEADER.FIELDS (SUBJECT)] {27}\r\nSubject: from dovecot 2\r\n\r\n)`,
  ]);
  expect((await c.cmd("UID FETCH 12 BODY.PEEK[TEXT]")).untagged[0]).toBe("* 2 FETCH (UID 12 BODY[TEXT] {10}\r\nbody two\r\n)");
  c.close();
});
