/**
 * The SMTP server with real clients: delivery through nodemailer (users, aliases, several
 * targets, sub-addresses, forwards), the raw protocol corners, and one log line per message.
 */
import { Writable } from "node:stream";
import nodemailer from "nodemailer";
import pino from "pino";
import { decodeEntry } from "../queue/spool";
import { inbox, message, queued, RawClient, sendRaw, startTestSmtp, type TestServer, testConfig } from "./helpers/smtp";

let server: TestServer;
const logLines: Array<Record<string, unknown>> = [];

beforeAll(async () => {
  const config = testConfig({
    aliases: { bin: "lx", team: ["lx", "lei"], friends: ["lei", "wangwu@sohu.com"] },
  });
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of chunk.toString().split("\n").filter(Boolean)) logLines.push(JSON.parse(line));
      cb();
    },
  });
  server = await startTestSmtp(config, { log: pino({ level: "info" }, sink) });
});
afterAll(() => server.close());

const dataDir = () => server.config.dataDir;

function transport() {
  return nodemailer.createTransport({
    host: "127.0.0.1",
    port: server.port("smtp"),
    secure: false,
    tls: { rejectUnauthorized: false },
  });
}

const find = async (user: string, id: string) => (await inbox(dataDir(), user)).filter((m) => m.data.includes(`<${id}@`));

describe("delivery with nodemailer", () => {
  it("delivers to a user durably, with Return-Path and Received headers, and logs one line with the queue id", async () => {
    const info = await transport().sendMail({
      envelope: { from: "lisi@sina.com", to: ["lx@lx.com"] },
      messageId: "<nm-user@test.example>",
      from: "lisi@sina.com",
      to: "lx@lx.com",
      subject: "hello",
      text: "Hi lx,\n.a line with a leading dot\nbye\n",
    });
    expect(info.accepted).toEqual(["lx@lx.com"]);
    const queueId = /queued as ([A-Z0-9]+)/.exec(info.response)![1]!;
    const [m, ...more] = await find("lx", "nm-user");
    expect(more).toHaveLength(0);
    expect(m!.file).toMatch(/^new\//);
    expect(m!.data.startsWith("Return-Path: <lisi@sina.com>\r\nReceived: from ")).toBe(true);
    // nodemailer used STARTTLS, which the Received header records.
    expect(m!.data).toMatch(new RegExp(`by mail\\.lx\\.com \\(mailstack\\) with ESMTPS id ${queueId}\\r\\n\\tfor <lx@lx\\.com>;`));
    expect(m!.data).toContain("\r\n.a line with a leading dot\r\n");
    const lines = logLines.filter((l) => l.queueId === queueId);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      result: "accepted",
      from: "lisi@sina.com",
      to: ["lx@lx.com"],
      local: ["lx"],
      msg: "message accepted",
    });
  });

  it("delivers to an alias (bin reaches the admin), to several targets, and to user+tag", async () => {
    const t = transport();
    await t.sendMail({ from: "a@example.org", to: "bin@lx.com", subject: "bin", text: "x", messageId: "<nm-bin@test.example>" });
    await t.sendMail({ from: "a@example.org", to: "team@lx.com", subject: "team", text: "x", messageId: "<nm-team@test.example>" });
    await t.sendMail({ from: "a@example.org", to: "Lei+Lists@LX.com", subject: "tag", text: "x", messageId: "<nm-tag@test.example>" });
    expect(await find("lx", "nm-bin")).toHaveLength(1);
    expect(await find("lei", "nm-bin")).toHaveLength(0);
    expect(await find("lx", "nm-team")).toHaveLength(1);
    expect(await find("lei", "nm-team")).toHaveLength(1);
    expect(await find("lei", "nm-tag")).toHaveLength(1);
    expect(await find("lx", "nm-tag")).toHaveLength(0);
  });

  it("delivers an alias's local target and queues its external one, in one transaction", async () => {
    const before = (await queued(dataDir())).length;
    const info = await transport().sendMail({
      from: "a@example.org",
      to: "friends@lx.com",
      subject: "fwd",
      text: "x",
      messageId: "<nm-fwd@test.example>",
    });
    const queueId = /queued as ([A-Z0-9]+)/.exec(info.response)![1]!;
    expect(await find("lei", "nm-fwd")).toHaveLength(1);
    const q = await queued(dataDir());
    expect(q).toHaveLength(before + 1);
    const entry = q.map((f) => decodeEntry(f)).find((e) => e.envelope.id === queueId)!;
    expect(entry.envelope).toMatchObject({ from: "a@example.org", to: ["wangwu@sohu.com"] });
    // Relayed copies carry Received but not Return-Path (added at final delivery only).
    expect(entry.data.toString()).toMatch(/^Received: from /);
    expect(entry.data.toString()).not.toContain("Return-Path:");
  });

  it("refuses an unknown user at RCPT time with 550 5.1.1", async () => {
    await expect(transport().sendMail({ from: "a@example.org", to: "ghost@lx.com", subject: "x", text: "x" })).rejects.toMatchObject({
      responseCode: 550,
    });
  });

  it("accepts 8-bit and UTF-8 content unchanged", async () => {
    await transport().sendMail({
      envelope: { from: "张三@例子.中国", to: ["lx@lx.com"] },
      raw: Buffer.from(
        message(
          "nm-utf8",
          "正文 ünïcödé",
          "Subject: 你好\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n",
        ),
      ),
    });
    const [m] = await find("lx", "nm-utf8");
    expect(Buffer.from(m!.data, "latin1").toString("utf8")).toContain("正文 ünïcödé");
    expect(m!.data).toContain("with UTF8SMTPS id");
  });
});

