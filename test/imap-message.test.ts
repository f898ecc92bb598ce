/**
 * Message commands over a raw socket: SELECT/EXAMINE, APPEND, FETCH (every item and section),
 * STORE, SEARCH (the key grammar, CHARSET, ESEARCH, SEARCHRES), COPY/MOVE with UIDPLUS,
 * EXPUNGE/UID EXPUNGE, CLOSE, UNSELECT, CHECK, with their error replies.
 */
import { type ImapEnv, RawImap, startImapEnv } from "./imap-helpers";

let env: ImapEnv;
let folderNo = 0;
beforeAll(async () => {
  env = await startImapEnv({ limits: { badCommands: 50 } });
});
afterAll(() => env.cleanup());

const SIMPLE = [
  'From: "Alice Example" <alice@example.org>',
  "To: lx@lx.com, Bob <bob@example.net>",
  "Cc: carol@example.com",
  "Subject: alpha",
  "Date: Thu, 01 Feb 2024 10:00:00 +0100",
  "Message-ID: <alpha@example.org>",
  "",
  "Hello world",
  "second line",
  "",
].join("\r\n");

const MULTI = [
  "From: Bob <bob@example.net>",
  "To: lx@lx.com",
  "Bcc: secret@example.com",
  "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= from Bob",
  "Date: Sun, 10 Mar 2024 09:30:00 +0000",
  "In-Reply-To: <alpha@example.org>",
  "MIME-Version: 1.0",
  'Content-Type: multipart/mixed; boundary="b1"',
  "",
  "--b1",
  "Content-Type: text/plain; charset=utf-8",
  "Content-Transfer-Encoding: quoted-printable",
  "",
  "Sch=C3=B6ne Gr=C3=BC=C3=9Fe, the needle is here",
  "--b1",
  "Content-Type: application/octet-stream; name=data.bin",
  "Content-Disposition: attachment; filename=data.bin",
  "Content-Transfer-Encoding: base64",
  "",
  Buffer.from([0, 1, 2, 3, 255]).toString("base64"),
  "--b1--",
  "",
].join("\r\n");

const THIRD = [
  "From: dave@example.org",
  "To: lx@lx.com",
  "Subject: gamma",
  "X-Priority: 1",
  "Date: Mon, 15 Apr 2024 12:00:00 +0000",
  "",
  "x".repeat(3000),
  "",
].join("\r\n");

async function session(): Promise<RawImap> {
  const c = await RawImap.connect(env.port);
  await c.login();
  return c;
}

/** A fresh folder holding the three messages (APPENDed with LITERAL+), selected. */
async function fixture(c: RawImap, opts: { select?: boolean } = {}): Promise<string> {
  const name = `F${++folderNo}`;
  expect((await c.cmd(`CREATE ${name}`)).status).toMatch(/OK/);
  const dates = ['" 2-Feb-2024 08:00:00 +0000"', '"11-Mar-2024 23:30:00 -0200"', '"16-Apr-2024 00:00:00 +0000"'];
  const msgs = [SIMPLE, MULTI, THIRD];
  for (let i = 0; i < 3; i++) {
    const r = await c.cmd(
      `APPEND ${name} ${i === 0 ? "(\\Seen $Important) " : ""}${dates[i]} {${Buffer.byteLength(msgs[i]!)}+}\r\n${msgs[i]}`,
    );
    expect(r.status).toMatch(/OK \[APPENDUID \d+ \d+\]/);
  }
  if (opts.select !== false) expect((await c.cmd(`SELECT ${name}`)).status).toMatch(/OK \[READ-WRITE\]/);
  return name;
}

