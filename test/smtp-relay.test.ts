/**
 * No open relay: every relay trick is refused, relaying works from trusted networks and after
 * AUTH, and plaintext AUTH is refused from untrusted clients without TLS (538) but accepted
 * after STARTTLS. Submission (587) and submissions (465) require TLS and AUTH.
 */
import nodemailer from "nodemailer";
import { decodeEntry } from "../queue/spool";
import { inbox, message, queued, RawClient, sendRaw, startTestSmtp, type TestServer, testConfig } from "./helpers/smtp";

const PLAIN_LX = Buffer.from("\0lx\0lx-password").toString("base64");
const PLAIN_BAD = Buffer.from("\0lx\0wrong").toString("base64");
const PLAIN_GHOST = Buffer.from("\0ghost\0lx-password").toString("base64");

let untrusted: TestServer; // 127.0.0.1 is NOT in trustedNetworks
let trusted: TestServer; // the dev stack: 127.0.0.0/8 is trusted

beforeAll(async () => {
  untrusted = await startTestSmtp(testConfig({ trustedNetworks: ["10.9.9.0/24"], relayDomains: ["backup.example"] }));
  trusted = await startTestSmtp(testConfig());
});
afterAll(async () => {
  await untrusted.close();
  await trusted.close();
});

async function queuedTo(s: TestServer, rcpt: string) {
  return (await queued(s.config.dataDir)).map((f) => decodeEntry(f)).filter((e) => e.envelope.to.includes(rcpt));
}

const TRICKS = [
  "user%sohu.com@lx.com",
  '"user@sohu.com"@lx.com',
  "@lx.com:user@sohu.com",
  "@lx.com,@mail.lx.com:user@sohu.com",
  "user@sohu.com@lx.com",
  "sohu.com!user@lx.com",
  "user@[192.0.2.7]",
  "user@[IPv6:2001:db8::7]",
  "USER%SOHU.COM@LX.COM",
  "User@Sohu.Com",
  "wangwu@sohu.com",
  "lx@lx.com.sohu.com",
];

describe("relay refused for strangers", () => {
  it.each(TRICKS)("RCPT TO:<%s> gets 554 5.7.1", async (rcpt) => {
    const c = await RawClient.connect(untrusted.port("smtp"));
    await c.hello();
    expect((await c.cmd("MAIL FROM:<spammer@example.org>")).code).toBe(250);
    const r = await c.cmd(`RCPT TO:<${rcpt}>`);
    expect(r.code).toBe(554);
    expect(r.lines[0]).toMatch(/^554 5\.7\.1 .*Relay access denied$/);
    c.destroy();
  });

  it("still refuses after STARTTLS without AUTH, and nothing reaches the queue", async () => {
    const c = await RawClient.connect(untrusted.port("smtp"));
    await c.hello();
    await c.startTls();
    await c.cmd("EHLO client.example");
    await c.cmd("MAIL FROM:<spammer@example.org>");
    // (Fewer than limits.badCommands refusals, or the session is cut off with 421.)
    for (const t of TRICKS.slice(0, 8)) expect((await c.cmd(`RCPT TO:<${t}>`)).code).toBe(554);
    c.destroy();
    const rcpts = (await queued(untrusted.config.dataDir)).flatMap((f) => decodeEntry(f).envelope.to);
    expect(rcpts.filter((r) => /sohu|192\.0\.2|2001:db8/i.test(r))).toEqual([]);
  });

  it("accepts mail for relayDomains from anyone (backup MX)", async () => {
    const c = await RawClient.connect(untrusted.port("smtp"));
    await c.hello();
    const r = await sendRaw(c, "a@example.org", ["x@backup.example"], message("relay-backup"));
    expect(r.code).toBe(250);
    expect(await queuedTo(untrusted, "x@backup.example")).toHaveLength(1);
    c.destroy();
  });
});

