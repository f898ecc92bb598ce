/**
 * Pure tests of the IMAP wire code: the framer (literals, limits), the command parser, the
 * response compiler, sequence sets, modified UTF-7, MIME structure and the search-key parser,
 * plus fast-check properties that feed random bytes to the framer and parser.
 */
import fc from "fast-check";
import { ImapError } from "../imap/command";
import { missingUids } from "../imap/commands/vanished";
import { compile, formatDateTime, lit, nstr, parseDate, parseDateTime, raw, str } from "../imap/compiler";
import { bodyStructure, filterHeader, parseMime, sectionBytes } from "../imap/mime";
import { type Frame, Framer, type FramerEvent, frameFromBytes, ParseError, parseCommand } from "../imap/parser";
import { parseSearch } from "../imap/search";
import { formatOrderedSet, formatSeqSet, parseSeqSet, resolveSeq, resolveUids } from "../imap/seqset";
import { decodeMutf7, encodeMutf7 } from "../lib/mutf7";

const LIMITS = { maxLine: 200, maxLiteral: 1000, maxNonSync: 100, maxLiterals: 5 };

function feed(f: Framer, data: string | Buffer): FramerEvent[] {
  return f.push(Buffer.isBuffer(data) ? data : Buffer.from(data, "latin1")).events;
}

function one(line: string) {
  const frames = frameFromBytes(line);
  expect(frames).toHaveLength(1);
  return parseCommand(frames[0]!);
}

