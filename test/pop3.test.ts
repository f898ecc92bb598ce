/**
 * The POP3 server, live on ephemeral loopback ports, driven by a raw socket client so that every
 * byte of every reply is checked: each command and its errors, STLS and pop3s, AUTH PLAIN, the
 * maildrop lock, DELE/RSET/QUIT semantics, limits, and random input.
 */
import { execFileSync } from "node:child_process";
import { promises as fs, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import fc from "fast-check";
import { uidl } from "../pop3/wire";
import { MaildirStore } from "../store/mailstore";
import { type Env, eventually, listFiles, loginSession, message, RawClient, startEnv } from "./pop3-helpers";

const DOTS = message("dots", [".leading dot", "..two dots", ".", "end", "."]);
const FIRST = message("first", ["hello", "line 2", "line 3", "line 4"]);
const THIRD = message("third", ["third body"]);

function plainB64(authz: string, user: string, pass: string): string {
  return Buffer.from(`${authz}\0${user}\0${pass}`).toString("base64");
}

describe("POP3 server (trusted loopback)", () => {
  let env: Env;
  const clients: RawClient[] = [];
  const connect = async (opts: { tls?: boolean } = {}) => {
    const c = await RawClient.connect(opts.tls ? env.tlsPort : env.port, { tls: opts.tls ?? false, ca: env.ca });
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    env = await startEnv();
    await env.deliver("lx", FIRST);
    await env.deliver("lx", DOTS);
    await env.deliver("lx", THIRD);
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.quit()));
  });
  afterAll(async () => {
    await env.stop();
    await fs.rm(env.dataDir, { recursive: true, force: true });
  });

  const session = async (user = "lx") => {
    const c = await loginSession(env.port, user);
    clients.push(c);
    return c;
  };

  test("greeting, CAPA before and after login", async () => {
    const c = await connect();
    expect(await c.line()).toMatch(/^\+OK mail\.lx\.com POP3 server ready/);
    const before = await c.multi("CAPA");
    expect(before.status).toBe("+OK Capability list follows");
    expect(before.lines).toEqual([
      "TOP",
      "UIDL",
      "RESP-CODES",
      "AUTH-RESP-CODE",
      "PIPELINING",
      "USER",
      "SASL PLAIN",
      "STLS",
      "IMPLEMENTATION mailstack",
    ]);
    expect(await c.login("lx")).toMatch(/^\+OK Logged in\. 3 messages/);
    const after = await c.multi("CAPA");
    expect(after.lines).toEqual(["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "IMPLEMENTATION mailstack"]);
    expect(await c.cmd("QUIT")).toBe("+OK Logging out.");
    await c.closed();
  });

  test("STAT, LIST, UIDL, RETR, TOP with exact bytes and sizes", async () => {
    const store = new MaildirStore(env.dataDir);
    const box = await store.open("lx", "INBOX");
    await box.sync();
    const infos = box.messages();
    const validity = box.uidValidity;
    await box.close();
    expect(infos).toHaveLength(3);

    const c = await session();
    const total = Buffer.byteLength(FIRST) + Buffer.byteLength(DOTS) + Buffer.byteLength(THIRD);
    expect(await c.cmd("STAT")).toBe(`+OK 3 ${total}`);

    const list = await c.multi("LIST");
    expect(list.status).toBe(`+OK 3 messages (${total} octets)`);
    expect(list.lines).toEqual([`1 ${Buffer.byteLength(FIRST)}`, `2 ${Buffer.byteLength(DOTS)}`, `3 ${Buffer.byteLength(THIRD)}`]);
    expect(await c.cmd("LIST 2")).toBe(`+OK 2 ${Buffer.byteLength(DOTS)}`);
    expect(infos.map((i) => i.size)).toEqual([FIRST, DOTS, THIRD].map((m) => Buffer.byteLength(m)));

    // UIDL: Dovecot's %08Xu%08Xv, from the same UIDs IMAP uses.
    const uids = await c.multi("UIDL");
    expect(uids.status).toBe("+OK");
    expect(uids.lines).toEqual(infos.map((info, i) => `${i + 1} ${uidl(info.uid, validity)}`));
    expect(uids.lines[0]).toMatch(/^1 [0-9a-f]{16}$/);
    expect(await c.cmd("UIDL 3")).toBe(`+OK 3 ${uidl(infos[2]!.uid, validity)}`);

    // RETR: the bytes on the wire are the message, CRLF, dot-stuffed, then ".".
    expect(await c.cmd("RETR 2")).toBe(`+OK ${Buffer.byteLength(DOTS)} octets`);
    const wire = (await c.body()).toString("latin1");
    expect(wire).toBe(`${DOTS.replace(/^\./gm, "..")}.\r\n`);
    expect(wire).toContain("\r\n..leading dot\r\n...two dots\r\n..\r\nend\r\n..\r\n.\r\n");

    // TOP: header, blank line, n body lines.
    expect(await c.cmd("TOP 1 2")).toBe("+OK");
    expect((await c.body()).toString()).toBe(`${FIRST.split("\r\n\r\n")[0]}\r\n\r\nhello\r\nline 2\r\n.\r\n`);
    expect(await c.cmd("TOP 1 0")).toBe("+OK");
    expect((await c.body()).toString()).toBe(`${FIRST.split("\r\n\r\n")[0]}\r\n\r\n.\r\n`);
    expect(await c.cmd("TOP 1 100")).toBe("+OK");
    expect((await c.body()).toString()).toBe(`${FIRST}.\r\n`);
    expect(await c.cmd("NOOP")).toBe("+OK");
    expect(await c.cmd("QUIT")).toBe("+OK Logging out.");
  });

  test("error replies for every kind of bad command", async () => {
    // Each session stays under the bad-command limit (10).
    const c = await connect();
    await c.line();
    expect(await c.cmd("STAT")).toBe("-ERR Not logged in.");
    expect(await c.cmd("RETR 1")).toBe("-ERR Not logged in.");
    expect(await c.cmd("PASS nouser")).toBe("-ERR No username given.");
    expect(await c.cmd("BLAH")).toBe("-ERR Unknown command.");
    expect(await c.cmd("")).toBe("-ERR Unknown command.");
    expect(await c.cmd("USER")).toBe("-ERR Missing argument: name.");
    expect(await c.cmd("PASS")).toBe("-ERR Missing argument: password.");
    expect(await c.cmd(`NOOP ${"x".repeat(300)}`)).toBe("-ERR Line too long.");
    expect(await c.cmd("NOOP")).toBe("+OK");
    expect(await c.cmd("QUIT")).toBe("+OK Logging out.");
    await c.closed();

    const d = await session();
    expect(await d.cmd("USER lx")).toBe("-ERR Already logged in.");
    expect(await d.cmd("STLS")).toBe("-ERR Already logged in.");
    expect(await d.cmd("RETR")).toBe("-ERR Missing argument: msg.");
    expect(await d.cmd("RETR abc")).toBe("-ERR Invalid message number: abc");
    expect(await d.cmd("RETR 0")).toBe("-ERR There's no message 0.");
    expect(await d.cmd("RETR 4")).toBe("-ERR There's no message 4.");
    expect(await d.cmd("QUIT")).toBe("+OK Logging out.");
    await d.closed();

    const e = await session();
    expect(await e.cmd("TOP 1")).toBe("-ERR Missing argument: lines.");
    expect(await e.cmd("TOP 1 x")).toBe("-ERR Invalid number of lines: x");
    expect(await e.cmd("LIST 1 2")).toBe("-ERR Too many arguments.");
    expect(await e.cmd("STAT now")).toBe("-ERR STAT takes no arguments.");
    expect(await e.cmd("UIDL 9")).toBe("-ERR There's no message 9.");
    expect(await e.cmd("DELE 9")).toBe("-ERR There's no message 9.");
    expect(await e.cmd("NOOP")).toBe("+OK");
    expect(await e.cmd("QUIT")).toBe("+OK Logging out.");
  });

  test("DELE marks, RSET unmarks, nothing is removed before QUIT", async () => {
    const c = await session();
    expect(await c.cmd("DELE 1")).toBe("+OK Message 1 marked to be deleted.");
    expect(await c.cmd("DELE 1")).toBe("-ERR Message is deleted.");
    expect(await c.cmd("RETR 1")).toBe("-ERR Message is deleted.");
    expect(await c.cmd("LIST 1")).toBe("-ERR Message is deleted.");
    expect((await c.multi("LIST")).lines.map((l) => l.split(" ")[0])).toEqual(["2", "3"]);
    expect((await c.multi("UIDL")).lines.map((l) => l.split(" ")[0])).toEqual(["2", "3"]);
    expect(await c.cmd("STAT")).toMatch(/^\+OK 2 /);
    expect(await c.cmd("RSET")).toMatch(/^\+OK 3 messages/);
    expect(await c.cmd("STAT")).toMatch(/^\+OK 3 /);
    expect(await c.cmd("DELE 3")).toMatch(/^\+OK/);
    // Dropped without QUIT: the mark is forgotten.
    c.destroy();
    const d = await session();
    expect(await d.cmd("STAT")).toMatch(/^\+OK 3 /);
    expect(await d.cmd("QUIT")).toBe("+OK Logging out.");
  });

  test("DELE + QUIT removes the message in UPDATE; RETR marks \\Seen", async () => {
    await env.deliver("lei", message("doomed", ["bye"]));
    await env.deliver("lei", message("kept", ["stay"]));
    const root = path.join(env.dataDir, "mail", "lei");
    const c = await session("lei");
    expect(await c.cmd("STAT")).toMatch(/^\+OK 2 /);
    expect(await c.cmd("RETR 2")).toMatch(/^\+OK/);
    await c.body();
    expect(await c.cmd("DELE 1")).toMatch(/^\+OK/);
    // Still on disk while the session is in TRANSACTION.
    expect([...(await listFiles(path.join(root, "new"))), ...(await listFiles(path.join(root, "cur")))]).toHaveLength(2);
    expect(await c.cmd("QUIT")).toBe("+OK Logging out, messages deleted.");
    await c.closed();
    const files = [...(await listFiles(path.join(root, "new"))), ...(await listFiles(path.join(root, "cur")))];
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/:2,S$/);
    const d = await session("lei");
    expect(await d.cmd("STAT")).toBe(`+OK 1 ${Buffer.byteLength(message("kept", ["stay"]))}`);
    expect(await d.cmd("TOP 1 0")).toBe("+OK");
    expect((await d.body()).toString()).toContain("Subject: kept");
    expect(await d.cmd("QUIT")).toBe("+OK Logging out.");
  });

  test("a client that sends QUIT and shuts its side at once still gets UPDATE", async () => {
    await env.deliver("lei", message("half-close", ["gone soon"]));
    const c = await loginSession(env.port, "lei");
    const before = Number((await c.cmd("STAT")).split(" ")[1]);
    c.write("DELE 1\r\nQUIT\r\n");
    c.socket.end();
    await c.closed();
    expect(c.unread).toBe("+OK Message 1 marked to be deleted.\r\n+OK Logging out, messages deleted.\r\n");
    const d = await session("lei");
    expect(await d.cmd("STAT")).toMatch(new RegExp(`^\\+OK ${before - 1} `));
  });

  test("RFC 1939 §8 maildrop lock: a second session gets [IN-USE] until the first ends", async () => {
    const a = await session();
    const b = await connect();
    await b.line();
    expect(await b.cmd("USER lx")).toBe("+OK");
    expect(await b.cmd("PASS lx-password")).toBe("-ERR [IN-USE] Mailbox is locked by another POP3 session.");
    // Another user is not affected.
    const other = await session("lei");
    expect(await other.cmd("QUIT")).toMatch(/^\+OK/);
    expect(await a.cmd("QUIT")).toBe("+OK Logging out.");
    // Unlocked before the +OK: the next login succeeds at once.
    expect(await b.login("lx")).toMatch(/^\+OK Logged in/);
    // A dropped connection releases the lock too.
    b.destroy();
    const c = await session();
    expect(await c.cmd("NOOP")).toBe("+OK");
  });

  test("failed logins: one answer for unknown user and wrong password", async () => {
    const c = await connect();
    await c.line();
    expect(await c.login("lx", "wrong")).toBe("-ERR [AUTH] Authentication failed.");
    expect(await c.login("nobody", "wrong")).toBe("-ERR [AUTH] Authentication failed.");
    expect(await c.login("lx@lx.com", "lx-password")).toMatch(/^\+OK Logged in/);
    expect(await c.cmd("QUIT")).toBe("+OK Logging out.");
  });

  test("AUTH PLAIN: initial response, continuation, cancel, bad base64, listing", async () => {
    const c = await connect();
    await c.line();
    expect(await c.multi("AUTH")).toEqual({ status: "+OK", lines: ["PLAIN"] });
    expect(await c.cmd("AUTH CRAM-MD5")).toBe("-ERR Unsupported authentication mechanism.");
    expect(await c.cmd("AUTH PLAIN")).toBe("+ ");
    expect(await c.cmd("*")).toBe("-ERR Authentication aborted by client.");
    expect(await c.cmd("AUTH PLAIN")).toBe("+ ");
    expect(await c.cmd("not base64!")).toBe("-ERR Invalid base64 data in continued response.");
    expect(await c.cmd(`AUTH PLAIN ${plainB64("", "lx", "wrong")}`)).toBe("-ERR [AUTH] Authentication failed.");
    expect(await c.cmd(`AUTH PLAIN ${plainB64("lei", "lx", "lx-password")}`)).toBe("-ERR [AUTH] Authentication failed.");
    // RFC 5034: a response line is not bound by the 255-octet command limit.
    const long = plainB64("", "lx", "p".repeat(400));
    expect(long.length).toBeGreaterThan(255);
    expect(await c.cmd("AUTH PLAIN")).toBe("+ ");
    expect(await c.cmd(long)).toBe("-ERR [AUTH] Authentication failed.");
    expect(await c.cmd("AUTH PLAIN")).toBe("+ ");
    expect(await c.cmd(plainB64("lx", "lx", "lx-password"))).toMatch(/^\+OK Logged in/);
    expect(await c.cmd("AUTH PLAIN")).toBe("-ERR Already logged in.");
    expect(await c.cmd("QUIT")).toMatch(/^\+OK/);

    const d = await connect();
    await d.line();
    expect(await d.cmd(`AUTH PLAIN ${plainB64("", "lei", "lei-password")}`)).toMatch(/^\+OK Logged in/);
    expect(await d.cmd("QUIT")).toMatch(/^\+OK/);
  });

  test("STLS: handshake, CAPA changes, plaintext pipelined after STLS is discarded", async () => {
    const c = await connect();
    await c.line();
    expect(await c.stls(env.ca)).toBe("+OK Begin TLS negotiation now.");
    const caps = await c.multi("CAPA");
    expect(caps.lines).not.toContain("STLS");
    expect(caps.lines).toContain("USER");
    expect(await c.cmd("STLS")).toBe("-ERR TLS is already active.");
    expect(await c.login("lx")).toMatch(/^\+OK Logged in/);
    expect(await c.cmd("QUIT")).toMatch(/^\+OK/);

    // CVE-2011-0411 class: commands sent in the same packet as STLS must not run after TLS.
    const d = await connect();
    await d.line();
    d.write("USER lx\r\n");
    expect(await d.line()).toBe("+OK");
    const reply = await d.stls(env.ca, "PASS lx-password\r\nCAPA\r\n");
    expect(reply).toBe("+OK Begin TLS negotiation now.");
    // The first reply over TLS answers our NOOP: nothing injected ran, and USER was forgotten.
    expect(await d.cmd("NOOP")).toBe("+OK");
    expect(await d.cmd("PASS lx-password")).toBe("-ERR No username given.");
  });

  test("pop3s: implicit TLS", async () => {
    const c = await connect({ tls: true });
    expect(await c.line()).toMatch(/^\+OK/);
    const caps = await c.multi("CAPA");
    expect(caps.lines).toContain("SASL PLAIN");
    expect(caps.lines).not.toContain("STLS");
    expect(await c.cmd("STLS")).toBe("-ERR TLS is already active.");
    expect(await c.login("lx")).toMatch(/^\+OK Logged in/);
    expect(await c.cmd("STAT")).toMatch(/^\+OK \d+ \d+$/);
    expect(await c.cmd("QUIT")).toMatch(/^\+OK/);
    await c.closed();
  });

  test("PIPELINING: many commands in one packet, replies in order", async () => {
    const c = await connect();
    await c.line();
    c.write(`USER lx\r\nPASS lx-password\r\n${"NOOP\r\nSTAT\r\n".repeat(50)}UIDL 1\r\nQUIT\r\n`);
    expect(await c.line()).toBe("+OK");
    expect(await c.line()).toMatch(/^\+OK Logged in/);
    for (let i = 0; i < 50; i++) {
      expect(await c.line()).toBe("+OK");
      expect(await c.line()).toMatch(/^\+OK \d+ \d+$/);
    }
    expect(await c.line()).toMatch(/^\+OK 1 [0-9a-f]{16}$/);
    expect(await c.line()).toBe("+OK Logging out.");
    await c.closed();
  });

  test("server close ends sessions and releases locks; nothing deleted", async () => {
    const dataDir = env.dataDir;
    const c = await session();
    expect(await c.cmd("DELE 1")).toMatch(/^\+OK/);
    await env.restart();
    expect(await c.line()).toBe("-ERR [SYS/TEMP] Server shutting down.");
    await c.closed();
    expect(env.dataDir).toBe(dataDir);
    const d = await session();
    expect(await d.cmd("STAT")).toMatch(/^\+OK 3 /);
    expect(await d.cmd("QUIT")).toMatch(/^\+OK/);
  });
});

