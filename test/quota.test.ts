/**
 * Per-user quota (`users[].quota`, store/quota.ts) and where it is enforced:
 * - the usage tracker on real Maildirs (INBOX + subfolders, `,S=` sizes or stat, cache rules,
 *   reservations that are all-or-none and exact under concurrency);
 * - SMTP: 552 5.2.2 at RCPT for a mailbox at/over quota (also behind an alias), 552 5.2.2 at the
 *   end of DATA when the message does not fit, and then nobody gets it (nodemailer and a raw
 *   socket client);
 * - IMAP: APPEND (imapflow) and COPY get NO [OVERQUOTA]; MOVE still works for an over-quota user.
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { ImapFlow } from "imapflow";
import nodemailer from "nodemailer";
import type { MailConfig } from "../config/schema";
import { startImap } from "../imap";
import { silentLogger } from "../lib/log";
import type { RunningService } from "../lib/service";
import { ensureUserMaildir, parseFileName, uniqueName } from "../store/maildir";
import { isOverQuota, QuotaTracker, type Reservation, sizeFromName } from "../store/quota";
import { inbox, message, RawClient, sendRaw, startTestSmtp, type TestServer, testConfig, tmpDir } from "./helpers/smtp";
import { RawImap } from "./imap-helpers";

function setQuota(config: MailConfig, user: string, quota: number): void {
  config.users.find((u) => u.name === user)!.quota = quota;
}

/** Puts a file of `size` bytes into a folder directory, with or without `,S=` in its name. */
async function putFile(dir: string, size: number, withSize = true): Promise<string> {
  const file = path.join(dir, withSize ? `${uniqueName(size)}:2,S` : `${uniqueName()}:2,S`);
  await fs.writeFile(file, Buffer.alloc(size, 0x61));
  return file;
}

const text = (n: number) => `${"quota filler line\r\n".repeat(Math.ceil(n / 19))}`.slice(0, n);

test("sizeFromName reads ,S= before the :2, info, as maildir.ts parseFileName does", () => {
  for (const name of [
    "1700000000.M1P2Q3R4.host,S=1234,W=1260:2,S",
    "1700000000.M1P2Q3R4.host,S=1234:2,",
    "1700000000.M1P2Q3R4.host,S=0",
    "1700000000.M1P2Q3R4.host,W=1260,S=77:2,RS",
    "1700000000.M1P2Q3R4.host",
    "1700000000.M1P2Q3R4.host:2,S",
    "1700000000.M1P2Q3R4.host,S=:2,",
    "1700000000.M1P2Q3R4.host:2,,S=5",
    uniqueName(98765, 99999),
  ])
    expect([name, sizeFromName(name)]).toEqual([name, parseFileName(name).size]);
});