describe("Framer", () => {
  test("frames a simple command and ignores empty lines", () => {
    const f = new Framer(LIMITS);
    const ev = feed(f, "\r\nA1 NOOP\r\nA2 CAPABILITY\r\n");
    expect(ev.map((e) => e.type)).toEqual(["command", "command"]);
    expect((ev[0] as { frame: Frame }).frame.segments[0]!.toString()).toBe("A1 NOOP");
  });

  test("a synchronizing literal asks for continuation, then completes", () => {
    const f = new Framer(LIMITS);
    expect(feed(f, "A1 LOGIN {2}\r\n")).toEqual([{ type: "continue", size: 2 }]);
    const ev = feed(f, "lx {3}\r\n");
    expect(ev).toEqual([{ type: "continue", size: 3 }]);
    const done = feed(f, "pwd\r\n");
    expect(done).toHaveLength(1);
    const frame = (done[0] as { frame: Frame }).frame;
    expect(frame.literals.map((l) => l.toString())).toEqual(["lx", "pwd"]);
    expect(parseCommand(frame)).toMatchObject({ tag: "A1", name: "LOGIN" });
  });

  test("non-synchronizing literals and literal8 need no continuation", () => {
    const f = new Framer(LIMITS);
    const ev = feed(f, "A1 APPEND INBOX {5+}\r\nhello ~{3+}\r\na\0b\r\n");
    expect(ev.map((e) => e.type)).toEqual(["command"]);
    const cmd = parseCommand((ev[0] as { frame: Frame }).frame);
    expect(cmd.args[1]).toMatchObject({ type: "string", literal: true });
    expect(cmd.args[2]).toMatchObject({ type: "string", binary: true });
    expect((cmd.args[2] as { value: Buffer }).value).toEqual(Buffer.from("a\0b"));
  });

  test("a literal split over many chunks arrives whole", () => {
    const f = new Framer(LIMITS);
    const data = Buffer.from("A1 X {10+}\r\n0123456789\r\n");
    const events: FramerEvent[] = [];
    for (const b of data) events.push(...f.push(Buffer.from([b])).events);
    expect(events).toHaveLength(1);
    expect((events[0] as { frame: Frame }).frame.literals[0]!.toString()).toBe("0123456789");
  });

  test("too long lines are refused with the tag and skipped", () => {
    const f = new Framer(LIMITS);
    const ev = feed(f, `T7 NOOP ${"x".repeat(300)}\r\nA2 NOOP\r\n`);
    expect(ev[0]).toMatchObject({ type: "reject", tag: "T7", status: "BAD", code: "TOOBIG" });
    expect(ev[1]).toMatchObject({ type: "command" });
    expect(ev).toHaveLength(2);
  });

  test("a too big synchronizing literal is refused without continuation", () => {
    const f = new Framer(LIMITS);
    const ev = feed(f, "A1 APPEND INBOX {5000}\r\nA2 NOOP\r\n");
    expect(ev[0]).toMatchObject({ type: "reject", tag: "A1", status: "NO", code: "TOOBIG" });
    expect(ev[1]).toMatchObject({ type: "command" });
  });

  test("a too big non-synchronizing literal (LITERAL- 4096 rule) is fatal", () => {
    const f = new Framer(LIMITS);
    const ev = feed(f, `A1 APPEND INBOX {101+}\r\n${"x".repeat(101)}\r\n`);
    expect(ev).toEqual([{ type: "fatal", tag: "A1", text: expect.stringContaining("too big") }]);
  });

  test("a non-synchronizing literal over maxLiteral but within maxNonSync is refused and skipped unread", () => {
    const f = new Framer({ ...LIMITS, maxLiteral: 10 });
    // the literal's bytes look like commands; they must never be taken as such
    const data = "A9 LOGOUT\r\nA8 LOGOUT\r\n"; // 22 bytes
    const ev = feed(f, `A1 LOGIN lx {${data.length}+}\r\n${data} {3+}\r\nzzz\r\nA2 NOOP\r\n`);
    expect(ev).toEqual([
      { type: "reject", tag: "A1", status: "NO", code: "TOOBIG", text: "Literal too big (22 bytes)" },
      { type: "command", frame: { segments: [Buffer.from("A2 NOOP")], literals: [] } },
    ]);
    expect(f.buffered).toBe(0);
  });

  test("a non-synchronizing literal after a too long line is skipped, never parsed as commands", () => {
    const f = new Framer(LIMITS);
    const ev = feed(f, `A1 APPEND ${"x".repeat(300)} {20+}\r\nA9 LOGOUT\r\n`);
    expect(ev.map((e) => e.type)).toEqual(["reject"]);
    // the other 9 literal bytes, the end of the command, then a real command
    expect(feed(f, "A7 LOGOUT\r\nA2 NOOP\r\n").map((e) => e.type)).toEqual(["command"]);
    // one over maxNonSync after a refused line cannot be skipped: fatal
    const g = new Framer(LIMITS);
    expect(feed(g, `A1 APPEND ${"x".repeat(300)} {500+}\r\n`).map((e) => e.type)).toEqual(["reject", "fatal"]);
  });

  test("too many literals", () => {
    const f = new Framer({ ...LIMITS, maxLiterals: 1 });
    feed(f, "A1 X {1}\r\n");
    const ev = feed(f, "a {1}\r\n");
    expect(ev[0]).toMatchObject({ type: "reject", tag: "A1" });
  });

  test("raw line mode hands the next line over as it is", () => {
    const f = new Framer(LIMITS);
    f.rawLine = true;
    const ev = feed(f, "DONE {5}\r\nA2 NOOP\r\n");
    expect(ev[0]).toEqual({ type: "line", line: Buffer.from("DONE {5}") });
    expect(ev[1]).toMatchObject({ type: "command" });
  });

  test("stopAfter leaves the rest unparsed (STARTTLS)", () => {
    const f = new Framer(LIMITS);
    const r = f.push(Buffer.from("A1 STARTTLS\r\nA2 LOGIN a b\r\n"), (e) => e.type === "command");
    expect(r.events).toHaveLength(1);
    expect(r.rest?.toString()).toBe("A2 LOGIN a b\r\n");
  });
});

