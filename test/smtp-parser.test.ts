/**
 * The SMTP parsers alone: the DATA decoder (end of data, dot-stuffing, bare CR/LF, chunking),
 * the command line reader, address parsing, routing policy and trace headers.
 */
import fc from "fast-check";
import { loadStack } from "../config/load";
import { formatMailbox, parseMailbox, parsePathArg } from "../smtp/address";
import { countReceived, missingSubmissionHeaders, receivedHeader } from "../smtp/headers";
import { DataDecoder, LINE_TOO_LONG, LineReader } from "../smtp/parser";
import { Policy } from "../smtp/policy";
import { SmtpError } from "../smtp/reply";

/** Feeds `input` to a decoder in the given chunk sizes; returns the message and the rest, or null. */
function decode(input: Buffer, cuts: number[] = [], max = 1e9) {
  const d = new DataDecoder(max);
  let pos = 0;
  const sizes = [...cuts.filter((c) => c > 0), input.length];
  for (const size of sizes) {
    if (pos >= input.length) break;
    const chunk = input.subarray(pos, Math.min(input.length, pos + size));
    pos += chunk.length;
    const rest = d.push(chunk);
    if (rest !== null) return { ...d.result(), rest: Buffer.concat([rest, input.subarray(pos)]) };
  }
  return null;
}

const b = (s: string) => Buffer.from(s, "latin1");

describe("DataDecoder", () => {
  it("ends at CRLF.CRLF, keeps the last line's CRLF and returns what follows", () => {
    const r = decode(b("Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"))!;
    expect(r.data.toString()).toBe("Subject: x\r\n\r\nbody\r\n");
    expect(r.rest.toString()).toBe("QUIT\r\n");
    expect(r.bareLineEnds).toBe(0);
  });

  it("takes an empty message", () => {
    const r = decode(b(".\r\nNOOP\r\n"))!;
    expect(r.data.length).toBe(0);
    expect(r.rest.toString()).toBe("NOOP\r\n");
  });

  it("undoes dot-stuffing only at line starts", () => {
    const r = decode(b("..leading\r\na..b\r\n...\r\n..\r\n.\r\n"))!;
    expect(r.data.toString()).toBe(".leading\r\na..b\r\n..\r\n.\r\n");
  });

  it("finds the terminator however the stream is cut", () => {
    const input = b("a\r\n..b\r\n.\r\nRSET\r\n");
    for (let i = 1; i < input.length; i++) {
      for (let j = 1; j < 4; j++) {
        const r = decode(input, [i, j, 1, 2, 3])!;
        expect(r.data.toString()).toBe("a\r\n.b\r\n");
        expect(r.rest.toString()).toBe("RSET\r\n");
      }
    }
  });

  // The SMTP smuggling family: none of these may end DATA.
  const fakeEnds = ["\n.\n", "\r.\r", "\r\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\r", "\n.\r", "\r.\n", "\r\n\x00.\r\n", "\n..\n"];
  it.each(fakeEnds)("does not end DATA on %j and normalises it to CRLF", (fake) => {
    const smuggled = `x${fake}MAIL FROM:<evil@example.org>\r\nRCPT TO:<lx@lx.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nhi\r\n`;
    const input = b(`Subject: a\r\n\r\n${smuggled}.\r\nQUIT\r\n`);
    for (const cuts of [[], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [15, 1, 1, 1]]) {
      const r = decode(input, cuts)!;
      expect(r).not.toBeNull();
      expect(r.rest.toString()).toBe("QUIT\r\n");
      const text = r.data.toString("latin1");
      expect(text).toContain("MAIL FROM:<evil@example.org>");
      // Every line end in the stored message is CRLF.
      expect(/\r(?!\n)|(?<!\r)\n/.test(text)).toBe(false);
    }
  });

  it("counts past the size limit but does not keep the message", () => {
    const r = decode(b(`${"x".repeat(100)}\r\n.\r\n`), [], 50)!;
    expect(r.oversized).toBe(true);
    expect(r.size).toBe(102);
    expect(r.data.length).toBe(0);
  });

  it("property: a dot-stuffed CRLF message round-trips under any chunking", () => {
    const line = fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a.filter((c) => c !== 0x0d && c !== 0x0a)));
    fc.assert(
      fc.property(fc.array(line, { maxLength: 20 }), fc.array(fc.integer({ min: 1, max: 30 }), { maxLength: 30 }), (lines, cuts) => {
        const original = Buffer.concat(lines.map((l) => Buffer.concat([l, b("\r\n")])));
        const stuffed = Buffer.concat(lines.map((l) => Buffer.concat([l[0] === 0x2e ? b(".") : b(""), l, b("\r\n")])));
        const r = decode(Buffer.concat([stuffed, b(".\r\nNEXT")]), cuts);
        expect(r).not.toBeNull();
        expect(r!.data.equals(original)).toBe(true);
        expect(r!.rest.toString()).toBe("NEXT");
      }),
      { numRuns: 300 },
    );
  });

  it("property: arbitrary bytes never end DATA before the first real CRLF.CRLF", () => {
    const alphabet = fc.constantFrom(0x0d, 0x0a, 0x2e, 0x41);
    fc.assert(
      fc.property(fc.array(alphabet, { maxLength: 60 }), fc.array(fc.integer({ min: 1, max: 7 }), { maxLength: 20 }), (bytes, cuts) => {
        const body = Buffer.from(bytes);
        const input = Buffer.concat([body, b("\r\n.\r\nTAIL")]);
        // Where the stream really ends: the first CRLF.CRLF (or ".\r\n" right at the start).
        const s = input.toString("latin1");
        const first = s.startsWith(".\r\n") ? 3 : s.indexOf("\r\n.\r\n") + 5;
        const r = decode(input, cuts);
        expect(r).not.toBeNull();
        expect(r!.rest.toString("latin1")).toBe(s.slice(first));
        expect(/\r(?!\n)|(?<!\r)\n/.test(r!.data.toString("latin1"))).toBe(false);
      }),
      { numRuns: 1000 },
    );
  });
});

