/** Pure tests of the POP3 parser, argument checker and wire encoding (no sockets). */
import fc from "fast-check";
import { checkArgs } from "../pop3/command";
import { COMMANDS } from "../pop3/commands";
import { LineSplitter, MAX_COMMAND_LINE, MAX_LINE, parseCommand } from "../pop3/parser";
import { dotStuff, multiline, topOf, uidl } from "../pop3/wire";

const b = (s: string) => Buffer.from(s, "latin1");
const lines = (evs: ReturnType<LineSplitter["push"]>) => evs.map((e) => (e.kind === "line" ? e.line.toString("latin1") : "<too-long>"));

describe("LineSplitter", () => {
  test("splits CRLF and bare LF lines, keeps partial lines across chunks", () => {
    const s = new LineSplitter();
    expect(lines(s.push(b("USER lx\r\nPA")))).toEqual(["USER lx"]);
    expect(s.pending).toBe(2);
    expect(lines(s.push(b("SS secret\r")))).toEqual([]);
    expect(lines(s.push(b("\nSTAT\nNOOP\r\n")))).toEqual(["PASS secret", "STAT", "NOOP"]);
    expect(s.pending).toBe(0);
  });

  test("counts octets including the line end", () => {
    const s = new LineSplitter();
    const [crlf, lf] = s.push(b("abc\r\nabc\n"));
    expect(crlf).toMatchObject({ kind: "line", octets: 5 });
    expect(lf).toMatchObject({ kind: "line", octets: 4 });
  });

  test("an over-long line is reported once and skipped, the next line survives", () => {
    const s = new LineSplitter(16);
    expect(lines(s.push(b("x".repeat(10))))).toEqual([]);
    expect(lines(s.push(b("x".repeat(10))))).toEqual(["<too-long>"]);
    expect(s.pending).toBe(0);
    expect(lines(s.push(b("y".repeat(100))))).toEqual([]); // still discarding, nothing buffered
    expect(s.pending).toBe(0);
    expect(lines(s.push(b("zz\r\nNOOP\r\n")))).toEqual(["NOOP"]);
  });

  test("a line exactly at the limit passes, one octet more does not", () => {
    const s = new LineSplitter(10);
    expect(lines(s.push(b(`${"a".repeat(8)}\r\n`)))).toEqual(["a".repeat(8)]);
    expect(lines(s.push(b(`${"a".repeat(9)}\r\n`)))).toEqual(["<too-long>"]);
    expect(lines(s.push(b(`${"a".repeat(9)}\n`)))).toEqual(["a".repeat(9)]);
  });

  test("reset drops a partial line (STLS)", () => {
    const s = new LineSplitter();
    s.push(b("USER inject"));
    s.reset();
    expect(lines(s.push(b("ed\r\nCAPA\r\n")))).toEqual(["ed", "CAPA"]);
  });

  test("property: any byte stream in any chunking gives the same lines, each within the limit", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2000 }), fc.array(fc.nat(2000), { maxLength: 10 }), (bytes, cuts) => {
        const whole = new LineSplitter(64).push(bytes);
        const s = new LineSplitter(64);
        const pieces: ReturnType<LineSplitter["push"]> = [];
        const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((x, y) => x - y);
        let last = 0;
        for (const p of [...points, bytes.length]) {
          pieces.push(...s.push(bytes.subarray(last, p)));
          last = p;
        }
        expect(lines(pieces)).toEqual(lines(whole));
        for (const e of whole) if (e.kind === "line") expect(e.octets).toBeLessThanOrEqual(64);
        expect(s.pending).toBeLessThan(64);
      }),
      { numRuns: 300 },
    );
  });
});