describe("QuotaTracker on a Maildir", () => {
  let dataDir: string;
  let root: string;
  beforeEach(async () => {
    dataDir = tmpDir("mailstack-quota-");
    root = await ensureUserMaildir(dataDir, "lx");
  });

  test("counts INBOX new/ and cur/ and every subfolder, by ,S= or by stat; not tmp/", async () => {
    const q = new QuotaTracker(dataDir, [{ name: "lx", quota: 100_000 }], { ttlMs: 0 });
    expect(await q.usage("lx")).toBe(0);
    await putFile(path.join(root, "new"), 1000);
    await putFile(path.join(root, "cur"), 2000);
    await putFile(path.join(root, ".Sent", "cur"), 300);
    await putFile(path.join(root, ".Trash", "new"), 40, false); // no S=: stat()ed
    await fs.mkdir(path.join(root, ".Archive.2024", "cur"), { recursive: true });
    await putFile(path.join(root, ".Archive.2024", "cur"), 5);
    await fs.writeFile(path.join(root, "tmp", "half-written"), Buffer.alloc(7777));
    expect(await q.usage("lx")).toBe(3345);
    // the S= size is what counts, as in Maildir++ (the file may be shorter, e.g. sparse or CRLF)
    const liar = path.join(root, "cur", `${uniqueName(50_000)}:2,`);
    await fs.writeFile(liar, "x");
    expect(await q.usage("lx")).toBe(53_345);
    await fs.unlink(liar);
    // removal and a deleted folder are seen
    await fs.rm(path.join(root, ".Archive.2024"), { recursive: true });
    expect(await q.usage("lx")).toBe(3340);
  });

  test("a user without a Maildir uses nothing; users without a quota are never looked at", async () => {
    const q = new QuotaTracker(dataDir, [{ name: "lx", quota: 10 }, { name: "lei" }], { ttlMs: 0 });
    expect(await q.usage("nobody-yet")).toBe(0);
    expect(q.limit("lei")).toBeUndefined();
    expect(q.applies(["lei"])).toBe(false);
    expect(q.applies(["lei", "lx"])).toBe(true);
    const r = await q.reserve(["lei"], 10 ** 12);
    expect(isOverQuota(r)).toBe(false);
  });

  test("reserve: all or none, exact under concurrency, commit counts at once, release gives back", async () => {
    const q = new QuotaTracker(dataDir, [{ name: "lx", quota: 10_000 }], { ttlMs: 60_000 });
    await putFile(path.join(root, "cur"), 4000);
    // ten concurrent 1000-byte writes into 6000 free bytes: exactly six fit
    const results = await Promise.all(Array.from({ length: 10 }, () => q.reserve(["lx"], 1000)));
    const granted = results.filter((r): r is Reservation => !isOverQuota(r));
    expect(granted).toHaveLength(6);
    const refused = results.find(isOverQuota)!;
    expect(refused).toMatchObject({ user: "lx", usage: 10_000, limit: 10_000 });
    for (const r of granted.slice(0, 3)) r.commit();
    for (const r of granted.slice(3)) r.release();
    // the long TTL means no rescan: the commits alone moved the usage
    expect(await q.usage("lx")).toBe(7000);
    expect(await q.firstFull(["lx"])).toBeNull();
    const last = await q.reserve(["lx"], 3000);
    expect(isOverQuota(last)).toBe(false);
    (last as Reservation).commit();
    expect(await q.firstFull(["lx"])).toEqual({ user: "lx", usage: 10_000, limit: 10_000 });
    expect(isOverQuota(await q.reserve(["lx"], 1))).toBe(true);
  });

  test("a fresh scan does not count our own commits twice", async () => {
    const q = new QuotaTracker(dataDir, [{ name: "lx", quota: 1_000_000 }], { ttlMs: 0 });
    expect(await q.usage("lx")).toBe(0);
    const r = (await q.reserve(["lx"], 1234)) as Reservation;
    await putFile(path.join(root, "new"), 1234);
    r.commit();
    expect(await q.usage("lx")).toBe(1234);
    expect(await q.usage("lx")).toBe(1234);
  });

  test("with several users, one over quota refuses the reservation for all", async () => {
    const q = new QuotaTracker(
      dataDir,
      [
        { name: "lx", quota: 500 },
        { name: "lei", quota: 100_000 },
      ],
      { ttlMs: 0 },
    );
    const r = await q.reserve(["lei", "lx"], 600);
    expect(r).toMatchObject({ user: "lx", limit: 500 });
    expect(await q.usage("lei")).toBe(0);
  });
});