describe("parseCommand", () => {
  test("tag, name and UID commands", () => {
    expect(one("a.1 noop\r\n")).toEqual({ tag: "a.1", name: "NOOP", args: [] });
    expect(one("A2 uid fetch 1:* (FLAGS)\r\n")).toMatchObject({
      name: "UID FETCH",
      args: [{ type: "atom", value: "1:*" }, { type: "list" }],
    });
  });

  test("quoted strings with escapes, NIL and nested lists", () => {
    const c = one('A1 X "a \\"b\\" \\\\c" NIL (a (b c) ())\r\n');
    expect((c.args[0] as { value: Buffer }).value.toString()).toBe('a "b" \\c');
    expect(c.args[1]).toEqual({ type: "atom", value: "NIL" });
    expect(c.args[2]).toEqual({
      type: "list",
      items: [
        { type: "atom", value: "a" },
        {
          type: "list",
          items: [
            { type: "atom", value: "b" },
            { type: "atom", value: "c" },
          ],
        },
        { type: "list", items: [] },
      ],
    });
  });

  test("sections and partials", () => {
    const c = one('A1 FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject "From")]<0.100> BODY[1.2.MIME] BINARY[1] RFC822)\r\n');
    const items = (c.args[1] as { items: unknown[] }).items;
    expect(items[0]).toMatchObject({ type: "atom", value: "BODY.PEEK", partial: { start: 0, length: 100 } });
    expect((items[0] as { section: unknown[] }).section).toHaveLength(2);
    expect(items[1]).toMatchObject({ value: "BODY", section: [{ type: "atom", value: "1.2.MIME" }] });
    expect(items[2]).toMatchObject({ value: "BINARY", section: [{ type: "atom", value: "1" }] });
  });

  test("mailbox names with brackets stay atoms", () => {
    expect(one("A1 SELECT foo[bar]\r\n").args[0]).toEqual({ type: "atom", value: "foo[bar]" });
  });

  test.each([
    ["missing command", "A1\r\n"],
    ["bad tag", "+ NOOP\r\n"],
    ["tag with star", "* NOOP\r\n"],
    ["unterminated quote", 'A1 LOGIN "abc\r\n'],
    ["bad escape", 'A1 LOGIN "a\\b" x\r\n'],
    ["unbalanced list", "A1 FETCH 1 (FLAGS\r\n"],
    ["stray paren", "A1 FETCH 1 FLAGS)\r\n"],
    ["double space", "A1 LOGIN  a b\r\n"],
    ["control char", "A1 LOGIN a\x01 b\r\n"],
    ["bad partial", "A1 FETCH 1 BODY[]<x>\r\n"],
    ["garbage command name", "A1 NO*OP\r\n"],
  ])("%s is a ParseError", (_name, line) => {
    expect(() => parseCommand(frameFromBytes(line)[0]!)).toThrow(ParseError);
  });

  test("parse errors keep the tag when it was readable", () => {
    try {
      parseCommand(frameFromBytes('T9 LOGIN "x\r\n')[0]!);
      throw new Error("no error");
    } catch (e) {
      expect((e as ParseError).tag).toBe("T9");
    }
  });
});

