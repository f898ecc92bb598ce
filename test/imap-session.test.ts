/**
 * The IMAP session over raw sockets: greeting and capabilities, LOGIN / AUTHENTICATE PLAIN,
 * LOGINDISABLED and STARTTLS for untrusted clients (and the buffered-plaintext drop), implicit
 * TLS, line and literal limits before and after login (LITERAL- rules), bad-command handling,
 * timeouts, connection limits, and random bytes thrown at a live session.
 */
import fc from "fast-check";
import { type ImapEnv, PASSWORDS, RawImap, startImapEnv } from "./imap-helpers";

const b64 = (s: string) => Buffer.from(s).toString("base64");

describe("trusted client (loopback is in the dev stack's trustedNetworks)", () => {
  let env: ImapEnv;
  beforeAll(async () => {
    env = await startImapEnv({ limits: { imapLineLength: 4096, messageSize: 20000 } });
  });
  afterAll(() => env.cleanup());

  test("greeting, CAPABILITY before and after login", async () => {
    const c = await RawImap.connect(env.port);
    expect(c.greeting).toMatch(/^\* OK \[CAPABILITY IMAP4rev1 IMAP4rev2 .*\] /);
    expect(c.greeting).toContain("AUTH=PLAIN");
    expect(c.greeting).toContain("STARTTLS");
    expect(c.greeting).toContain("LITERAL-");
    expect(c.greeting).not.toContain("LOGINDISABLED");
    const cap = await c.cmd("CAPABILITY");
    expect(cap.untagged).toHaveLength(1);
    expect(cap.status).toBe("A1 OK CAPABILITY completed");
    const login = await c.login();
    const caps = /\[CAPABILITY ([^\]]+)\]/.exec(login.status)![1]!.split(" ");
    for (const x of ["IDLE", "UIDPLUS", "MOVE", "SPECIAL-USE", "NAMESPACE", "ID", "ENABLE", "LITERAL+", "UNSELECT", "CONDSTORE", "QRESYNC"])
      expect(caps).toContain(x);
    expect(caps).not.toContain("STARTTLS");
    expect(caps).not.toContain("AUTH=PLAIN");
    await c.cmd("LOGOUT");
    expect(await c.waitClosed()).toBe(true);
  });

  test("LOGIN: wrong password and unknown user get the same answer", async () => {
    const c = await RawImap.connect(env.port);
    const wrong = await c.cmd("LOGIN lx nope");
    const unknown = await c.cmd("LOGIN nobody nope");
    expect(wrong.status).toBe("A1 NO [AUTHENTICATIONFAILED] Authentication failed");
    expect(unknown.status).toBe("A2 NO [AUTHENTICATIONFAILED] Authentication failed");
    const ok = await c.cmd(`LOGIN "lx@lx.com" {${PASSWORDS.lx!.length}+}\r\n${PASSWORDS.lx}`);
    expect(ok.status).toMatch(/^A3 OK \[CAPABILITY/);
    const again = await c.cmd("LOGIN lx lx-password");
    expect(again.status).toMatch(/^A4 BAD LOGIN not allowed now/);
    c.close();
  });

  test("AUTHENTICATE PLAIN with SASL-IR, with a continuation, cancelled and malformed", async () => {
    const c = await RawImap.connect(env.port);
    expect((await c.cmd("AUTHENTICATE CRAM-MD5")).status).toMatch(/^A1 NO \[CANNOT\]/);
    expect((await c.cmd(`AUTHENTICATE PLAIN ${b64("\0lx\0wrong")}`)).status).toMatch(/^A2 NO \[AUTHENTICATIONFAILED\]/);
    expect((await c.cmd("AUTHENTICATE PLAIN !!!")).status).toMatch(/^A3 BAD/);
    expect((await c.cmd(`AUTHENTICATE PLAIN ${b64("lei\0lx\0lx-password")}`)).status).toMatch(/^A4 NO/);
    c.write("A5 AUTHENTICATE PLAIN\r\n");
    expect(await c.response()).toBe("+ ");
    c.write("*\r\n");
    expect((await c.collect("A5")).status).toMatch(/^A5 BAD .*cancelled/);
    c.write("A6 AUTHENTICATE PLAIN\r\n");
    expect(await c.response()).toBe("+ ");
    c.write(`${b64("\0lx\0lx-password")}\r\n`);
    expect((await c.collect("A6")).status).toMatch(/^A6 OK \[CAPABILITY/);
    c.close();
    const d = await RawImap.connect(env.port);
    expect((await d.cmd(`AUTHENTICATE PLAIN ${b64("lx\0lx\0lx-password")}`)).status).toMatch(/^A1 OK/);
    d.close();
  });

  test("unknown commands, wrong states and bad arguments are BAD", async () => {
    const c = await RawImap.connect(env.port);
    expect((await c.cmd("FROB")).status).toBe("A1 BAD Unknown command FROB");
    expect((await c.cmd("SELECT INBOX")).status).toMatch(/^A2 BAD SELECT not allowed now: Log in first/);
    await c.login();
    expect((await c.cmd("FETCH 1 FLAGS")).status).toMatch(/^A4 BAD FETCH not allowed now: No mailbox selected/);
    expect((await c.cmd("SELECT")).status).toBe("A5 BAD SELECT: Missing mailbox");
    expect((await c.cmd("NOOP extra")).status).toBe("A6 BAD NOOP: Too many arguments");
    expect((await c.cmd("STATUS INBOX MESSAGES")).status).toMatch(/^A7 BAD STATUS: Invalid status items/);
    c.write('A8 LOGIN "unterminated\r\n');
    expect(await c.response()).toMatch(/^A8 BAD/);
    c.write("garbage without tag\r\n");
    expect(await c.response()).toMatch(/^garbage BAD|^\* BAD/);
    expect((await c.cmd("NOOP")).status).toMatch(/^A\d+ OK NOOP completed$/);
    c.close();
  });

  test("only a real STARTTLS command stops plaintext input", async () => {
    const c = await RawImap.connect(env.port);
    expect((await c.cmd("LOGIN lx starttls")).status).toMatch(/^A1 NO \[AUTHENTICATIONFAILED\]/);
    expect((await c.cmd("NOOP")).status).toBe("A2 OK NOOP completed");
    c.close();
  });

  test("an over-long line while IDLE ends the IDLE with BAD", async () => {
    const c = await RawImap.connect(env.port);
    await c.login();
    c.write("I1 IDLE\r\n");
    expect(await c.response()).toBe("+ idling");
    c.write(`${"D".repeat(5000)}\r\n`);
    expect(await c.response()).toBe("* BAD [TOOBIG] Line too long");
    expect((await c.collect("I1")).status).toBe("I1 BAD Expected DONE");
    expect((await c.cmd("NOOP")).status).toMatch(/OK/);
    c.close();
  });

  test("ID, NAMESPACE and ENABLE", async () => {
    const c = await RawImap.connect(env.port);
    const id = await c.cmd('ID ("name" "raw-test" "version" "1")');
    expect(id.untagged[0]).toMatch(/^\* ID \("name" "mailstack"/);
    expect((await c.cmd("ID NIL")).status).toMatch(/OK/);
    expect((await c.cmd('ID ("odd")')).status).toMatch(/BAD/);
    await c.login();
    const ns = await c.cmd("NAMESPACE");
    expect(ns.untagged).toEqual(['* NAMESPACE (("" "/")) NIL NIL']);
    const en = await c.cmd("ENABLE CONDSTORE X-UNKNOWN QRESYNC");
    expect(en.untagged).toEqual(["* ENABLED CONDSTORE QRESYNC"]);
    expect((await c.cmd("ENABLE QRESYNC")).untagged).toEqual(["* ENABLED"]);
    c.close();
  });

  test("pre-auth limits: ~1 KiB lines and literals, no continuation for bigger ones", async () => {
    const c = await RawImap.connect(env.port);
    c.write(`L1 LOGIN ${"x".repeat(1100)} y\r\n`);
    expect(await c.response()).toBe("L1 BAD [TOOBIG] Line too long");
    c.write("L2 LOGIN {1025}\r\n");
    expect(await c.response()).toBe("L2 NO [TOOBIG] Literal too big (1025 bytes)");
    c.write("L2b LOGIN {5000}\r\n");
    expect(await c.response()).toBe("L2b NO [TOOBIG] Literal too big (5000 bytes)");
    // literals within 1024 bytes are fine (the answer is just a failed login)
    c.write("L3 LOGIN {2}\r\n");
    expect(await c.response()).toMatch(/^\+ /);
    c.write(`lx {1000+}\r\n${"p".repeat(1000)}\r\n`);
    expect(await c.response()).toMatch(/^L3 NO \[AUTHENTICATIONFAILED\]/);
    c.write("L3b LOGIN lx {1022}\r\n");
    expect(await c.response()).toMatch(/^\+ /);
    c.write(`${"p".repeat(1022)}\r\n`);
    expect(await c.response()).toMatch(/^L3b NO \[AUTHENTICATIONFAILED\]/);
    // two literals summing to more than 1024 bytes: the second gets no "+"
    c.write("L3c LOGIN {600}\r\n");
    expect(await c.response()).toMatch(/^\+ /);
    c.write(`${"u".repeat(600)} {600}\r\n`);
    expect(await c.response()).toBe("L3c NO [TOOBIG] Literal too big (600 bytes)");
    // LITERAL-: a non-synchronizing literal of 1025..4096 bytes is refused and its bytes skipped,
    // even when they look like commands; the session carries on
    const inner = `X1 LOGIN lx lx-password\r\n${"q".repeat(3000)}`;
    c.write(`L5 LOGIN lx {${inner.length}+}\r\n${inner}\r\n`);
    expect(await c.response()).toBe(`L5 NO [TOOBIG] Literal too big (${inner.length} bytes)`);
    expect((await c.cmd("NOOP")).status).toMatch(/^A\d+ OK NOOP completed$/);
    expect((await c.cmd("SELECT INBOX")).status).toMatch(/BAD SELECT not allowed now: Log in first/);
    // LITERAL-: a non-synchronizing literal over 4096 bytes ends the connection
    c.write(`L4 LOGIN lx {5000+}\r\n${"p".repeat(5000)}\r\n`);
    expect(await c.response()).toBe("L4 BAD [TOOBIG] Non-synchronizing literal too big (5000 bytes)");
    expect(await c.response()).toMatch(/^\* BYE/);
    expect(await c.waitClosed()).toBe(true);
  });

  test("post-auth limits: limits.imapLineLength and APPENDLIMIT", async () => {
    const c = await RawImap.connect(env.port);
    await c.login();
    expect((await c.cmd(`STATUS INBOX (MESSAGES${" MESSAGES".repeat(300)})`)).status).toMatch(/^A2 OK/);
    c.write(`A3 STATUS INBOX (${"MESSAGES ".repeat(600)}MESSAGES)\r\n`);
    expect(await c.response()).toBe("A3 BAD [TOOBIG] Line too long");
    c.write("A4 APPEND INBOX {30000}\r\n");
    expect(await c.response()).toBe("A4 NO [TOOBIG] Literal too big (30000 bytes)");
    expect((await c.cmd("NOOP")).status).toMatch(/^A\d+ OK NOOP completed$/);
    c.close();
  });

  test("repeated bad commands end the session with BYE", async () => {
    const c = await RawImap.connect(env.port);
    for (let i = 0; i < env.config.limits.badCommands - 1; i++) expect((await c.cmd("BOGUS")).status).toMatch(/BAD/);
    c.write("Z BOGUS\r\n");
    expect(await c.response()).toMatch(/^Z BAD/);
    expect(await c.response()).toBe("* BYE Too many invalid commands");
    expect(await c.waitClosed()).toBe(true);
  });

  test("pipelined commands are answered in order", async () => {
    const c = await RawImap.connect(env.port);
    c.write("P1 NOOP\r\nP2 CAPABILITY\r\nP3 LOGIN lx lx-password\r\nP4 SELECT INBOX\r\nP5 LOGOUT\r\n");
    const tags: string[] = [];
    for (;;) {
      const r = await c.response();
      const m = /^(P\d) /.exec(r);
      if (m) tags.push(m[1]!);
      if (m?.[1] === "P5") break;
    }
    expect(tags).toEqual(["P1", "P2", "P3", "P4", "P5"]);
  });

  test("implicit TLS (imaps)", async () => {
    const c = await RawImap.connect(env.tlsPort, { tls: true, ca: env.ca });
    expect(c.greeting).toContain("AUTH=PLAIN");
    expect(c.greeting).not.toContain("STARTTLS");
    await c.login();
    expect((await c.cmd("SELECT INBOX")).status).toMatch(/OK \[READ-WRITE\]/);
    c.close();
  });

  test("random bytes never crash a live session; the server keeps serving", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.uint8Array({ minLength: 1, maxLength: 200 }), { minLength: 1, maxLength: 4 }), async (chunks) => {
        const c = await RawImap.connect(env.port);
        for (const ch of chunks) c.write(Buffer.from(ch));
        c.write("\r\nZZ1 NOOP\r\n");
        // Either the session answers (BAD/NO/OK for whatever it parsed) or closes it (BYE);
        // it never hangs the server.
        const deadline = Date.now() + 3000;
        while (!c.isClosed && Date.now() < deadline && !/ZZ1 (OK|BAD|NO)/.test(c.unread)) await new Promise((r) => setTimeout(r, 10));
        c.close();
        const d = await RawImap.connect(env.port);
        const r = await d.cmd("NOOP");
        d.close();
        return r.status === "A1 OK NOOP completed";
      }),
      { numRuns: 25 },
    );
  });
});