describe("SMTP", () => {
  let srv: TestServer;
  let config: MailConfig;
  beforeAll(async () => {
    config = testConfig();
    setQuota(config, "lx", 20_000);
    setQuota(config, "lei", 1_000_000);
    // TTL 0: this test changes the Maildir behind the server's back and wants it seen at once.
    srv = await startTestSmtp(config, { quota: new QuotaTracker(config.dataDir, config.users, { ttlMs: 0 }) });
  });
  afterAll(() => srv.close());

  const transport = () => nodemailer.createTransport({ host: "127.0.0.1", port: srv.port("smtp"), ignoreTLS: true });
  const lxRoot = () => path.join(config.dataDir, "mail", "lx");

  test("DATA that does not fit is refused with 552 5.2.2 (nodemailer); smaller mail still fits", async () => {
    const t = transport();
    for (const n of [1, 2])
      await t.sendMail({
        from: "lisi@sina.com",
        to: "lx@lx.com",
        subject: `fill ${n}`,
        text: text(8000),
        messageId: `<fill${n}@sina.com>`,
      });
    const err = await t
      .sendMail({ from: "lisi@sina.com", to: "lx@lx.com", subject: "fill 3", text: text(8000), messageId: "<fill3@sina.com>" })
      .then(
        () => null,
        (e: { responseCode?: number; response?: string }) => e,
      );
    expect(err?.responseCode).toBe(552);
    expect(err?.response).toBe("552 5.2.2 <lx@lx.com>: Mailbox full");
    const box = await inbox(config.dataDir, "lx");
    expect(box.map((m) => /Message-ID: (\S+)/.exec(m.data)![1]).sort()).toEqual(["<fill1@sina.com>", "<fill2@sina.com>"]);
    await t.sendMail({ from: "lisi@sina.com", to: "lx@lx.com", subject: "small", text: "small", messageId: "<small@sina.com>" });
    expect(await inbox(config.dataDir, "lx")).toHaveLength(3);
  });

  test("RCPT for a full mailbox gets 552 5.2.2, also through an alias; others are accepted", async () => {
    // Trash counts too: this pushes lx over quota
    const extra = await putFile(path.join(lxRoot(), ".Trash", "cur"), 5000);
    try {
      const c = await RawClient.connect(srv.port("smtp"));
      await c.hello();
      expect((await c.cmd("MAIL FROM:<lisi@sina.com>")).code).toBe(250);
      expect((await c.cmd("RCPT TO:<lx@lx.com>")).lines[0]).toBe("552 5.2.2 <lx@lx.com>: Mailbox full");
      expect((await c.cmd("RCPT TO:<LX+tag@lx.com>")).code).toBe(552);
      expect((await c.cmd("RCPT TO:<team@lx.com>")).lines[0]).toBe("552 5.2.2 <team@lx.com>: Mailbox full");
      expect((await c.cmd("RCPT TO:<bin@lx.com>")).code).toBe(552);
      expect((await c.cmd("RCPT TO:<lei@lx.com>")).code).toBe(250);
      const before = (await inbox(config.dataDir, "lx")).length;
      expect((await c.cmd("DATA")).code).toBe(354);
      c.write(`${message("to-lei-only")}.\r\n`);
      expect((await c.read()).code).toBe(250);
      expect(await inbox(config.dataDir, "lx")).toHaveLength(before);
      expect((await inbox(config.dataDir, "lei")).some((m) => m.data.includes("to-lei-only"))).toBe(true);
      c.destroy();
    } finally {
      await fs.unlink(extra);
    }
  });

  test("several local recipients: if the message does not fit for one, nobody gets it", async () => {
    const c = await RawClient.connect(srv.port("smtp"));
    await c.hello();
    const lxBefore = (await inbox(config.dataDir, "lx")).length;
    const leiBefore = (await inbox(config.dataDir, "lei")).length;
    // lx is under quota (RCPT accepts) but has less than 4 KB left
    const r = await sendRaw(c, "lisi@sina.com", ["lei@lx.com", "lx@lx.com"], message("both-or-none", text(4000)));
    expect(r.lines[0]).toBe("552 5.2.2 <lx@lx.com>: Mailbox full");
    expect(await inbox(config.dataDir, "lx")).toHaveLength(lxBefore);
    expect(await inbox(config.dataDir, "lei")).toHaveLength(leiBefore);
    // the session goes on; the same message to lei alone is delivered
    expect((await sendRaw(c, "lisi@sina.com", ["lei@lx.com"], message("lei-alone", text(4000)))).code).toBe(250);
    expect(await inbox(config.dataDir, "lei")).toHaveLength(leiBefore + 1);
    c.destroy();
  });

  test("the server's own default tracker counts its deliveries at once (no rescan needed)", async () => {
    const cfg = testConfig();
    setQuota(cfg, "lei", 12_000);
    const s = await startTestSmtp(cfg);
    try {
      const t = nodemailer.createTransport({ host: "127.0.0.1", port: s.port("smtp"), ignoreTLS: true });
      await t.sendMail({ from: "lisi@sina.com", to: "lei@lx.com", subject: "one", text: text(5000) });
      await t.sendMail({ from: "lisi@sina.com", to: "lei@lx.com", subject: "two", text: text(5000) });
      await expect(t.sendMail({ from: "lisi@sina.com", to: "lei@lx.com", subject: "three", text: text(5000) })).rejects.toMatchObject({
        responseCode: 552,
      });
      expect(await inbox(cfg.dataDir, "lei")).toHaveLength(2);
      // a user without a quota is not limited
      await t.sendMail({ from: "lisi@sina.com", to: "lx@lx.com", subject: "big", text: text(200_000) });
    } finally {
      await s.close();
    }
  });
});