describe("LineReader", () => {
  it("splits at LF, drops CR, reports an over-long line once and recovers", () => {
    const r = new LineReader(10);
    r.append(b("EHLO a\r\nNOOP\n"));
    expect(r.next()!.toString()).toBe("EHLO a");
    expect(r.next()!.toString()).toBe("NOOP");
    expect(r.next()).toBeNull();
    r.append(b("x".repeat(25)));
    expect(r.next()).toBe(LINE_TOO_LONG);
    r.append(b("y".repeat(25)));
    expect(r.next()).toBeNull();
    r.append(b("zz\r\nQUIT\r\n"));
    expect(r.next()!.toString()).toBe("QUIT");
    expect(r.buffered).toBe(0);
  });

  it("hands over the rest of the buffer (start of DATA, or plaintext to discard)", () => {
    const r = new LineReader(100);
    r.append(b("STARTTLS\r\nMAIL FROM:<a@b.c>\r\n"));
    expect(r.next()!.toString()).toBe("STARTTLS");
    expect(r.take()!.toString()).toBe("MAIL FROM:<a@b.c>\r\n");
    expect(r.next()).toBeNull();
  });
});

describe("address parsing", () => {
  it("parses paths, parameters and the null sender", () => {
    expect(parsePathArg("FROM:<>", "FROM").mailbox).toBeNull();
    const p = parsePathArg("FROM:<Lisi@Sina.COM> SIZE=100 BODY=8BITMIME", "FROM");
    expect(p.mailbox).toMatchObject({ local: "Lisi", domain: "sina.com" });
    expect([...p.params]).toEqual([
      ["SIZE", "100"],
      ["BODY", "8BITMIME"],
    ]);
    expect(parsePathArg("to: <lx@lx.com.>", "TO").mailbox).toMatchObject({ local: "lx", domain: "lx.com" });
    expect(parsePathArg("TO:lx@lx.com", "TO").mailbox).toMatchObject({ local: "lx", domain: "lx.com" });
  });

  it("keeps relay tricks visible", () => {
    expect(parseMailbox("user%other@lx.com")).toMatchObject({ local: "user%other", domain: "lx.com" });
    expect(parseMailbox("other!user@lx.com")).toMatchObject({ local: "other!user", domain: "lx.com" });
    expect(parseMailbox('"user@other"@lx.com')).toMatchObject({ local: "user@other", domain: "lx.com", quoted: true });
    expect(parseMailbox("user@other@lx.com")).toMatchObject({ local: "user@other", domain: "lx.com" });
    expect(parseMailbox("@lx.com:user@other.org")).toMatchObject({ local: "user", domain: "other.org", sourceRoute: true });
    expect(parseMailbox("user@[192.0.2.7]")).toMatchObject({ domain: "[192.0.2.7]", literal: "192.0.2.7" });
    expect(parseMailbox("user@[IPv6:2001:db8::1]")).toMatchObject({ literal: "2001:db8::1" });
  });

  it("refuses what is not an address", () => {
    for (const bad of [
      "",
      "nodomain",
      "@lx.com",
      "a@",
      "a b@lx.com",
      "a@lx..com",
      "a@[1.2.3]",
      "a@[IPv6:1.2.3.4]",
      '"open@lx.com',
      "a@-x.com",
      "a\x00@lx.com",
    ])
      expect(parseMailbox(bad)).toBeNull();
    expect(() => parsePathArg("FROM:<a@b.com", "FROM")).toThrow(SmtpError);
    expect(() => parsePathArg("FROM <a@b.com>", "FROM")).toThrow(SmtpError);
    expect(() => parsePathArg("FROM:<a@b.com> SIZE=1 SIZE=2", "FROM")).toThrow(/Duplicate/);
  });

  it("formats quoted local parts back with quotes", () => {
    expect(formatMailbox(parseMailbox('"john doe"@lx.com')!)).toBe('"john doe"@lx.com');
    expect(formatMailbox(parseMailbox("lx@lx.com")!)).toBe("lx@lx.com");
  });
});

