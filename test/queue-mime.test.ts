/** The queue's MIME helpers: hop counting, quoted-printable, and the 8-bit → 7-bit downgrade. */
import fc from "fast-check";
import { simpleParser } from "mailparser";
import { buildDsn } from "../queue/dsn";
import { countReceived, downgrade8bit, encodeQuotedPrintable } from "../queue/mime";
import { orderMx, resolverServer } from "../queue/nexthop";

const crlf = (b: Buffer) => Buffer.from(b.toString("latin1").replace(/\r?\n/g, "\r\n"), "latin1");

test("quoted-printable: 7-bit, lines of at most 76, and decodes back to the bytes (line ends as CRLF)", async () => {
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ maxLength: 400 }), async (arr) => {
      const body = Buffer.from(arr);
      const qp = encodeQuotedPrintable(body);
      for (const line of qp.split("\r\n")) expect(line.length).toBeLessThanOrEqual(76);
      expect(/^[\x09\x0d\x0a\x20-\x7e]*$/.test(qp)).toBe(true);
      const msg = `Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=x.bin\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n${qp}`;
      const parsed = await simpleParser(Buffer.from(msg, "latin1"));
      const got = parsed.attachments[0]?.content ?? Buffer.alloc(0);
      // Bare LF becomes a hard line break (CRLF); everything else is byte-exact.
      const expected = Buffer.from(body.toString("latin1").replace(/(?<!\r)\n/g, "\r\n"), "latin1");
      expect(got.equals(expected)).toBe(true);
    }),
    { numRuns: 150 },
  );
});

test("downgrade keeps every 7-bit part byte for byte and re-encodes only the 8-bit ones", async () => {
  const msg = crlf(
    Buffer.from(
      'Subject: x\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary="==b"\n\n--==b\nContent-Type: text/plain; charset=us-ascii\n\nplain part\n--==b\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n<p>Grüße</p>\n--==b--\n',
      "utf8",
    ),
  );
  const down = downgrade8bit(msg)!;
  expect([...down].every((b) => b < 0x80)).toBe(true);
  expect(down.toString()).toContain("--==b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nplain part\r\n--==b\r\n");
  const parsed = await simpleParser(down);
  expect(parsed.text?.trim()).toBe("plain part");
  expect(parsed.html).toContain("<p>Grüße</p>");
  // Non-MIME 8-bit text is declared as UTF-8 text when it is valid UTF-8.
  const legacy = downgrade8bit(Buffer.from("Subject: old\r\n\r\nnaïve\r\n", "utf8"))!;
  expect(legacy.toString()).toContain("Content-Type: text/plain; charset=utf-8");
  expect((await simpleParser(legacy)).text?.trim()).toBe("naïve");
  // Impossible cases are refused, never sent as 8-bit.
  expect(downgrade8bit(Buffer.from("Subject: Grüße\r\n\r\nx\r\n", "utf8"))).toBeNull();
  expect(
    downgrade8bit(
      Buffer.from("MIME-Version: 1.0\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n\xff\xfe\r\n", "latin1"),
    ),
  ).toBeNull();
  // Nothing 8-bit: unchanged.
  const seven = Buffer.from("Subject: a\r\n\r\nb\r\n");
  expect(downgrade8bit(seven)!.equals(seven)).toBe(true);
});

test("hop count counts Received: headers in the header section only", () => {
  expect(countReceived(Buffer.from("Received: a\r\nreceived : b\r\n\tcontinued\r\nSubject: x\r\n\r\nReceived: in the body\r\n"))).toBe(2);
  expect(countReceived(Buffer.from("Subject: x\r\n\r\n"))).toBe(0);
});

test("MX ordering: by preference, equal preferences shuffled", () => {
  const mx = [
    { exchange: "c", priority: 20 },
    { exchange: "a", priority: 10 },
    { exchange: "b", priority: 10 },
  ];
  const seen = new Set<string>();
  for (let i = 0; i < 50; i++) {
    const order = orderMx(mx).map((m) => m.exchange);
    expect(order[2]).toBe("c");
    seen.add(order.join(""));
  }
  expect(seen).toEqual(new Set(["abc", "bac"]));
});

test("resolver specs: ip, ip:port, [v6]:port; anything else is an error", () => {
  expect(resolverServer("127.0.0.1")).toBe("127.0.0.1");
  expect(resolverServer("127.0.0.1:5353")).toBe("127.0.0.1:5353");
  expect(resolverServer("::1")).toBe("::1");
  expect(resolverServer("[::1]:5353")).toBe("[::1]:5353");
  expect(() => resolverServer("dns.example:53")).toThrow(/not "ip" or "ip:port"/);
});

test("a DSN is a well-formed multipart/report that mailparser reads", async () => {
  const dsn = buildDsn({
    reportingMta: "mail.sina.com",
    queueId: "ABC",
    sender: "lisi@sina.com",
    arrival: new Date("2025-01-01T00:00:00Z"),
    original: Buffer.from("Subject: hi\r\nFrom: lisi@sina.com\r\n\r\nsecret body\r\n"),
    failed: [
      {
        address: "ghost@sohu.com",
        status: "failed",
        dsnStatus: "5.1.1",
        diagnostic: "550 5.1.1 unknown\r\nuser",
        diagnosticType: "smtp",
        remoteMta: "mail.sohu.com",
      },
    ],
  });
  const parsed = await simpleParser(dsn);
  expect(parsed.subject).toBe("Undelivered Mail Returned to Sender");
  expect(parsed.text).toContain("<ghost@sohu.com> host mail.sohu.com said: 550 5.1.1 unknown user");
  const text = dsn.toString();
  expect(text).toContain("Arrival-Date: Wed, 1 Jan 2025 00:00:00 +0000");
  expect(text).toContain("Diagnostic-Code: smtp; 550 5.1.1 unknown user");
  expect(text).not.toContain("secret body");
});