describe("parseCommand", () => {
  test("keyword is case-insensitive, args split on spaces, rest is verbatim", () => {
    const r = parseCommand(b("pass  my secret  pw "));
    expect(r).toEqual({ ok: true, command: { name: "PASS", args: ["my", "secret", "pw"], rest: " my secret  pw " } });
    expect(parseCommand(b("TOP 1 10"))).toEqual({ ok: true, command: { name: "TOP", args: ["1", "10"], rest: "1 10" } });
    expect(parseCommand(b("STAT"))).toEqual({ ok: true, command: { name: "STAT", args: [], rest: "" } });
  });

  test("RFC 2449: 255 octets including CRLF is the limit for a command line", () => {
    const ok = b(`USER ${"a".repeat(MAX_COMMAND_LINE - 2 - 5)}`);
    expect(parseCommand(ok, ok.length + 2).ok).toBe(true);
    const long = b(`USER ${"a".repeat(MAX_COMMAND_LINE - 1 - 5)}`);
    expect(parseCommand(long, long.length + 2)).toEqual({ ok: false, error: "Line too long." });
    expect(MAX_LINE).toBeGreaterThan(MAX_COMMAND_LINE);
  });

  test("garbage is an error, never an exception", () => {
    for (const g of ["", " ", "\x00\x01", "LISTX", "LI", "12 34", "ÄÖÜ", "RETR\x001", "USER a\x1bb"])
      expect(parseCommand(b(g)).ok).toBe(false);
  });

  test("property: random bytes never throw and only 3-4 letter keywords parse", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const r = parseCommand(Buffer.from(bytes));
        if (r.ok) {
          expect(r.command.name).toMatch(/^[A-Z]{3,4}$/);
          expect(bytes.length + 2).toBeLessThanOrEqual(MAX_COMMAND_LINE);
        } else expect(typeof r.error).toBe("string");
      }),
      { numRuns: 1000 },
    );
  });
});

describe("command table and generic argument checks", () => {
  const check = (line: string) => {
    const p = parseCommand(b(line));
    if (!p.ok) throw new Error(p.error);
    return checkArgs(COMMANDS.get(p.command.name)!, p.command);
  };

  test("every RFC 1939/2449/2595/5034 command is registered with its states", () => {
    expect([...COMMANDS.keys()].sort()).toEqual(
      ["AUTH", "CAPA", "DELE", "LIST", "NOOP", "PASS", "QUIT", "RETR", "RSET", "STAT", "STLS", "TOP", "UIDL", "USER"].sort(),
    );
    for (const c of ["USER", "PASS", "AUTH", "STLS"]) expect(COMMANDS.get(c)!.states).toEqual(["AUTHORIZATION"]);
    for (const c of ["STAT", "LIST", "RETR", "DELE", "RSET", "UIDL", "TOP"]) expect(COMMANDS.get(c)!.states).toEqual(["TRANSACTION"]);
    for (const c of ["QUIT", "CAPA", "NOOP"]) expect(COMMANDS.get(c)!.states).toContain("TRANSACTION");
  });

  test("arguments are checked before any handler", () => {
    expect(check("RETR 3")).toEqual({ ok: true, values: { msg: 3 } });
    expect(check("TOP 1 0")).toEqual({ ok: true, values: { msg: 1, lines: 0 } });
    expect(check("LIST")).toEqual({ ok: true, values: {} });
    expect(check("RETR")).toEqual({ ok: false, error: "Missing argument: msg." });
    expect(check("RETR x")).toEqual({ ok: false, error: "Invalid message number: x" });
    expect(check("RETR -1")).toEqual({ ok: false, error: "Invalid message number: -1" });
    expect(check("RETR 1 2")).toEqual({ ok: false, error: "Too many arguments." });
    expect(check("TOP 1")).toEqual({ ok: false, error: "Missing argument: lines." });
    expect(check("TOP 1 many")).toEqual({ ok: false, error: "Invalid number of lines: many" });
    expect(check("STAT 1")).toEqual({ ok: false, error: "STAT takes no arguments." });
    expect(check("RETR 99999999999")).toEqual({ ok: false, error: "Invalid message number: 99999999999" });
    expect(check("PASS a b c")).toEqual({ ok: true, values: { password: "a b c" } });
    expect(check("USER")).toEqual({ ok: false, error: "Missing argument: name." });
    expect(check("AUTH PLAIN =")).toEqual({ ok: true, values: { mechanism: "PLAIN", initial: "=" } });
  });
});