describe("UIDL across restarts", () => {
  test("the same UIDLs after a restart, and new mail gets new ones", async () => {
    const env = await startEnv();
    try {
      for (let i = 0; i < 3; i++) await env.deliver("lx", message(`m${i}`, [`body ${i}`]));
      const read = async () => {
        const c = await RawClient.connect(env.port);
        await c.line();
        expect(await c.login("lx")).toMatch(/^\+OK/);
        const u = await c.multi("UIDL");
        expect(await c.cmd("QUIT")).toMatch(/^\+OK/);
        await c.closed();
        return u.lines;
      };
      const first = await read();
      expect(first).toHaveLength(3);
      await env.restart();
      expect(await read()).toEqual(first);
      await env.deliver("lx", message("m3", ["new"]));
      const after = await read();
      expect(after.slice(0, 3)).toEqual(first);
      expect(new Set(after.map((l) => l.split(" ")[1])).size).toBe(4);
    } finally {
      await env.stop();
      await fs.rm(env.dataDir, { recursive: true, force: true });
    }
  });
});

describe("a maildrop Dovecot wrote", () => {
  test("keeps Dovecot's UIDLs; LF files are served in CRLF with CRLF sizes", async () => {
    const env = await startEnv();
    try {
      const root = path.join(env.dataDir, "mail", "lx");
      for (const d of ["cur", "new", "tmp"]) await fs.mkdir(path.join(root, d), { recursive: true });
      // As Dovecot leaves it: LF line ends on disk, S= (disk) and W= (CRLF) sizes in the name.
      const lf = "From: a@example.org\nSubject: from dovecot\n\n.dot line\nbody\n";
      const crlf = lf.replace(/\n/g, "\r\n");
      const base = `1700000000.M1P1.oldhost,S=${lf.length},W=${crlf.length}`;
      await fs.writeFile(path.join(root, "cur", `${base}:2,S`), lf);
      const base2 = `1700000001.M2P1.oldhost,S=${lf.length},W=${crlf.length}`;
      await fs.writeFile(path.join(root, "new", base2), lf);
      await fs.writeFile(
        path.join(root, "dovecot-uidlist"),
        `3 V1700000000 N43 G0123456789abcdef0123456789abcdef\n41 :${base}\n42 :${base2}\n`,
      );
      const c = await loginSession(env.port);
      expect((await c.multi("UIDL")).lines).toEqual(["1 000000296553f100", "2 0000002a6553f100"]);
      expect((await c.multi("LIST")).lines).toEqual([`1 ${crlf.length}`, `2 ${crlf.length}`]);
      expect(await c.cmd("RETR 1")).toBe(`+OK ${crlf.length} octets`);
      expect((await c.body()).toString()).toBe(`${crlf.replace("\r\n.dot", "\r\n..dot")}.\r\n`);
      await c.quit();
    } finally {
      await env.stop();
      await fs.rm(env.dataDir, { recursive: true, force: true });
    }
  });
});