describe("IMAP", () => {
  let config: MailConfig;
  let imap: RunningService;
  let port: number;
  let client: ImapFlow;
  beforeAll(async () => {
    config = testConfig({
      listen: {
        address: "127.0.0.1",
        smtp: false,
        submission: false,
        smtps: false,
        pop3: false,
        pop3s: false,
        imap: 0,
        imaps: false,
        dns: false,
      },
    });
    setQuota(config, "lx", 20_000);
    // TTL 0: a file put into the Maildir behind the server's back is seen at once.
    imap = await startImap(config, { log: silentLogger, quota: new QuotaTracker(config.dataDir, config.users, { ttlMs: 0 }) });
    port = imap.listeners.find((l) => l.name === "imap")!.port;
    client = new ImapFlow({
      host: "127.0.0.1",
      port,
      secure: false,
      doSTARTTLS: false,
      auth: { user: "lx", pass: "lx-password" },
      logger: false,
    });
    await client.connect();
  });
  afterAll(async () => {
    await client.logout().catch(() => undefined);
    await imap.close();
  });

  test("APPEND within quota works; one that does not fit gets NO [OVERQUOTA] (imapflow)", async () => {
    const msg = (n: number) => `From: lx@lx.com\r\nSubject: append ${n}\r\n\r\n${text(7000)}`;
    expect(await client.append("INBOX", msg(1))).toMatchObject({ uid: 1 });
    expect(await client.append("Sent", msg(2), ["\\Seen"])).toMatchObject({ uid: 1 });
    const err = await client.append("Drafts", msg(3)).then(
      () => null,
      (e: { serverResponseCode?: string; response?: string }) => e,
    );
    expect(err?.serverResponseCode).toBe("OVERQUOTA");
    expect(err?.response).toMatch(/Quota exceeded/);
    const drafts = await client.status("Drafts", { messages: true });
    expect(drafts).toMatchObject({ messages: 0 });
    expect(await client.append("Drafts", "Subject: tiny\r\n\r\nok\r\n")).toMatchObject({ uid: 1 });
  });

  test("COPY that does not fit is NO [OVERQUOTA]; MOVE of an over-quota user still works", async () => {
    const c = await RawImap.connect(port);
    await c.login();
    await c.cmd("SELECT INBOX");
    expect((await c.cmd("COPY 1 Trash")).status).toMatch(/^A\d+ NO \[OVERQUOTA\] Quota exceeded/);
    expect((await c.cmd("STATUS Trash (MESSAGES)")).untagged[0]).toContain("MESSAGES 0");
    // now over quota by a file put there by something else (e.g. delivery in another process)
    const root = path.join(config.dataDir, "mail", "lx");
    await putFile(path.join(root, ".Junk", "cur"), 10_000);
    const again = await c.cmd("UID COPY 1 Trash");
    expect(again.status).toMatch(/^A\d+ NO \[OVERQUOTA\]/);
    // MOVE to Trash (a client's "delete") does not grow usage: allowed
    const moved = await c.cmd("MOVE 1 Trash");
    expect(moved.status).toMatch(/^A\d+ OK .*MOVE completed/);
    expect(moved.untagged.join("\n")).toMatch(/COPYUID/);
    expect((await c.cmd("STATUS Trash (MESSAGES)")).untagged[0]).toContain("MESSAGES 1");
    // still over quota: even a tiny APPEND is refused
    const tiny = "Subject: x\r\n\r\ny\r\n";
    expect((await c.cmd(`APPEND INBOX {${tiny.length}+}\r\n${tiny}`)).status).toMatch(/^A\d+ NO \[OVERQUOTA\]/);
    c.close();
  });
});