describe("untrusted client (no trusted networks)", () => {
  let env: ImapEnv;
  beforeAll(async () => {
    env = await startImapEnv({ trustedNetworks: ["192.0.2.0/24"] });
  });
  afterAll(() => env.cleanup());

  test("LOGINDISABLED and no AUTH=PLAIN before TLS; LOGIN and AUTHENTICATE refused", async () => {
    const c = await RawImap.connect(env.port);
    expect(c.greeting).toContain("LOGINDISABLED");
    expect(c.greeting).not.toContain("AUTH=PLAIN");
    expect(c.greeting).toContain("STARTTLS");
    expect((await c.cmd("LOGIN lx lx-password")).status).toMatch(/^A1 NO \[PRIVACYREQUIRED\]/);
    expect((await c.cmd(`AUTHENTICATE PLAIN ${b64("\0lx\0lx-password")}`)).status).toMatch(/^A2 NO \[PRIVACYREQUIRED\]/);
    c.close();
  });

  test("STARTTLS, then login works; STARTTLS twice is BAD", async () => {
    const c = await RawImap.connect(env.port);
    expect((await c.cmd("STARTTLS")).status).toBe("A1 OK Begin TLS negotiation now");
    await c.startTls(env.ca);
    const cap = await c.cmd("CAPABILITY");
    expect(cap.untagged[0]).toContain("AUTH=PLAIN");
    expect(cap.untagged[0]).not.toContain("STARTTLS");
    expect(cap.untagged[0]).not.toContain("LOGINDISABLED");
    expect((await c.cmd("STARTTLS")).status).toMatch(/^A3 BAD/);
    await c.login();
    c.close();
  });

  test("STARTTLS drops plaintext pipelined after it (command injection)", async () => {
    const c = await RawImap.connect(env.port);
    c.write("S1 STARTTLS\r\nS2 LOGIN lx lx-password\r\nS3 CAPABILITY\r\n");
    expect(await c.response()).toBe("S1 OK Begin TLS negotiation now");
    expect(c.unread).toBe("");
    await c.startTls(env.ca);
    const r = await c.cmd("NOOP");
    expect(r.untagged).toEqual([]);
    expect(r.status).toBe("A1 OK NOOP completed");
    expect((await c.cmd("SELECT INBOX")).status).toMatch(/^A2 BAD SELECT not allowed now: Log in first/);
    c.close();
  });

  test("imaps allows plaintext mechanisms", async () => {
    const c = await RawImap.connect(env.tlsPort, { tls: true, ca: env.ca });
    expect(c.greeting).toContain("AUTH=PLAIN");
    expect((await c.cmd(`AUTHENTICATE PLAIN ${b64("\0lx\0lx-password")}`)).status).toMatch(/^A1 OK/);
    c.close();
  });
});