describe("SELECT and EXAMINE", () => {
  test("SELECT reports the mailbox; EXAMINE is read-only; a failed SELECT unselects", async () => {
    const c = await session();
    const name = await fixture(c, { select: false });
    const r = await c.cmd(`SELECT ${name}`);
    expect(r.untagged).toEqual([
      "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Important)",
      "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Important \\*)] Flags permitted",
      "* 3 EXISTS",
      "* 0 RECENT",
      "* OK [UNSEEN 2] First unseen",
      expect.stringMatching(/^\* OK \[UIDVALIDITY \d+\] /),
      "* OK [UIDNEXT 4] Predicted next UID",
      expect.stringMatching(/^\* OK \[HIGHESTMODSEQ \d+\] /),
    ]);
    expect(r.status).toMatch(/OK \[READ-WRITE\] SELECT completed/);
    const e = await c.cmd(`EXAMINE ${name}`);
    expect(e.untagged).toContain("* OK [PERMANENTFLAGS ()] No permanent flags permitted");
    expect(e.status).toMatch(/OK \[READ-ONLY\]/);
    // EXAMINE: fetching the body does not set \Seen; STORE, EXPUNGE, MOVE are refused
    const f = await c.cmd("FETCH 2 (BODY[TEXT] FLAGS)");
    expect(f.untagged[0]).toMatch(/FLAGS \(\)\)$/);
    expect((await c.cmd("STORE 1 +FLAGS (\\Deleted)")).status).toMatch(/NO \[READ-ONLY\]/);
    expect((await c.cmd("EXPUNGE")).status).toMatch(/NO \[READ-ONLY\]/);
    expect((await c.cmd("MOVE 1 INBOX")).status).toMatch(/NO \[READ-ONLY\]/);
    expect((await c.cmd("SELECT Nope")).status).toMatch(/NO \[NONEXISTENT\]/);
    expect((await c.cmd("FETCH 1 FLAGS")).status).toMatch(/BAD FETCH not allowed now: No mailbox selected/);
    expect((await c.cmd("SELECT INBOX (BOGUS)")).status).toMatch(/BAD/);
    c.close();
  });
});

describe("APPEND", () => {
  test("flags, date, APPENDUID, TRYCREATE and errors", async () => {
    const c = await session();
    const name = await fixture(c);
    const f = await c.cmd("FETCH 1:3 (FLAGS INTERNALDATE RFC822.SIZE)");
    expect(f.untagged).toEqual([
      `* 1 FETCH (FLAGS (\\Seen $Important) INTERNALDATE " 2-Feb-2024 08:00:00 +0000" RFC822.SIZE ${Buffer.byteLength(SIMPLE)})`,
      `* 2 FETCH (FLAGS () INTERNALDATE "12-Mar-2024 01:30:00 +0000" RFC822.SIZE ${Buffer.byteLength(MULTI)})`,
      `* 3 FETCH (FLAGS () INTERNALDATE "16-Apr-2024 00:00:00 +0000" RFC822.SIZE ${Buffer.byteLength(THIRD)})`,
    ]);
    expect((await c.cmd("APPEND Nowhere {1+}\r\nx")).status).toMatch(/NO \[TRYCREATE\]/);
    expect((await c.cmd("APPEND INBOX {0+}\r\n")).status).toMatch(/NO/);
    expect((await c.cmd('APPEND INBOX "32-Jan-2024 00:00:00 +0000" {1+}\r\nx')).status).toMatch(/BAD Invalid date-time/);
    expect((await c.cmd("APPEND INBOX (\\Bogus) {1+}\r\nx")).status).toMatch(/BAD Invalid system flag/);
    expect((await c.cmd("APPEND INBOX (\\Recent) {1+}\r\nx")).status).toMatch(/BAD/);
    expect((await c.cmd("APPEND INBOX")).status).toMatch(/BAD/);
    // appending to the selected mailbox is announced before the tagged OK
    const a = await c.cmd(`APPEND ${name} ~{5+}\r\nA\0B\r\n`);
    expect(a.untagged).toEqual(["* 4 EXISTS", "* 0 RECENT"]);
    expect(a.status).toMatch(/OK \[APPENDUID \d+ 4\]/);
    c.close();
  });
});

