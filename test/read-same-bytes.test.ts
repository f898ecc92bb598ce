/**
 * Issue 3: "a message delivered through the SMTP server and then read over both POP3 and IMAP,
 * with the same bytes". SMTP, POP3 and IMAP run on ephemeral loopback ports over one dataDir
 * and one MaildirStore; nodemailer sends a message with a body line that starts with a dot, a
 * line that is only a dot, 8-bit UTF-8 text and a long line; POP3 RETR (un-dot-stuffed here,
 * byte by byte) and IMAP BODY.PEEK[] (imapflow, and a raw FETCH) must both be exactly the file
 * in the Maildir, and RFC822.SIZE must equal the POP3 LIST size.
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { ImapFlow } from "imapflow";
import nodemailer from "nodemailer";
import { startImap } from "../imap";
import { silentLogger } from "../lib/log";
import type { RunningService } from "../lib/service";
import { startPop3 } from "../pop3";
import { MaildirStore } from "../store/mailstore";
import { startTestSmtp, type TestServer, testConfig } from "./helpers/smtp";
import { RawImap } from "./imap-helpers";
import { RawClient as RawPop3 } from "./pop3-helpers";

const LONG_LINE = `long:${"0123456789abcdef".repeat(250)}`; // 4005 bytes, far over 998
const BODY = [
  "Hello wangwu,",
  ".a line that starts with a dot",
  "..and one with two",
  ".",
  "Grüße aus 北京 — ünïcödé, 8-bit UTF-8 without any transfer encoding",
  LONG_LINE,
  " .dot after a space",
  "last line",
];
const MESSAGE = Buffer.from(
  [
    "From: Lisi <lisi@sina.com>",
    "To: lx@lx.com",
    "Subject: same bytes over POP3 and IMAP",
    "Message-ID: <same-bytes@sina.com>",
    "Date: Mon, 02 Jun 2025 10:00:00 +0000",
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: 8bit",
    "",
    ...BODY,
    "",
  ].join("\r\n"),
  "utf8",
);

let smtp: TestServer;
let pop3: RunningService;
let imap: RunningService;
let store: MaildirStore;
let dataDir: string;

beforeAll(async () => {
  const config = testConfig({
    listen: { address: "127.0.0.1", smtp: 0, submission: false, smtps: false, pop3: 0, pop3s: false, imap: 0, imaps: false, dns: false },
  });
  dataDir = config.dataDir;
  store = new MaildirStore(dataDir);
  smtp = await startTestSmtp(config);
  pop3 = await startPop3(config, { log: silentLogger, store });
  imap = await startImap(config, { log: silentLogger, store });
});

afterAll(async () => {
  await Promise.all([smtp?.close(), pop3?.close(), imap?.close()]);
  await store?.flush();
});

const portOf = (s: RunningService, name: string) => s.listeners.find((l) => l.name === name)!.port;

/** POP3's multi-line body: un-dot-stuffed (RFC 1939 §3), CRLF kept, the final "." removed. */
function unstuff(raw: Buffer): Buffer {
  const text = raw.toString("latin1");
  if (!text.endsWith("\r\n.\r\n") && text !== ".\r\n") throw new Error("no terminating dot line");
  const body = text === ".\r\n" ? "" : text.slice(0, -3);
  const lines = body.split("\r\n");
  // every line that starts with "." went out with one more "."
  for (const l of lines.slice(0, -1)) if (l.startsWith(".") && !l.startsWith("..")) throw new Error(`unstuffed dot line: ${l}`);
  return Buffer.from(lines.map((l) => (l.startsWith(".") ? l.slice(1) : l)).join("\r\n"), "latin1");
}

async function maildirFiles(user: string): Promise<string[]> {
  const out: string[] = [];
  for (const sub of ["new", "cur"]) {
    const dir = path.join(dataDir, "mail", user, sub);
    for (const f of await fs.readdir(dir)) out.push(path.join(dir, f));
  }
  return out;
}