describe("wire encoding", () => {
  test("dot-stuffing: lines starting with '.' get another; terminator added", () => {
    expect(dotStuff(b(".first\r\nmid\r\n.\r\n..x\r\nend.\r\n")).toString()).toBe("..first\r\nmid\r\n..\r\n...x\r\nend.\r\n.\r\n");
    expect(dotStuff(b("no final newline")).toString()).toBe("no final newline\r\n.\r\n");
    expect(dotStuff(b("")).toString()).toBe(".\r\n");
    expect(dotStuff(b("a\r\n.")).toString()).toBe("a\r\n..\r\n.\r\n");
  });

  test("property: un-stuffing the wire form gives back the message", () => {
    fc.assert(
      fc.property(fc.array(fc.stringMatching(/^[.a ]{0,5}$/), { maxLength: 20 }), (ls) => {
        const msg = b(ls.map((l) => `${l}\r\n`).join(""));
        const wire = dotStuff(msg).toString("latin1");
        expect(wire.endsWith("\r\n.\r\n") || wire === ".\r\n").toBe(true);
        const body = wire.slice(0, wire.length - 3).split("\r\n");
        body.pop();
        for (const l of body) expect(l === ".").toBe(false); // the terminator never appears early
        expect(
          body
            .map((l) => (l.startsWith(".") ? l.slice(1) : l))
            .map((l) => `${l}\r\n`)
            .join(""),
        ).toBe(msg.toString("latin1"));
      }),
    );
  });

  test("property: dot-stuffing equals a line-by-line reference on arbitrary bytes", () => {
    const reference = (m: Buffer) => {
      let text = m.toString("latin1");
      if (text.length > 0 && !text.endsWith("\r\n")) text = text.endsWith("\n") ? `${text.slice(0, -1)}\r\n` : `${text}\r\n`;
      return `${text
        .split("\n")
        .map((l) => (l.startsWith(".") ? `.${l}` : l))
        .join("\n")}.\r\n`;
    };
    fc.assert(
      fc.property(fc.array(fc.constantFrom(".", "\r", "\n", "a", "\r\n", "\n."), { maxLength: 40 }), (parts) => {
        const m = b(parts.join(""));
        expect(dotStuff(m).toString("latin1")).toBe(reference(m));
      }),
      { numRuns: 500 },
    );
  });

  test("TOP: header, blank line, n body lines", () => {
    const m = b("Subject: x\r\nFrom: a\r\n\r\nl1\r\nl2\r\nl3\r\n");
    expect(topOf(m, 0).toString()).toBe("Subject: x\r\nFrom: a\r\n\r\n");
    expect(topOf(m, 2).toString()).toBe("Subject: x\r\nFrom: a\r\n\r\nl1\r\nl2\r\n");
    expect(topOf(m, 99).toString()).toBe(m.toString());
    expect(topOf(b("Subject: only header\r\n"), 5).toString()).toBe("Subject: only header\r\n");
    expect(topOf(b("\r\nbody\r\n"), 0).toString()).toBe("\r\n");
  });

  test("multi-line protocol responses are stuffed and terminated", () => {
    expect(multiline("2 messages", ["1 10", "2 20"])).toBe("+OK 2 messages\r\n1 10\r\n2 20\r\n.\r\n");
    expect(multiline("", [])).toBe("+OK\r\n.\r\n");
  });

  test("UIDL is Dovecot's %08Xu%08Xv (Dovecot prints lower-case hex)", () => {
    expect(uidl(1, 1700000000)).toBe("000000016553f100");
    expect(uidl(0xabc, 0xffffffff)).toBe("00000abcffffffff");
  });
});