describe("throttling, timeouts and connection limits", () => {
  let env: ImapEnv;
  beforeAll(async () => {
    env = await startImapEnv({ limits: { authFailures: 3, idleTimeout: 1, connectionsPerClient: 3 } });
  });
  afterAll(() => env.cleanup());

  test("failed logins are throttled per address and end the session", async () => {
    const c = await RawImap.connect(env.port);
    for (let i = 1; i <= 2; i++) expect((await c.cmd("LOGIN lx bad")).status).toMatch(/AUTHENTICATIONFAILED/);
    c.write("A9 LOGIN lx bad\r\n");
    expect(await c.response()).toMatch(/^A9 NO \[AUTHENTICATIONFAILED\]/);
    expect(await c.response()).toBe("* BYE Too many failed logins");
    expect(await c.waitClosed()).toBe(true);
    // the address is now throttled: even the right password is refused for a while
    const d = await RawImap.connect(env.port);
    expect((await d.cmd("LOGIN lx lx-password")).status).toMatch(/^A1 NO \[UNAVAILABLE\]/);
    d.close();
  });

  test("an idle unauthenticated connection is logged out", async () => {
    const c = await RawImap.connect(env.port);
    expect(await c.response(5000)).toBe("* BYE Autologout; idle for too long");
    expect(await c.waitClosed()).toBe(true);
  });

  test("connections per client are limited", async () => {
    const open = await Promise.all([1, 2, 3].map(() => RawImap.connect(env.port)));
    const extra = await RawImap.connect(env.port, { greeting: false });
    expect(await extra.response()).toMatch(/^\* BYE Too many connections/);
    expect(await extra.waitClosed()).toBe(true);
    for (const c of open) c.close();
  });
});