describe("changes by other sessions (IMAP, delivery) during a POP3 session", () => {
  test("the session's numbering stays fixed; an expunged message gets -ERR", async () => {
    const env = await startEnv();
    try {
      await env.deliver("lx", message("one", ["1"]));
      await env.deliver("lx", message("two", ["2"]));
      const c = await loginSession(env.port);
      expect(await c.cmd("STAT")).toMatch(/^\+OK 2 /);
      // New mail during the session is not seen until the next one (RFC 1939 numbering is fixed).
      await env.deliver("lx", message("three", ["3"]));
      // Another store user (as the IMAP server would) expunges message 1.
      const store = new MaildirStore(env.dataDir);
      const box = await store.open("lx", "INBOX");
      await box.sync();
      expect(await box.expunge([box.messages()[0]!.uid])).toHaveLength(1);
      await box.close();
      expect(await c.cmd("STAT")).toMatch(/^\+OK 2 /);
      expect(await c.cmd("RETR 1")).toBe("-ERR Message was removed by another session.");
      expect(await c.cmd("RETR 2")).toMatch(/^\+OK/);
      expect((await c.body()).toString()).toContain("Subject: two");
      // DELE of the vanished message still ends well at QUIT.
      expect(await c.cmd("DELE 1")).toMatch(/^\+OK/);
      expect(await c.cmd("QUIT")).toBe("+OK Logging out, messages deleted.");
      await c.closed();
      const d = await loginSession(env.port);
      expect((await d.multi("LIST")).lines).toHaveLength(2);
      expect(await d.cmd("TOP 2 0")).toBe("+OK");
      expect((await d.body()).toString()).toContain("Subject: three");
      await d.quit();
    } finally {
      await env.stop();
      await fs.rm(env.dataDir, { recursive: true, force: true });
    }
  });
});

