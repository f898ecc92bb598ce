/**
 * SEARCH's per-message fields (imap/search-fields.ts): what SUBJECT/FROM/TO/CC/BCC and SENT*
 * compare against, made from the header alone. Unit cases, and properties: the shortcut for
 * plain addresses gives exactly what the ENVELOPE path gives, and a field match never spans two
 * fields.
 */
import fc from "fast-check";
import { addresses, parseHeader } from "../imap/mime";
import {
  addressListText,
  addressText,
  FIELD,
  fieldContains,
  headerDay,
  plainAddressText,
  searchFields,
  sentDay,
} from "../imap/search-fields";

const fields = (header: string) => searchFields(Buffer.from(header));

describe("searchFields", () => {
  test("subject, address fields and the sent day; lower-cased; first occurrence wins", () => {
    const r = fields(
      [
        "Received: from x by y",
        "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= aus Berlin",
        "From: Alice Example <Alice@Example.org>",
        'To: "Doe, John" <john@example.com>, bob@example.net',
        "Cc: Team: carol@example.org, dave@example.org;",
        "BCC: secret@example.org",
        "Date: Tue, 5 Mar 2024 23:59:59 -0800",
        "Subject: second subject",
        "",
        "Subject: in the body",
        "",
      ].join("\r\n"),
    );
    expect(fieldContains(r, FIELD.subject, "grüße aus")).toBe(true);
    expect(fieldContains(r, FIELD.subject, "second")).toBe(false);
    expect(fieldContains(r, FIELD.subject, "body")).toBe(false);
    expect(fieldContains(r, FIELD.from, "alice example <alice@example.org>")).toBe(true);
    expect(fieldContains(r, FIELD.to, "doe, john <john@example.com>, bob@example.net")).toBe(true);
    expect(fieldContains(r, FIELD.cc, "team:")).toBe(true);
    expect(fieldContains(r, FIELD.cc, "dave@example.org")).toBe(true);
    expect(fieldContains(r, FIELD.bcc, "secret")).toBe(true);
    // The Date: header's own day, not converted to UTC (RFC 3501: disregarding timezone).
    expect(sentDay(r)).toBe(Date.UTC(2024, 2, 5));
  });

  test("folded fields, LF line ends, missing fields, no blank line", () => {
    const r = fields("subject: folded\n\tover lines\nFROM: x@y.z\nDate: garbage\n");
    expect(fieldContains(r, FIELD.subject, "folded\tover lines")).toBe(true);
    expect(fieldContains(r, FIELD.from, "x@y.z")).toBe(true);
    expect(fieldContains(r, FIELD.to, "")).toBe(true);
    expect(fieldContains(r, FIELD.to, "x")).toBe(false);
    expect(sentDay(r)).toBeNull();
    expect(sentDay(fields(""))).toBeNull();
  });

  test("matches what parseHeader and the ENVELOPE path would make of each field", () => {
    const header = [
      "Subject: Re: =?ISO-8859-1?Q?caf=E9?=",
      "From: =?UTF-8?B?SsO8cmdlbg==?= <j@example.de>",
      "To: undisclosed-recipients:;",
      "",
      "",
    ].join("\r\n");
    const r = fields(header);
    const parsed = parseHeader(Buffer.from(header));
    const from = parsed.find((f) => f.name === "from")!.value;
    expect(fieldContains(r, FIELD.from, addressListText(addresses(from)).toLowerCase())).toBe(true);
    expect(fieldContains(r, FIELD.from, "jürgen")).toBe(true);
    expect(fieldContains(r, FIELD.subject, "re: café")).toBe(true);
    expect(fieldContains(r, FIELD.to, "undisclosed-recipients:")).toBe(true);
  });
});

describe("properties", () => {
  const word = fc.stringMatching(/^[A-Za-z0-9]{1,8}$/);
  const local = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,10}$/);
  const domain = fc.stringMatching(/^[A-Za-z0-9]{1,8}(\.[A-Za-z0-9]{1,8}){0,2}$/);
  const plain = fc
    .tuple(fc.array(word, { maxLength: 3 }), local, domain, fc.constantFrom("bare", "angle", "named"))
    .map(([words, l, d, form]) => {
      const addr = `${l}@${d}`;
      if (form === "bare") return addr;
      if (form === "angle" || words.length === 0) return `<${addr}>`;
      return `${words.join(" ")} <${addr}>`;
    });

  test("the plain-address shortcut gives what the address parser gives", () => {
    fc.assert(
      fc.property(plain, (v) => {
        const fast = plainAddressText(v);
        expect(fast).not.toBeNull();
        expect(fast).toBe(addressListText(addresses(v)));
      }),
      { numRuns: 500 },
    );
  });

  test("anything else takes the parser's way", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 40 }), (v) => {
        const fast = plainAddressText(v);
        if (fast !== null) expect(fast).toBe(addressListText(addresses(v)));
        expect(typeof addressText(v)).toBe("string");
      }),
      { numRuns: 500 },
    );
  });

  test("a match never spans two fields", () => {
    const text = fc.string({ maxLength: 12 }).filter((s) => !/[\r\n\0]|=\?/.test(s));
    fc.assert(
      fc.property(text, text, text, (subject, to, needle) => {
        const r = fields(`Subject: ${subject}\r\nTo: ${to}\r\n\r\n`);
        const n = needle.toLowerCase();
        expect(fieldContains(r, FIELD.subject, n)).toBe(subject.trim().toLowerCase().includes(n));
      }),
      { numRuns: 500 },
    );
  });

  test("headerDay reads the day as written", () => {
    expect(headerDay("Mon, 06 Jan 2025 10:00:00 +0000")).toBe(Date.UTC(2025, 0, 6));
    expect(headerDay("6 Jan 99 23:00 -1100")).toBe(Date.UTC(1999, 0, 6));
    expect(headerDay("nonsense")).toBeNull();
  });
});