describe("compiler", () => {
  test("status responses with codes", () => {
    expect(compile({ tag: "A1", command: "OK", code: { name: "APPENDUID", args: [5, 7] }, text: "done" }).toString()).toBe(
      "A1 OK [APPENDUID 5 7] done\r\n",
    );
    expect(compile({ tag: "*", command: "BYE", text: "a\r\nb" }).toString()).toBe("* BYE a b\r\n");
  });

  test("strings are quoted or sent as literals", () => {
    const r = (v: Parameters<typeof compile>[0]["attributes"]) => compile({ tag: "*", command: "X", attributes: v! }).toString();
    expect(r([str('a "b" \\')])).toBe('* X "a \\"b\\" \\\\"\r\n');
    expect(r([str("a\r\nb")])).toBe("* X {4}\r\na\r\nb\r\n");
    expect(r([str("Grüße")])).toBe("* X {7}\r\nGrüße\r\n");
    expect(compile({ tag: "*", command: "X", attributes: [str("Grüße")] }, { utf8: true }).toString()).toBe('* X "Grüße"\r\n');
    expect(r([null, nstr(undefined), 12, 2n ** 60n, [raw("\\Seen"), "FLAGS"], lit(Buffer.from("ab"), true)])).toBe(
      `* X NIL NIL 12 ${2n ** 60n} (\\Seen FLAGS) ~{2}\r\nab\r\n`,
    );
  });

  test("date-time formatting and parsing round-trip", () => {
    const d = new Date(Date.UTC(2024, 1, 3, 4, 5, 6));
    expect(formatDateTime(d)).toBe('" 3-Feb-2024 04:05:06 +0000"');
    expect(parseDateTime(" 3-Feb-2024 04:05:06 +0000")?.getTime()).toBe(d.getTime());
    expect(parseDateTime("03-Feb-2024 06:05:06 +0200")?.getTime()).toBe(d.getTime());
    expect(parseDateTime("31-Feb-2024 06:05:06 +0200")).toBeNull();
    expect(parseDateTime("3-Foo-2024 06:05:06 +0200")).toBeNull();
    expect(parseDate("1-Feb-1994")).toBe(Date.UTC(1994, 1, 1));
    expect(parseDate("1-Feb-94")).toBeNull();
  });
});

describe("sequence sets", () => {
  test("parse, resolve and format", () => {
    expect(parseSeqSet("1:3,5,7:*")).toEqual([
      [1, 3],
      [5, 5],
      [7, Infinity],
    ]);
    expect(parseSeqSet("$")).toBe("$");
    for (const bad of ["", "0", "1:0", "a", "1,,2", "1:2:3", "4294967296"]) expect(parseSeqSet(bad)).toBeNull();
    expect(resolveSeq(parseSeqSet("2:*") as never, 4)).toEqual([2, 3, 4]);
    expect(resolveSeq(parseSeqSet("5") as never, 4)).toBeNull();
    expect(resolveSeq(parseSeqSet("1:*") as never, 0)).toEqual([]);
    expect(resolveUids(parseSeqSet("3:9,20:*") as never, [2, 4, 8, 10, 30])).toEqual([2, 3, 5]);
    expect(resolveUids(parseSeqSet("100:*") as never, [2, 4, 8])).toEqual([3]); // n:* includes the largest UID
    expect(formatSeqSet([5, 1, 2, 3, 9, 8])).toBe("1:3,5,8:9");
    expect(formatOrderedSet([4, 5, 1])).toBe("4:5,1");
    expect(missingUids([[1, Infinity]], [2, 3, 7], 8)).toEqual([
      [1, 1],
      [4, 6],
      [8, 8],
    ]);
  });

  test("property: formatSeqSet round-trips through parse and resolve", () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: 500 }), { maxLength: 60 }), (nums) => {
        const sorted = [...nums].sort((a, b) => a - b);
        const text = formatSeqSet(nums);
        if (sorted.length === 0) return text === "";
        const uids = Array.from({ length: 500 }, (_, i) => i + 1);
        return JSON.stringify(resolveUids(parseSeqSet(text) as never, uids)) === JSON.stringify(sorted);
      }),
    );
  });
});

describe("modified UTF-7", () => {
  test("RFC 3501 examples", () => {
    expect(encodeMutf7("~peter/mail/台北/日本語")).toBe("~peter/mail/&U,BTFw-/&ZeVnLIqe-");
    expect(decodeMutf7("~peter/mail/&U,BTFw-/&ZeVnLIqe-")).toBe("~peter/mail/台北/日本語");
    expect(encodeMutf7("Entwürfe & Co")).toBe("Entw&APw-rfe &- Co");
    expect(encodeMutf7("😀")).toBe("&2D3eAA-");
  });

  test("invalid forms are refused", () => {
    for (const bad of ["&", "&Jjo", "&AGE-", "&-&", "Grüße", "&2D3-", "&U,BTF-"]) expect(decodeMutf7(bad)).toBeNull();
  });

  test("property: round trip of any string", () => {
    fc.assert(fc.property(fc.string({ unit: "grapheme" }), (s) => decodeMutf7(encodeMutf7(s)) === s));
  });
});