describe("relay allowed", () => {
  it("from a trusted network, into the durable queue", async () => {
    const c = await RawClient.connect(trusted.port("smtp"));
    await c.hello();
    const r = await sendRaw(c, "lx@lx.com", ["wangwu@sohu.com", "lei@lx.com"], message("relay-trusted"));
    expect(r.code).toBe(250);
    const id = /queued as (\S+)/.exec(r.text)![1];
    const q = await queuedTo(trusted, "wangwu@sohu.com");
    expect(q.map((e) => e.envelope.id)).toEqual([id]);
    expect(q[0]!.envelope.to).toEqual(["wangwu@sohu.com"]);
    expect(q[0]!.data.toString()).toContain("Message-ID: <relay-trusted@test.example>");
    expect((await inbox(trusted.config.dataDir, "lei")).filter((m) => m.data.includes("relay-trusted"))).toHaveLength(1);
    c.destroy();
  });

  it("but never the tricks, even from a trusted network", async () => {
    const c = await RawClient.connect(trusted.port("smtp"));
    await c.hello();
    await c.cmd("MAIL FROM:<lx@lx.com>");
    for (const t of ["user%sohu.com@lx.com", '"user@sohu.com"@lx.com', "user@sohu.com@lx.com", "sohu.com!user@lx.com"])
      expect((await c.cmd(`RCPT TO:<${t}>`)).code).toBe(554);
    c.destroy();
  });

  it("after AUTH over STARTTLS from an untrusted client (nodemailer)", async () => {
    const t = nodemailer.createTransport({
      host: "127.0.0.1",
      port: untrusted.port("smtp"),
      requireTLS: true,
      auth: { user: "lx", pass: "lx-password" },
      tls: { rejectUnauthorized: false },
    });
    const info = await t.sendMail({ from: "lx@lx.com", to: "zhaoliu@sohu.com", subject: "out", text: "x" });
    expect(info.accepted).toEqual(["zhaoliu@sohu.com"]);
    const [e] = await queuedTo(untrusted, "zhaoliu@sohu.com");
    expect(e!.data.toString()).toMatch(/with ESMTPSA id /);
  });
});

describe("AUTH", () => {
  it("is not offered and refused with 538 5.7.11 in plaintext from an untrusted client, accepted after STARTTLS", async () => {
    const c = await RawClient.connect(untrusted.port("smtp"));
    const ehlo = await c.hello();
    expect(ehlo.lines.some((l) => l.includes("AUTH"))).toBe(false);
    expect((await c.cmd(`AUTH PLAIN ${PLAIN_LX}`)).lines[0]).toBe("538 5.7.11 Encryption required for requested authentication mechanism");
    expect((await c.cmd("AUTH LOGIN")).code).toBe(538);
    expect((await c.startTls()).code).toBe(220);
    const ehlo2 = await c.cmd("EHLO client.example");
    expect(ehlo2.lines).toContain("250-AUTH PLAIN LOGIN");
    expect((await c.cmd(`AUTH PLAIN ${PLAIN_BAD}`)).lines[0]).toBe("535 5.7.8 Error: authentication failed");
    expect((await c.cmd(`AUTH PLAIN ${PLAIN_GHOST}`)).lines[0]).toBe("535 5.7.8 Error: authentication failed");
    expect((await c.cmd("AUTH PLAIN")).lines[0]).toBe("334 ");
    expect((await c.cmd(PLAIN_LX)).lines[0]).toBe("235 2.7.0 Authentication successful");
    expect((await c.cmd(`AUTH PLAIN ${PLAIN_LX}`)).code).toBe(503);
    expect((await sendRaw(c, "lx@lx.com", ["wangwu@sohu.com"], message("auth-relay"))).code).toBe(250);
    c.destroy();
  });

  it("LOGIN works step by step, and * cancels", async () => {
    const c = await RawClient.connect(untrusted.port("smtp"));
    await c.hello();
    await c.startTls();
    await c.cmd("EHLO client.example");
    expect((await c.cmd("AUTH LOGIN")).lines[0]).toBe("334 VXNlcm5hbWU6");
    expect((await c.cmd("*")).lines[0]).toBe("501 5.0.0 Authentication aborted");
    expect((await c.cmd("AUTH LOGIN")).code).toBe(334);
    expect((await c.cmd("not base64!")).code).toBe(501);
    expect((await c.cmd(`AUTH LOGIN ${Buffer.from("lei").toString("base64")}`)).lines[0]).toBe("334 UGFzc3dvcmQ6");
    expect((await c.cmd(Buffer.from("lei-password").toString("base64"))).code).toBe(235);
    // A submission without Date and Message-ID gets both (RFC 6409 §8).
    const r = await sendRaw(c, "lei@lx.com", ["lx@lx.com"], "From: lei@lx.com\r\nSubject: bare-submission\r\n\r\nhi\r\n");
    const queueId = /queued as (\S+)/.exec(r.text)![1]!;
    c.destroy();
    const [m] = (await inbox(untrusted.config.dataDir, "lx")).filter((x) => x.data.includes("bare-submission"));
    expect(m!.data).toMatch(/\r\nDate: \w{3}, \d{2} \w{3} \d{4} [\d:]{8} \+0000\r\n/);
    expect(m!.data).toContain(`\r\nMessage-ID: <${queueId}@mail.lx.com>\r\n`);
  });

  it("is allowed in plaintext from a trusted network", async () => {
    const c = await RawClient.connect(trusted.port("smtp"));
    const ehlo = await c.hello();
    expect(ehlo.lines).toContain("250-AUTH PLAIN LOGIN");
    expect((await c.cmd(`AUTH PLAIN ${PLAIN_LX}`)).code).toBe(235);
    c.destroy();
  });

  it("unknown mechanisms get 504", async () => {
    const c = await RawClient.connect(trusted.port("smtp"));
    await c.hello();
    expect((await c.cmd("AUTH CRAM-MD5")).code).toBe(504);
    c.destroy();
  });
});