test("SMTP → Maildir → POP3 RETR and IMAP BODY.PEEK[]: the same bytes, and the same size", async () => {
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: smtp.port("smtp"), secure: false, ignoreTLS: true });
  const info = await transport.sendMail({ envelope: { from: "lisi@sina.com", to: ["lx@lx.com"] }, raw: MESSAGE });
  expect(info.accepted).toEqual(["lx@lx.com"]);
  expect(info.response).toMatch(/^250 2\.0\.0 Ok: queued as /);

  // The file on disk: our Return-Path and Received, then the message exactly as sent.
  const files = await maildirFiles("lx");
  expect(files).toHaveLength(1);
  const disk = await fs.readFile(files[0]!);
  expect(disk.subarray(disk.length - MESSAGE.length).equals(MESSAGE)).toBe(true);
  expect(disk.toString("latin1").startsWith("Return-Path: <lisi@sina.com>\r\n")).toBe(true);
  expect(path.basename(files[0]!)).toContain(`,S=${disk.length}`);

  // POP3: LIST size and RETR, read raw off the socket and un-stuffed here.
  const p = await RawPop3.connect(portOf(pop3, "pop3"));
  expect(await p.line()).toMatch(/^\+OK/);
  expect(await p.login("lx")).toMatch(/^\+OK/);
  const list = await p.cmd("LIST 1");
  const listSize = Number(/^\+OK 1 (\d+)$/.exec(list)![1]);
  expect(await p.cmd("RETR 1")).toMatch(/^\+OK/);
  const stuffed = await p.body();
  // the wire had the dot lines stuffed
  expect(stuffed.includes(Buffer.from("\r\n..a line that starts with a dot\r\n"))).toBe(true);
  expect(stuffed.includes(Buffer.from("\r\n..\r\n"))).toBe(true);
  const pop3Bytes = unstuff(stuffed);
  await p.quit();

  // IMAP with imapflow: BODY.PEEK[] (source) and RFC822.SIZE.
  const client = new ImapFlow({
    host: "127.0.0.1",
    port: portOf(imap, "imap"),
    secure: false,
    doSTARTTLS: false,
    auth: { user: "lx", pass: "lx-password" },
    logger: false,
  });
  await client.connect();
  let imapBytes: Buffer;
  let imapSize: number;
  try {
    const lock = await client.getMailboxLock("INBOX");
    try {
      const msg = await client.fetchOne("1", { source: true, size: true });
      if (!msg) throw new Error("no message 1 over IMAP");
      imapBytes = msg.source!;
      imapSize = msg.size!;
    } finally {
      lock.release();
    }
  } finally {
    await client.logout();
  }

  // IMAP again, raw: the literal of BODY.PEEK[] as it is on the wire.
  const r = await RawImap.connect(portOf(imap, "imap"));
  await r.login();
  await r.cmd("EXAMINE INBOX");
  const fetched = await r.cmd("FETCH 1 (RFC822.SIZE BODY.PEEK[])");
  expect(fetched.status).toMatch(/^A\d+ OK /);
  expect(fetched.untagged).toHaveLength(1);
  // one response: the line announcing the literal, the literal (read as latin1, so byte-exact), ")"
  const m = /^\* 1 FETCH \(RFC822\.SIZE (\d+) BODY\[\] \{(\d+)\}\r\n([\s\S]*)\)$/.exec(fetched.untagged[0]!);
  expect(m).not.toBeNull();
  const rawLiteral = Buffer.from(m![3]!, "latin1");
  expect(rawLiteral.length).toBe(Number(m![2]));
  r.close();

  expect(pop3Bytes.equals(disk)).toBe(true);
  expect(imapBytes.equals(disk)).toBe(true);
  expect(rawLiteral.equals(disk)).toBe(true);
  expect(Buffer.compare(pop3Bytes, imapBytes)).toBe(0);
  expect(listSize).toBe(disk.length);
  expect(imapSize).toBe(listSize);
  expect(Number(m![1])).toBe(listSize);
  // the interesting lines survived as sent
  const text = disk.toString("utf8");
  expect(text).toContain("\r\n.a line that starts with a dot\r\n..and one with two\r\n.\r\n");
  expect(text).toContain("Grüße aus 北京 — ünïcödé");
  expect(text).toContain(`\r\n${LONG_LINE}\r\n`);
});