describe("storage failures", () => {
  test("a maildrop that cannot be opened gets -ERR [SYS/TEMP], and the server goes on", async () => {
    const env = await startEnv();
    try {
      // lei's Maildir path is a plain file: the store cannot create or lock it.
      await fs.mkdir(path.join(env.dataDir, "mail"), { recursive: true });
      await fs.writeFile(path.join(env.dataDir, "mail", "lei"), "not a directory");
      const c = await RawClient.connect(env.port);
      await c.line();
      expect(await c.login("lei")).toMatch(/^-ERR \[SYS\/TEMP\] /);
      expect(await c.login("lx")).toMatch(/^\+OK Logged in/);
      await c.quit();
    } finally {
      await env.stop();
      await fs.rm(env.dataDir, { recursive: true, force: true });
    }
  });
});

// A full disk (a 1 MiB tmpfs; needs root to mount, like test/fault-disk.test.ts).
const isRoot = process.getuid?.() === 0;
(isRoot ? describe : describe.skip)("full disk", () => {
  test("users can still log in, read, and the maildrop stays locked per session", async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), "mailstack-pop3-full-"));
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", dataDir]);
    let env: Env | undefined;
    try {
      env = await startEnv({ dataDir });
      await env.deliver("lx", FIRST);
      await env.deliver("lx", DOTS);
      // Fill every last byte.
      const fh = await fs.open(path.join(dataDir, "filler"), "w");
      for (const size of [65536, 4096, 64, 1]) {
        try {
          for (;;) await fh.write(Buffer.alloc(size, 0x41));
        } catch (e) {
          expect((e as NodeJS.ErrnoException).code).toBe("ENOSPC");
        }
      }
      await fh.close();
      const c = await loginSession(env.port);
      expect(await c.cmd("RETR 2")).toBe(`+OK ${Buffer.byteLength(DOTS)} octets`);
      expect((await c.body()).toString()).toBe(`${DOTS.replace(/^\./gm, "..")}.\r\n`);
      const other = await RawClient.connect(env.port);
      await other.line();
      expect(await other.login("lx")).toBe("-ERR [IN-USE] Mailbox is locked by another POP3 session.");
      await other.quit();
      expect(await c.cmd("QUIT")).toMatch(/^\+OK/);
      await c.closed();
    } finally {
      await env?.stop();
      try {
        execFileSync("umount", [dataDir], { stdio: "ignore" });
      } catch {
        // Still busy (directory watches of this process): detach it now, freed when unused.
        execFileSync("umount", ["-l", dataDir]);
      }
      await fs.rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe("untrusted clients without TLS", () => {
  let env: Env;
  beforeAll(async () => {
    // 127.0.0.1 is not trusted here.
    env = await startEnv({ trustedNetworks: ["192.0.2.0/24"] });
    await env.deliver("lx", FIRST);
  });
  afterAll(async () => {
    await env.stop();
    await fs.rm(env.dataDir, { recursive: true, force: true });
  });

  test("no plaintext login before TLS; CAPA hides USER and PLAIN; STLS enables them", async () => {
    const c = await RawClient.connect(env.port);
    await c.line();
    const caps = await c.multi("CAPA");
    expect(caps.lines).not.toContain("USER");
    expect(caps.lines).not.toContain("SASL PLAIN");
    expect(caps.lines).toContain("STLS");
    const refused = "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.";
    expect(await c.cmd("USER lx")).toBe(refused);
    expect(await c.cmd("PASS lx-password")).toBe(refused);
    expect(await c.cmd(`AUTH PLAIN ${plainB64("", "lx", "lx-password")}`)).toBe(refused);
    expect(await c.multi("AUTH")).toEqual({ status: "+OK", lines: [] });
    await c.stls(env.ca);
    const tlsCaps = await c.multi("CAPA");
    expect(tlsCaps.lines).toContain("USER");
    expect(tlsCaps.lines).toContain("SASL PLAIN");
    expect(await c.login("lx")).toMatch(/^\+OK Logged in/);
    expect(await c.cmd("QUIT")).toMatch(/^\+OK/);
  });

  test("pop3s logs in directly", async () => {
    const c = await loginSession(env.tlsPort, "lx", { tls: true, ca: env.ca });
    expect(await c.cmd("STAT")).toMatch(/^\+OK 1 /);
    await c.quit();
  });
});

describe("limits", () => {
  let env: Env;
  beforeAll(async () => {
    env = await startEnv({ limits: { badCommands: 4, authFailures: 3, connectionsPerClient: 3 } });
  });
  afterAll(async () => {
    await env.stop();
    await fs.rm(env.dataDir, { recursive: true, force: true });
  });

  test("repeated errors disconnect", async () => {
    const c = await RawClient.connect(env.port);
    await c.line();
    c.write("FOO\r\nBAR\r\nBAZ\r\nQUX\r\nNOOP\r\n");
    for (let i = 0; i < 4; i++) expect(await c.line()).toBe("-ERR Unknown command.");
    expect(await c.line()).toBe("-ERR Too many bad commands, closing connection.");
    await c.closed();
    expect(c.unread).toBe("");
  });

  test("connections per client address", async () => {
    const open: RawClient[] = [];
    for (let i = 0; i < 3; i++) {
      const c = await RawClient.connect(env.port);
      expect(await c.line()).toMatch(/^\+OK/);
      open.push(c);
    }
    const over = await RawClient.connect(env.port);
    expect(await over.line()).toBe("-ERR [SYS/TEMP] Too many connections from your address.");
    await over.closed();
    // Over implicit TLS the connection is dropped before the handshake.
    await expect(RawClient.connect(env.tlsPort, { tls: true, ca: env.ca })).rejects.toThrow();
    await Promise.all(open.map((c) => c.quit()));
    await eventually(async () => {
      const c = await RawClient.connect(env.port);
      const ok = (await c.line().catch(() => "")).startsWith("+OK");
      c.destroy();
      return ok;
    });
  });

  test("failed logins are throttled per address; the answer stays the same", async () => {
    const c = await RawClient.connect(env.port);
    await c.line();
    for (let i = 0; i < 3; i++) expect(await c.login("lei", "wrong")).toBe("-ERR [AUTH] Authentication failed.");
    await c.quit();
    const d = await RawClient.connect(env.port);
    await d.line();
    // Throttled: even the right password fails now, with the same answer.
    expect(await d.login("lei")).toBe("-ERR [AUTH] Authentication failed.");
    await d.quit();
  });
});

describe("idle timeout", () => {
  test("closes the session without entering UPDATE", async () => {
    const env = await startEnv({ limits: { idleTimeout: 1 } });
    try {
      await env.deliver("lx", FIRST);
      const c = await loginSession(env.port);
      expect(await c.cmd("DELE 1")).toMatch(/^\+OK/);
      expect(await c.line()).toBe("-ERR Disconnected for inactivity.");
      await c.closed();
      const d = await loginSession(env.port);
      expect(await d.cmd("STAT")).toMatch(/^\+OK 1 /);
      await d.quit();
    } finally {
      await env.stop();
      await fs.rm(env.dataDir, { recursive: true, force: true });
    }
  });
});

describe("random input", () => {
  let env: Env;
  beforeAll(async () => {
    env = await startEnv();
    await env.deliver("lx", FIRST);
  });
  afterAll(async () => {
    await env.stop();
    await fs.rm(env.dataDir, { recursive: true, force: true });
  });

  const MULTILINE = /(CAPA|LIST|UIDL|AUTH|TOP|RETR)/i;
  const garbage = fc
    .array(fc.oneof(fc.uint8Array({ maxLength: 400 }), fc.constantFrom("\r\n", "\n", "NOOP", "USER ", "DELE 1", "STAT", " ")), {
      maxLength: 12,
    })
    .map((parts) => Buffer.concat(parts.map((p) => (typeof p === "string" ? Buffer.from(p) : Buffer.from(p)))))
    .filter((b) => !MULTILINE.test(b.toString("latin1")));

  /** Sends the bytes, half-closes, and returns every line the server sent until it closed. */
  const feed = async (bytes: Buffer, login: boolean): Promise<string[]> => {
    const c = login ? await loginSession(env.port) : await RawClient.connect(env.port);
    if (!login) expect(await c.line()).toMatch(/^\+OK/);
    c.write(bytes);
    c.socket.end();
    await c.closed();
    return c.unread.split("\r\n").filter((l, i, all) => i < all.length - 1 || l !== "");
  };

  test("property: random bytes get only +OK/-ERR lines, and the server survives", async () => {
    await fc.assert(
      fc.asyncProperty(garbage, fc.boolean(), async (bytes, login) => {
        const lines = await feed(bytes, login);
        for (const l of lines) expect(l).toMatch(/^(\+OK|-ERR)( |$)/);
      }),
      { numRuns: 40 },
    );
    // Still serving.
    const c = await RawClient.connect(env.port);
    expect(await c.line()).toMatch(/^\+OK/);
    expect(await c.cmd("NOOP")).toBe("+OK");
    c.destroy();
  });
});