describe("MIME structure", () => {
  const msg = Buffer.from(
    [
      'From: "Doe, J" <a@b.example>',
      "To: undisclosed-recipients:;",
      "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=",
      'Content-Type: multipart/mixed; boundary="XX"',
      "",
      "preamble",
      "--XX",
      "Content-Type: text/plain; charset=utf-8",
      "",
      "hello",
      "world",
      "--XX",
      "Content-Type: message/rfc822",
      'Content-Disposition: attachment; filename="m.eml"',
      "",
      "Subject: inner",
      "Content-Type: multipart/alternative; boundary=YY",
      "",
      "--YY",
      "Content-Type: text/plain",
      "",
      "inner text",
      "--YY",
      "Content-Type: text/html",
      "Content-Transfer-Encoding: base64",
      "",
      "PGI+eDwvYj4=",
      "--YY--",
      "",
      "--XX--",
      "epilogue",
      "",
    ].join("\r\n"),
  );

  test("BODYSTRUCTURE, ENVELOPE and sections", async () => {
    const tree = await parseMime(msg);
    expect(tree.envelope).toEqual([
      null,
      "=?UTF-8?Q?Gr=C3=BC=C3=9Fe?=",
      [["Doe, J", null, "a", "b.example"]],
      [["Doe, J", null, "a", "b.example"]],
      [["Doe, J", null, "a", "b.example"]],
      [
        [null, null, "undisclosed-recipients", null],
        [null, null, null, null],
      ],
      null,
      null,
      null,
      null,
    ]);
    const bs = bodyStructure(tree, true) as unknown[];
    expect(bs[0]).toEqual(["TEXT", "PLAIN", ["CHARSET", "utf-8"], null, null, "7BIT", 12, 2, null, null, null, null]);
    const sec = (path: number[], kind: "" | "HEADER" | "TEXT" | "MIME" = "") => sectionBytes(msg, tree, { path, kind })?.toString();
    const inner = bs[1] as unknown[];
    expect(inner.slice(0, 7)).toEqual(["MESSAGE", "RFC822", null, null, null, "7BIT", Buffer.byteLength(sec([2])!)]);
    expect(inner[7]).toEqual([null, "inner", null, null, null, null, null, null, null, null]);
    expect((inner[8] as unknown[]).slice(2, 3)).toEqual(["ALTERNATIVE"]);
    expect(inner[9]).toBe(sec([2])!.split("\r\n").length - 1);
    expect(inner[11]).toEqual(["ATTACHMENT", ["FILENAME", "m.eml"]]);
    expect(bs.slice(2)).toEqual(["MIXED", ["BOUNDARY", "XX"], null, null, null]);
    expect(sec([1])).toBe("hello\r\nworld");
    expect(sec([2, 1])).toBe("inner text");
    expect(sec([2, 2])).toBe("PGI+eDwvYj4=");
    expect(sec([2], "HEADER")).toBe("Subject: inner\r\nContent-Type: multipart/alternative; boundary=YY\r\n\r\n");
    expect(sec([2], "MIME")).toContain("Content-Disposition: attachment");
    expect(sec([1], "HEADER")).toBeUndefined();
    expect(sec([3])).toBeUndefined();
    expect(sec([], "TEXT")).toMatch(/^preamble\r\n--XX/);
    expect(sectionBytes(msg, tree, { path: [], kind: "HEADER.FIELDS", fields: ["subject", "TO"] })!.toString()).toBe(
      "To: undisclosed-recipients:;\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n\r\n",
    );
  });

  test("header field filters keep folded lines", () => {
    const h = Buffer.from("A: 1\r\nB: 2\r\n  more\r\nC: 3\r\n\r\n");
    expect(filterHeader(h, ["b"], false).toString()).toBe("B: 2\r\n  more\r\n\r\n");
    expect(filterHeader(h, ["b"], true).toString()).toBe("A: 1\r\nC: 3\r\n\r\n");
  });

  test("a message without a body or header still has a structure", async () => {
    for (const m of ["", "Subject: x\r\n", "no header at all\r\n", "Content-Type: multipart/mixed\r\n\r\nx\r\n"]) {
      const b = Buffer.from(m);
      const tree = await parseMime(b);
      expect(Array.isArray(bodyStructure(tree, true))).toBe(true);
    }
  });
});