describe("routing policy", () => {
  const config = loadStack("dev", { relayDomains: ["backup.example"] });
  const policy = new Policy(config);
  const stranger = { trusted: false, authenticated: false };
  const trusted = { trusted: true, authenticated: false };
  const route = (a: string, c = stranger) => policy.route(parseMailbox(a)!, c);
  const code = (a: string, c = stranger) => {
    try {
      route(a, c);
      return 250;
    } catch (e) {
      return (e as SmtpError).reply.code;
    }
  };

  it("routes local users, aliases, sub-addresses and mixed case", () => {
    expect(route("LX@LX.COM")).toMatchObject({ kind: "local", users: ["lx"] });
    expect(route("bin@lx.com")).toMatchObject({ kind: "local", users: ["lx"] });
    expect(route("team@mail.lx.com")).toMatchObject({ kind: "local", users: ["lei", "lx"] });
    expect(route("lei+news@lx.com")).toMatchObject({ kind: "local", users: ["lei"] });
    expect(route('"lx"@lx.com')).toMatchObject({ kind: "local", users: ["lx"] });
    expect(route("lx@[127.0.0.1]")).toMatchObject({ kind: "local", users: ["lx"] });
  });

  it("refuses unknown users with 550 and every relay trick with 554, even for trusted clients", () => {
    expect(code("ghost@lx.com")).toBe(550);
    for (const trick of [
      "user%other.org@lx.com",
      '"user@other.org"@lx.com',
      "@lx.com:user@other.org",
      "user@other.org@lx.com",
      "other.org!user@lx.com",
      "user@[192.0.2.7]",
      "User%Other.Org@LX.COM",
      "lx@OTHER.org",
    ])
      expect([trick, code(trick)]).toEqual([trick, 554]);
    for (const trick of ["user%other.org@lx.com", '"user@other.org"@lx.com', "user@other.org@lx.com", "other.org!user@lx.com"])
      expect([trick, code(trick, trusted)]).toEqual([trick, 554]);
  });

  it("relays for trusted and authenticated clients and to relayDomains", () => {
    expect(route("wangwu@sohu.com", trusted)).toEqual({ kind: "relay", address: "wangwu@sohu.com" });
    expect(route("wangwu@sohu.com", { trusted: false, authenticated: true })).toEqual({ kind: "relay", address: "wangwu@sohu.com" });
    expect(route("x@backup.example")).toEqual({ kind: "relay", address: "x@backup.example" });
    expect(code("x@sub.backup.example")).toBe(554);
  });
});

describe("trace headers", () => {
  it("builds a Received header that client text cannot break", () => {
    const h = receivedHeader({
      helo: "evil\r\nX-Injected: yes (a)",
      clientName: null,
      clientAddress: "192.0.2.1",
      by: "mail.lx.com",
      protocol: "ESMTPS",
      queueId: "Q1",
      tls: { version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384" },
      for: "lx@lx.com",
      date: new Date(Date.UTC(2025, 0, 2, 3, 4, 5)),
    });
    expect(h).toBe(
      "Received: from evil??X-Injected:?yes??a? (unknown [192.0.2.1])\r\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n\tby mail.lx.com (mailstack) with ESMTPS id Q1\r\n\tfor <lx@lx.com>; Thu, 02 Jan 2025 03:04:05 +0000\r\n",
    );
  });

  it("counts Received fields in the header section only", () => {
    expect(countReceived(b("Received: a\r\n by b\r\nreceived: b\r\nSubject: x\r\n Received: folded\r\n\r\nReceived: body\r\n"))).toBe(2);
  });

  it("adds Date and Message-ID to submissions that lack them, and only then", () => {
    const now = new Date(Date.UTC(2025, 0, 2, 3, 4, 5));
    expect(missingSubmissionHeaders(b("Subject: x\r\n\r\nDate: in the body\r\n"), "Q1", "mail.lx.com", now)).toBe(
      "Date: Thu, 02 Jan 2025 03:04:05 +0000\r\nMessage-ID: <Q1@mail.lx.com>\r\n",
    );
    expect(missingSubmissionHeaders(b("DATE: x\r\nmessage-id: <a@b>\r\n\r\n"), "Q1", "mail.lx.com", now)).toBe("");
  });
});