describe("protocol corners (raw socket)", () => {
  let c: RawClient;
  beforeEach(async () => {
    c = await RawClient.connect(server.port("smtp"));
  });
  afterEach(() => c.destroy());

  it("greets with the host name and lists the extensions", async () => {
    const g = await c.read();
    expect(g.lines).toEqual(["220 mail.lx.com ESMTP mailstack"]);
    const e = await c.cmd("EHLO client.example");
    expect(e.code).toBe(250);
    expect(e.lines[0]).toBe("250-mail.lx.com");
    for (const ext of ["PIPELINING", "SIZE 10485760", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "STARTTLS"])
      expect(e.lines.map((l) => l.slice(4))).toContain(ext);
  });

  it("answers commands out of sequence and unknown ones with the right codes", async () => {
    await c.read();
    expect((await c.cmd("MAIL FROM:<a@example.org>")).lines[0]).toBe("503 5.5.1 Error: send HELO/EHLO first");
    expect((await c.cmd("EHLO")).code).toBe(501);
    await c.cmd("EHLO client.example");
    expect((await c.cmd("RCPT TO:<lx@lx.com>")).lines[0]).toMatch(/^503 5\.5\.1 /);
    expect((await c.cmd("DATA")).lines[0]).toMatch(/^503 5\.5\.1 /);
    expect((await c.cmd("FROB")).lines[0]).toBe("500 5.5.2 Error: command not recognized");
    expect((await c.cmd("VRFY lx")).code).toBe(502);
    expect((await c.cmd("EXPN team")).code).toBe(502);
    expect((await c.cmd("HELP")).code).toBe(214);
    expect((await c.cmd("NOOP")).lines[0]).toBe("250 2.0.0 Ok");
    expect((await c.cmd("QUIT")).code).toBe(221);
  });

  it("checks MAIL, RCPT and DATA arguments and their order", async () => {
    await c.hello();
    expect((await c.cmd("MAIL FROM:<a@example.org> FOO=bar")).lines[0]).toBe("555 5.5.4 Unsupported option: FOO");
    expect((await c.cmd("MAIL FROM:<a@example.org")).code).toBe(501);
    expect((await c.cmd("MAIL FROM:<a@example.org>")).lines[0]).toBe("250 2.1.0 Ok");
    expect((await c.cmd("MAIL FROM:<b@example.org>")).lines[0]).toBe("503 5.5.1 Error: nested MAIL command");
    expect((await c.cmd("DATA")).lines[0]).toBe("554 5.5.1 Error: no valid recipients");
    expect((await c.cmd("RCPT TO:<lx@lx.com> NOTIFY=NEVER")).code).toBe(555);
    expect((await c.cmd("RSET")).code).toBe(250);
    expect((await c.cmd("RCPT TO:<lx@lx.com>")).code).toBe(503);
    const q = await c.cmd("QUIT");
    expect(q.lines[0]).toBe("221 2.0.0 mail.lx.com Bye");
    await c.closed;
  });

  it("answers a pipelined transaction in order and accepts the null sender and <postmaster>", async () => {
    await c.hello();
    c.write("MAIL FROM:<>\r\nRCPT TO:<ghost@lx.com>\r\nRCPT TO:<Postmaster>\r\nDATA\r\n");
    const replies = [await c.read(), await c.read(), await c.read(), await c.read()];
    expect(replies.map((r) => r.code)).toEqual([250, 550, 250, 354]);
    expect(replies[1]!.lines[0]).toMatch(/^550 5\.1\.1 <ghost@lx\.com>: Recipient address rejected/);
    c.write(`${message("raw-pipe")}.\r\nQUIT\r\n`);
    expect((await c.read()).code).toBe(250);
    expect((await c.read()).code).toBe(221);
    const [m] = await find("lx", "raw-pipe");
    expect(m!.data.startsWith("Return-Path: <>\r\n")).toBe(true);
    // Relayed-in mail is stored as sent: no Date is made up for it (only for submissions).
    expect(m!.data).not.toContain("\r\nDate: ");
  });

  it("needs SMTPUTF8 for non-ASCII addresses", async () => {
    await c.hello();
    expect((await c.cmd("MAIL FROM:<用户@example.org>")).lines[0]).toMatch(/^553 5\.6\.7 /);
    expect((await c.cmd("MAIL FROM:<用户@example.org> SMTPUTF8")).code).toBe(250);
  });

  it("refuses an oversized SIZE= at MAIL", async () => {
    await c.hello();
    expect((await c.cmd("MAIL FROM:<a@example.org> SIZE=99999999999")).lines[0]).toBe("552 5.3.4 Message size exceeds fixed limit");
    expect((await c.cmd("MAIL FROM:<a@example.org> SIZE=1000")).code).toBe(250);
  });

  it("hangs up on an HTTP request", async () => {
    await c.read();
    c.write("GET / HTTP/1.1\r\nHost: mail.lx.com\r\n\r\n");
    expect((await c.read()).code).toBe(521);
    await c.closed;
  });

  it("delivers a message whose body holds lines of 1000 octets and more", async () => {
    await c.hello();
    const long = "y".repeat(998);
    const huge = "z".repeat(20000);
    const r = await sendRaw(c, "a@example.org", ["lx@lx.com"], message("raw-long", `${long}\r\n${huge}`));
    expect(r.code).toBe(250);
    const [m] = await find("lx", "raw-long");
    expect(m!.data).toContain(`\r\n${long}\r\n${huge}\r\n`);
  });

  it("delivers two messages on one connection", async () => {
    await c.hello();
    expect((await sendRaw(c, "a@example.org", ["lx@lx.com"], message("raw-two-1"))).code).toBe(250);
    expect((await sendRaw(c, "a@example.org", ["lei@lx.com"], message("raw-two-2"))).code).toBe(250);
    expect(await find("lx", "raw-two-1")).toHaveLength(1);
    expect(await find("lei", "raw-two-2")).toHaveLength(1);
  });
});