describe("search keys", () => {
  test("the grammar", () => {
    const p = parseSearch(frameArgs('OR (FROM "a" SEEN) NOT 1:3 UID 5,7 LARGER 10 SINCE 1-Feb-2024 HEADER X-Y "z" MODSEQ 5'), "UTF-8");
    expect(p.usesModseq).toBe(true);
    expect(p.needsContent).toBe(true);
    expect(p.key).toMatchObject({ op: "and" });
  });

  test.each([
    ["unknown key", "FOO"],
    ["missing argument", "FROM"],
    ["bad date", "SINCE 2024-02-01"],
    ["bad number", "LARGER x"],
    ["empty list", "()"],
  ])("%s is BAD", (_n, text) => {
    expect(() => parseSearch(frameArgs(text), "UTF-8")).toThrow(ImapError);
  });

  test("unknown charsets are NO [BADCHARSET]", () => {
    try {
      parseSearch(frameArgs("ALL"), "KOI8-R");
      throw new Error("no error");
    } catch (e) {
      expect((e as ImapError).code?.name).toBe("BADCHARSET");
    }
  });
});

function frameArgs(text: string) {
  return one(`A1 SEARCH ${text}\r\n`).args;
}

describe("properties: random input never crashes the reader", () => {
  test("random bytes through framer and parser give frames or ParseErrors only", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 8 }), (chunks) => {
        const f = new Framer(LIMITS);
        for (const c of chunks) {
          const { events } = f.push(Buffer.from(c));
          for (const e of events) {
            if (e.type !== "command") continue;
            try {
              parseCommand(e.frame);
            } catch (err) {
              if (!(err instanceof ParseError)) throw err;
            }
          }
        }
        return f.buffered <= LIMITS.maxLine + LIMITS.maxLiteral;
      }),
      { numRuns: 500 },
    );
  });

  test("IMAP-like lines (real commands, mutated) never throw anything but ParseError", () => {
    const seeds = [
      "A1 FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)]<0.10>)",
      'A2 LOGIN "user" {3}',
      "A3 UID STORE 1,2:4 +FLAGS.SILENT (\\Seen)",
      'A4 SEARCH OR FROM "x" (NOT SEEN) UID 1:*',
      'A5 LIST (SPECIAL-USE) "" "*" RETURN (STATUS (MESSAGES))',
      'A6 APPEND INBOX (\\Seen) " 1-Jan-2024 00:00:00 +0000" ~{3+}',
    ];
    fc.assert(
      fc.property(
        fc.constantFrom(...seeds),
        fc.array(fc.tuple(fc.nat(80), fc.constantFrom("(", ")", "[", "]", '"', "\\", "{", "}", " ", "<", ">", "\x00", "~", "5", "+")), {
          maxLength: 6,
        }),
        (seed, muts) => {
          let s = seed;
          for (const [pos, ch] of muts) s = s.slice(0, pos) + ch + s.slice(pos + 1);
          const f = new Framer({ ...LIMITS, maxNonSync: 1000 });
          for (const e of f.push(Buffer.from(`${s}\r\nabc\r\n`, "latin1")).events) {
            if (e.type !== "command") continue;
            try {
              parseCommand(e.frame);
            } catch (err) {
              if (!(err instanceof ParseError)) throw err;
            }
          }
        },
      ),
      { numRuns: 1000 },
    );
  });
});