describe("submission ports", () => {
  it("587 needs STARTTLS first, then AUTH before MAIL, even from a trusted network", async () => {
    const c = await RawClient.connect(trusted.port("submission"));
    const ehlo = await c.hello();
    expect(ehlo.lines.some((l) => l.includes("AUTH"))).toBe(false);
    expect((await c.cmd("MAIL FROM:<lx@lx.com>")).lines[0]).toBe("530 5.7.0 Must issue a STARTTLS command first");
    // A trusted client still needs TLS first on 587 (530), not the untrusted client's 538.
    expect((await c.cmd(`AUTH PLAIN ${PLAIN_LX}`)).lines[0]).toBe("530 5.7.0 Must issue a STARTTLS command first");
    await c.startTls();
    await c.cmd("EHLO client.example");
    expect((await c.cmd("MAIL FROM:<lx@lx.com>")).lines[0]).toBe("530 5.7.0 Authentication required");
    expect((await c.cmd(`AUTH PLAIN ${PLAIN_LX}`)).code).toBe(235);
    expect((await sendRaw(c, "lx@lx.com", ["lei@lx.com", "wangwu@sohu.com"], message("sub-587"))).code).toBe(250);
    c.destroy();
  });

  it("587 in plaintext from an untrusted client: AUTH is 538 5.7.11, MAIL is 530 5.7.0; both work after STARTTLS", async () => {
    const c = await RawClient.connect(untrusted.port("submission"));
    const ehlo = await c.hello();
    expect(ehlo.lines.some((l) => l.includes("AUTH"))).toBe(false);
    expect((await c.cmd(`AUTH PLAIN ${PLAIN_LX}`)).lines[0]).toBe("538 5.7.11 Encryption required for requested authentication mechanism");
    expect((await c.cmd("AUTH LOGIN")).lines[0]).toBe("538 5.7.11 Encryption required for requested authentication mechanism");
    // no SASL exchange was started: the next line is a command again
    expect((await c.cmd("MAIL FROM:<lx@lx.com>")).lines[0]).toBe("530 5.7.0 Must issue a STARTTLS command first");
    expect((await c.cmd("AUTH CRAM-MD5")).code).toBe(504);
    expect((await c.startTls()).code).toBe(220);
    expect((await c.cmd("EHLO client.example")).lines).toContain("250-AUTH PLAIN LOGIN");
    expect((await c.cmd("MAIL FROM:<lx@lx.com>")).lines[0]).toBe("530 5.7.0 Authentication required");
    expect((await c.cmd(`AUTH PLAIN ${PLAIN_LX}`)).code).toBe(235);
    expect((await sendRaw(c, "lx@lx.com", ["lei@lx.com"], message("sub-587-untrusted"))).code).toBe(250);
    c.destroy();
  });

  it("465 is implicit TLS with AUTH required (nodemailer, secure: true)", async () => {
    const c = await RawClient.connect(untrusted.port("smtps"), { tls: true });
    await c.hello();
    expect((await c.cmd("MAIL FROM:<lx@lx.com>")).code).toBe(530);
    c.destroy();
    const t = nodemailer.createTransport({
      host: "127.0.0.1",
      port: untrusted.port("smtps"),
      secure: true,
      auth: { user: "lei@lx.com", pass: "lei-password" },
      tls: { rejectUnauthorized: false },
    });
    await t.sendMail({ from: "lei@lx.com", to: "lx@lx.com", subject: "465", text: "x", messageId: "<sub-465@test.example>" });
    const got = (await inbox(untrusted.config.dataDir, "lx")).filter((m) => m.data.includes("sub-465@"));
    expect(got).toHaveLength(1);
    expect(got[0]!.data).toMatch(/with ESMTPSA id /);
  });
});