describe("FETCH", () => {
  let c: RawImap;
  beforeAll(async () => {
    c = await session();
    await fixture(c);
  });
  afterAll(() => c.close());

  test("macros and index items", async () => {
    const fast = await c.cmd("FETCH 1 FAST");
    expect(fast.untagged[0]).toMatch(/^\* 1 FETCH \(FLAGS \(\\Seen \$Important\) INTERNALDATE "[^"]+" RFC822.SIZE \d+\)$/);
    const all = await c.cmd("FETCH 1 ALL");
    expect(all.untagged[0]).toMatch(/ ENVELOPE \(/);
    const full = await c.cmd("FETCH 1 FULL");
    expect(full.untagged[0]).toMatch(/ BODY \("TEXT" "PLAIN" \("CHARSET" "us-ascii"\) NIL NIL "7BIT" 26 2\)\)$/);
    const uid = await c.cmd("UID FETCH 2:* FLAGS");
    expect(uid.untagged).toEqual(["* 2 FETCH (UID 2 FLAGS ())", "* 3 FETCH (UID 3 FLAGS ())"]);
    expect((await c.cmd("UID FETCH 100:* (FLAGS)")).untagged).toEqual(["* 3 FETCH (UID 3 FLAGS ())"]);
    expect((await c.cmd("UID FETCH 50 (FLAGS)")).untagged).toEqual([]);
  });

  test("ENVELOPE and BODYSTRUCTURE", async () => {
    const env1 = await c.cmd("FETCH 1 ENVELOPE");
    expect(env1.untagged[0]).toBe(
      '* 1 FETCH (ENVELOPE ("Thu, 01 Feb 2024 10:00:00 +0100" "alpha" (("Alice Example" NIL "alice" "example.org")) (("Alice Example" NIL "alice" "example.org")) (("Alice Example" NIL "alice" "example.org")) ((NIL NIL "lx" "lx.com") ("Bob" NIL "bob" "example.net")) ((NIL NIL "carol" "example.com")) NIL NIL "<alpha@example.org>"))',
    );
    const env2 = await c.cmd("FETCH 2 ENVELOPE");
    expect(env2.untagged[0]).toContain('"=?UTF-8?Q?Gr=C3=BC=C3=9Fe?= from Bob"');
    expect(env2.untagged[0]).toContain('((NIL NIL "secret" "example.com")) "<alpha@example.org>" NIL))');
    const bs = await c.cmd("FETCH 2 BODYSTRUCTURE");
    expect(bs.untagged[0]).toBe(
      '* 2 FETCH (BODYSTRUCTURE (("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 47 1 NIL NIL NIL NIL)("APPLICATION" "OCTET-STREAM" ("NAME" "data.bin") NIL NIL "BASE64" 8 NIL ("ATTACHMENT" ("FILENAME" "data.bin")) NIL NIL) "MIXED" ("BOUNDARY" "b1") NIL NIL NIL))'.replace(
        ")(",
        ") (",
      ),
    );
  });

  test("sections, partials and the RFC822 forms", async () => {
    const whole = await c.cmd("FETCH 1 BODY.PEEK[]");
    expect(whole.untagged[0]).toBe(`* 1 FETCH (BODY[] {${Buffer.byteLength(SIMPLE)}}\r\n${SIMPLE})`);
    const header = SIMPLE.slice(0, SIMPLE.indexOf("\r\n\r\n") + 4);
    const text = SIMPLE.slice(SIMPLE.indexOf("\r\n\r\n") + 4);
    expect((await c.cmd("FETCH 1 BODY.PEEK[HEADER]")).untagged[0]).toBe(`* 1 FETCH (BODY[HEADER] {${header.length}}\r\n${header})`);
    expect((await c.cmd("FETCH 1 BODY.PEEK[TEXT]")).untagged[0]).toBe(`* 1 FETCH (BODY[TEXT] {${text.length}}\r\n${text})`);
    expect((await c.cmd("FETCH 1 BODY.PEEK[1]")).untagged[0]).toBe(`* 1 FETCH (BODY[1] {${text.length}}\r\n${text})`);
    expect((await c.cmd("FETCH 1 BODY.PEEK[TEXT]<6.5>")).untagged[0]).toBe("* 1 FETCH (BODY[TEXT]<6> {5}\r\nworld)");
    expect((await c.cmd("FETCH 1 BODY.PEEK[TEXT]<9999.5>")).untagged[0]).toBe('* 1 FETCH (BODY[TEXT]<9999> "")');
    expect((await c.cmd('FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT "Message-ID")]')).untagged[0]).toBe(
      "* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT Message-ID)] {51}\r\nSubject: alpha\r\nMessage-ID: <alpha@example.org>\r\n\r\n)",
    );
    const not = await c.cmd("FETCH 1 BODY.PEEK[HEADER.FIELDS.NOT (From To Cc Date Message-ID)]");
    expect(not.untagged[0]).toBe("* 1 FETCH (BODY[HEADER.FIELDS.NOT (From To Cc Date Message-ID)] {18}\r\nSubject: alpha\r\n\r\n)");
    expect((await c.cmd("FETCH 2 BODY.PEEK[1]")).untagged[0]).toContain("Sch=C3=B6ne");
    expect((await c.cmd("FETCH 2 BODY.PEEK[2.MIME]")).untagged[0]).toMatch(
      /^\* 2 FETCH \(BODY\[2.MIME\] \{\d+\}\r\nContent-Type: application\/octet-stream/,
    );
    expect((await c.cmd("FETCH 2 BODY.PEEK[3]")).untagged[0]).toBe('* 2 FETCH (BODY[3] "")');
    expect((await c.cmd("FETCH 1 RFC822.HEADER")).untagged[0]).toBe(`* 1 FETCH (RFC822.HEADER {${header.length}}\r\n${header})`);
    // BINARY undoes the transfer encoding (RFC 3516); literal8 when there is a NUL
    expect((await c.cmd("FETCH 2 (BINARY.PEEK[2] BINARY.SIZE[2])")).untagged[0]).toBe(
      `* 2 FETCH (BINARY[2] ~{5}\r\n${Buffer.from([0, 1, 2, 3, 255]).toString("latin1")} BINARY.SIZE[2] 5)`,
    );
    expect((await c.cmd("FETCH 2 BINARY.PEEK[1]")).untagged[0]).toBe(
      `* 2 FETCH (BINARY[1] {${Buffer.byteLength("Schöne Grüße, the needle is here")}}\r\n${Buffer.from("Schöne Grüße, the needle is here").toString("latin1")})`,
    );
  });

  test("BODY[] and RFC822.TEXT set \\Seen and report FLAGS; .PEEK does not", async () => {
    expect((await c.cmd("FETCH 3 BODY.PEEK[TEXT]<0.1>")).untagged[0]).toBe("* 3 FETCH (BODY[TEXT]<0> {1}\r\nx)");
    expect((await c.cmd("FETCH 3 RFC822.TEXT")).untagged[0]).toMatch(/^\* 3 FETCH \(RFC822.TEXT \{\d+\}\r\nx+\r\n FLAGS \(\\Seen\)\)$/);
    expect((await c.cmd("FETCH 3 (FLAGS BODY[]<0.4>)")).untagged[0]).toBe("* 3 FETCH (FLAGS (\\Seen) BODY[]<0> {4}\r\nFrom)");
  });

  test("errors", async () => {
    for (const bad of [
      "FETCH 9 FLAGS",
      "FETCH 1 (BOGUS)",
      "FETCH 1 BODY[MIME]",
      "FETCH 1 BODY[HEADER.FIELDS]",
      "FETCH 1 BODY[]<5>",
      "FETCH 1 (ALL FLAGS)",
      "FETCH x FLAGS",
      "FETCH 1",
      "FETCH 1 BINARY[HEADER]",
      "UID FETCH 1 FLAGS (VANISHED)",
    ])
      expect([bad, (await c.cmd(bad)).status]).toEqual([bad, expect.stringMatching(/^A\d+ BAD/)]);
  });
});

describe("STORE", () => {
  test("FLAGS, +FLAGS, -FLAGS, .SILENT, keywords and errors", async () => {
    const c = await session();
    await fixture(c);
    expect((await c.cmd("STORE 2:3 +FLAGS (\\Flagged \\Answered)")).untagged).toEqual([
      "* 2 FETCH (FLAGS (\\Flagged \\Answered))",
      "* 3 FETCH (FLAGS (\\Flagged \\Answered))",
    ]);
    expect((await c.cmd("STORE 2 -FLAGS \\Answered")).untagged).toEqual(["* 2 FETCH (FLAGS (\\Flagged))"]);
    // .SILENT: no FETCH; a new keyword is announced with FLAGS and PERMANENTFLAGS
    expect((await c.cmd("STORE 2 FLAGS.SILENT (\\Draft Work)")).untagged).toEqual([
      "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Important Work)",
      "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Important Work \\*)] Flags permitted",
    ]);
    expect((await c.cmd("STORE 3 +FLAGS.SILENT (work)")).untagged).toEqual([]);
    expect((await c.cmd("UID STORE 2 +FLAGS (\\Seen)")).untagged).toEqual(["* 2 FETCH (UID 2 FLAGS (\\Draft \\Seen Work))"]);
    expect((await c.cmd("FETCH 1:3 FLAGS")).untagged).toEqual([
      "* 1 FETCH (FLAGS (\\Seen $Important))",
      "* 2 FETCH (FLAGS (\\Draft \\Seen Work))",
      "* 3 FETCH (FLAGS (\\Flagged \\Answered Work))",
    ]);
    for (const bad of [
      "STORE 1 +FLAGS (\\Recent)",
      "STORE 1 +FLAGS (\\Bogus)",
      "STORE 1 PLUSFLAGS (\\Seen)",
      "STORE 1 +FLAGS",
      "STORE 7 +FLAGS (\\Seen)",
      'STORE 1 +FLAGS ("quoted")',
    ])
      expect((await c.cmd(bad)).status).toMatch(/^A\d+ BAD/);
    c.close();
  });
});

describe("SEARCH", () => {
  let c: RawImap;
  beforeAll(async () => {
    c = await session();
    await fixture(c);
    await c.cmd("STORE 3 +FLAGS (\\Flagged \\Deleted \\Draft \\Answered Todo)");
  });
  afterAll(() => c.close());

  const search = async (q: string) => (await c.cmd(`SEARCH ${q}`)).untagged[0];

  test.each([
    ["ALL", "* SEARCH 1 2 3"],
    ["1,3", "* SEARCH 1 3"],
    ["2:*", "* SEARCH 2 3"],
    ["UID 2:3", "* SEARCH 2 3"],
    ["SEEN", "* SEARCH 1"],
    ["UNSEEN", "* SEARCH 2 3"],
    ["FLAGGED", "* SEARCH 3"],
    ["UNFLAGGED", "* SEARCH 1 2"],
    ["ANSWERED", "* SEARCH 3"],
    ["UNANSWERED", "* SEARCH 1 2"],
    ["DELETED", "* SEARCH 3"],
    ["UNDELETED", "* SEARCH 1 2"],
    ["DRAFT", "* SEARCH 3"],
    ["UNDRAFT", "* SEARCH 1 2"],
    ["KEYWORD $Important", "* SEARCH 1"],
    ["KEYWORD todo", "* SEARCH 3"],
    ["UNKEYWORD Todo", "* SEARCH 1 2"],
    ["NEW", "* SEARCH"],
    ["OLD", "* SEARCH 1 2 3"],
    ["RECENT", "* SEARCH"],
    ["LARGER 1000", "* SEARCH 3"],
    ["SMALLER 1000", "* SEARCH 1 2"],
    ["BEFORE 12-Mar-2024", "* SEARCH 1"],
    ["ON 12-Mar-2024", "* SEARCH 2"],
    ["SINCE 12-Mar-2024", "* SEARCH 2 3"],
    ["SENTBEFORE 10-Mar-2024", "* SEARCH 1"],
    ["SENTON 10-Mar-2024", "* SEARCH 2"],
    ["SENTSINCE 10-Mar-2024", "* SEARCH 2 3"],
    ['FROM "alice"', "* SEARCH 1"],
    ["FROM example.org", "* SEARCH 1 3"],
    ["TO bob", "* SEARCH 1"],
    ["CC carol", "* SEARCH 1"],
    ["BCC secret", "* SEARCH 2"],
    ["SUBJECT ALPHA", "* SEARCH 1"],
    ['HEADER X-Priority ""', "* SEARCH 3"],
    ["HEADER In-Reply-To alpha@example.org", "* SEARCH 2"],
    ["BODY needle", "* SEARCH 2"],
    ["TEXT needle", "* SEARCH 2"],
    ["TEXT gamma", "* SEARCH 3"],
    ["OR SUBJECT alpha SUBJECT gamma", "* SEARCH 1 3"],
    ["NOT SEEN", "* SEARCH 2 3"],
    ["(UNSEEN FLAGGED) OR 1 2", "* SEARCH"],
    ["UNSEEN (OR 1 2)", "* SEARCH 2"],
    ["YOUNGER 1000000000", "* SEARCH 1 2 3"],
  ])("SEARCH %s", async (q, expected) => {
    expect(await search(q)).toBe(expected);
  });

  test("CHARSET UTF-8 with literals, decoded headers and bodies", async () => {
    const r = await c.cmd(`SEARCH CHARSET UTF-8 SUBJECT {${Buffer.byteLength("grüße")}+}\r\ngrüße`);
    expect(r.untagged).toEqual(["* SEARCH 2"]);
    const b = await c.cmd(`UID SEARCH CHARSET UTF-8 BODY {${Buffer.byteLength("Schöne")}+}\r\nSchöne`);
    expect(b.untagged).toEqual(["* SEARCH 2"]);
    expect((await c.cmd("SEARCH CHARSET KOI8-R ALL")).status).toMatch(/NO \[BADCHARSET \(US-ASCII UTF-8\)\]/);
  });

  test("ESEARCH, SAVE and $", async () => {
    expect((await c.cmd("SEARCH RETURN (MIN MAX COUNT) UNSEEN")).untagged[0]).toMatch(/^\* ESEARCH \(TAG "A\d+"\) MIN 2 MAX 3 COUNT 2$/);
    expect((await c.cmd("UID SEARCH RETURN () ALL")).untagged[0]).toMatch(/^\* ESEARCH \(TAG "A\d+"\) UID ALL 1:3$/);
    expect((await c.cmd("SEARCH RETURN (COUNT) KEYWORD nothing")).untagged[0]).toMatch(/^\* ESEARCH \(TAG "A\d+"\) COUNT 0$/);
    expect((await c.cmd("SEARCH RETURN (SAVE) FLAGGED")).untagged).toEqual([]);
    expect((await c.cmd("FETCH $ (UID)")).untagged).toEqual(["* 3 FETCH (UID 3)"]);
    expect((await c.cmd("SEARCH $")).untagged).toEqual(["* SEARCH 3"]);
    expect((await c.cmd("SEARCH RETURN (BOGUS) ALL")).status).toMatch(/BAD/);
  });

  test("errors", async () => {
    for (const bad of ["SEARCH", "SEARCH BOGUS", "SEARCH FROM", "SEARCH SINCE 2024-01-01", "SEARCH 9", "SEARCH LARGER x", "SEARCH OR SEEN"])
      expect((await c.cmd(bad)).status).toMatch(/^A\d+ BAD/);
  });
});

describe("COPY, MOVE and UIDPLUS", () => {
  test("COPY with COPYUID; TRYCREATE", async () => {
    const c = await session();
    const name = await fixture(c);
    const dest = `${name}-copy`;
    await c.cmd(`CREATE ${dest}`);
    expect((await c.cmd(`COPY 2:3 ${dest}`)).status).toMatch(/^A\d+ OK \[COPYUID \d+ 2:3 1:2\] COPY completed/);
    expect((await c.cmd(`UID COPY 1 ${dest}`)).status).toMatch(/OK \[COPYUID \d+ 1 3\]/);
    expect((await c.cmd("COPY 1 Nowhere")).status).toMatch(/NO \[TRYCREATE\]/);
    expect((await c.cmd(`COPY 9 ${dest}`)).status).toMatch(/BAD/);
    const st = await c.cmd(`STATUS ${dest} (MESSAGES)`);
    expect(st.untagged[0]).toBe(`* STATUS "${dest}" (MESSAGES 3)`);
    // the copy keeps flags
    await c.cmd(`SELECT ${dest}`);
    expect((await c.cmd("FETCH 3 FLAGS")).untagged[0]).toBe("* 3 FETCH (FLAGS (\\Seen $Important))");
    c.close();
  });

  test("MOVE sends COPYUID, then EXPUNGE", async () => {
    const c = await session();
    const name = await fixture(c);
    await c.cmd(`CREATE ${name}-moved`);
    const m = await c.cmd(`MOVE 1:2 ${name}-moved`);
    expect(m.untagged).toEqual([expect.stringMatching(/^\* OK \[COPYUID \d+ 1:2 1:2\] Moved$/), "* 2 EXPUNGE", "* 1 EXPUNGE"]);
    const u = await c.cmd(`UID MOVE 3 ${name}-moved`);
    expect(u.untagged).toEqual([expect.stringMatching(/^\* OK \[COPYUID \d+ 3 3\]/), "* 1 EXPUNGE"]);
    expect((await c.cmd("FETCH 1:* FLAGS")).untagged).toEqual([]);
    c.close();
  });
});

describe("EXPUNGE, CLOSE, UNSELECT, CHECK", () => {
  test("EXPUNGE reports each message; UID EXPUNGE only the given ones", async () => {
    const c = await session();
    await fixture(c);
    expect((await c.cmd("CHECK")).status).toMatch(/OK/);
    await c.cmd("STORE 1:3 +FLAGS.SILENT (\\Deleted)");
    const u = await c.cmd("UID EXPUNGE 2");
    expect(u.untagged).toEqual(["* 2 EXPUNGE"]);
    const e = await c.cmd("EXPUNGE");
    expect(e.untagged).toEqual(["* 2 EXPUNGE", "* 1 EXPUNGE"]);
    expect((await c.cmd("EXPUNGE")).untagged).toEqual([]);
    c.close();
  });

  test("index-only SEARCH and FETCH after an expunge: sequence numbers and UIDs differ", async () => {
    const c = await session();
    await fixture(c);
    await c.cmd("UID STORE 1 +FLAGS.SILENT (\\Deleted)");
    expect((await c.cmd("UID EXPUNGE 1")).untagged).toEqual(["* 1 EXPUNGE"]);
    await c.cmd("UID STORE 3 +FLAGS.SILENT (\\Flagged $Work)");
    expect((await c.cmd("SEARCH UNSEEN")).untagged).toEqual(["* SEARCH 1 2"]);
    expect((await c.cmd("UID SEARCH UNSEEN")).untagged).toEqual(["* SEARCH 2 3"]);
    expect((await c.cmd("UID SEARCH KEYWORD $WORK")).untagged).toEqual(["* SEARCH 3"]);
    expect((await c.cmd("UID SEARCH SEEN")).untagged).toEqual(["* SEARCH"]);
    expect((await c.cmd("SEARCH RETURN (SAVE) FLAGGED")).untagged).toEqual([]);
    expect((await c.cmd("UID FETCH $ (FLAGS)")).untagged).toEqual(["* 2 FETCH (UID 3 FLAGS (\\Flagged $Work))"]);
    expect((await c.cmd("UID FETCH 1:* (FLAGS)")).untagged).toEqual([
      "* 1 FETCH (UID 2 FLAGS ())",
      "* 2 FETCH (UID 3 FLAGS (\\Flagged $Work))",
    ]);
    c.close();
  });

  test("CLOSE expunges silently; UNSELECT keeps \\Deleted messages", async () => {
    const c = await session();
    const name = await fixture(c);
    await c.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)");
    const u = await c.cmd("UNSELECT");
    expect(u.untagged).toEqual([]);
    expect((await c.cmd(`STATUS ${name} (MESSAGES DELETED)`)).untagged[0]).toBe(`* STATUS "${name}" (MESSAGES 3 DELETED 1)`);
    await c.cmd(`SELECT ${name}`);
    const cl = await c.cmd("CLOSE");
    expect(cl.untagged).toEqual([]);
    expect(cl.status).toMatch(/OK/);
    expect((await c.cmd(`STATUS ${name} (MESSAGES DELETED)`)).untagged[0]).toBe(`* STATUS "${name}" (MESSAGES 2 DELETED 0)`);
    expect((await c.cmd("CLOSE")).status).toMatch(/BAD/);
    expect((await c.cmd("UNSELECT")).status).toMatch(/BAD/);
    c.close();
  });
});
