/**
 * SMTP smuggling and STARTTLS command injection against the live server: a fake end of data
 * never ends DATA and never creates a second message; plaintext pipelined after STARTTLS is
 * thrown away and the client must say EHLO again.
 */
import { inbox, RawClient, startTestSmtp, type TestServer, testConfig } from "./helpers/smtp";

let server: TestServer;
beforeAll(async () => {
  server = await startTestSmtp(testConfig());
});
afterAll(() => server.close());

const VARIANTS = [
  "\n.\n",
  "\r.\r",
  "\r\n.\n",
  "\n.\r\n",
  "\r.\r\n",
  "\r\n.\r",
  "\n.\r",
  "\r.\n",
  "\r\n\x00.\r\n",
  "\r\n.\x00\r\n",
  "\n\r.\r\n",
];

describe("SMTP smuggling", () => {
  it.each(VARIANTS.map((v, i) => [JSON.stringify(v), v, i] as const))(
    "a fake end of data %s never yields a second message",
    async (_name, fake, i) => {
      const c = await RawClient.connect(server.port("smtp"));
      await c.hello();
      expect((await c.cmd("MAIL FROM:<alice@example.org>")).code).toBe(250);
      expect((await c.cmd("RCPT TO:<lx@lx.com>")).code).toBe(250);
      expect((await c.cmd("DATA")).code).toBe(354);
      // The smuggled message is addressed to lei, so it would show up in another Maildir.
      const smuggled =
        `MAIL FROM:<admin@sohu.com>\r\nRCPT TO:<lei@lx.com>\r\nDATA\r\n` +
        `From: admin@sohu.com\r\nSubject: smuggled-${i}\r\n\r\nsmuggled\r\n`;
      c.write(`From: alice@example.org\r\nSubject: outer-${i}\r\n\r\nfirst${fake}${smuggled}.\r\nQUIT\r\n`);
      const r = await c.read();
      expect(r.code).toBe(250);
      expect((await c.read()).code).toBe(221);
      await c.closed;
      expect(c.unread).toBe("");
      const lx = (await inbox(server.config.dataDir, "lx")).filter((m) => m.data.includes(`outer-${i}`));
      expect(lx).toHaveLength(1);
      // The smuggled text stayed inside the one message, with every line end as CRLF.
      expect(lx[0]!.data).toContain(`Subject: smuggled-${i}`);
      expect(/\r(?!\n)|(?<!\r)\n/.test(lx[0]!.data)).toBe(false);
      expect((await inbox(server.config.dataDir, "lei")).filter((m) => m.data.includes(`smuggled-${i}`))).toHaveLength(0);
    },
  );

  it("a real end of data followed by pipelined commands is still a second, separate transaction", async () => {
    const c = await RawClient.connect(server.port("smtp"));
    await c.hello();
    c.write("MAIL FROM:<a@example.org>\r\nRCPT TO:<lx@lx.com>\r\nDATA\r\n");
    expect((await c.read()).code).toBe(250);
    expect((await c.read()).code).toBe(250);
    expect((await c.read()).code).toBe(354);
    c.write("Subject: real-1\r\n\r\none\r\n.\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<lei@lx.com>\r\nDATA\r\n");
    expect((await c.read()).code).toBe(250);
    expect((await c.read()).code).toBe(250);
    expect((await c.read()).code).toBe(250);
    expect((await c.read()).code).toBe(354);
    c.write("Subject: real-2\r\n\r\ntwo\r\n.\r\n");
    expect((await c.read()).code).toBe(250);
    c.destroy();
    expect((await inbox(server.config.dataDir, "lei")).filter((m) => m.data.includes("real-2"))).toHaveLength(1);
  });
});

describe("STARTTLS injection", () => {
  it("discards plaintext pipelined after STARTTLS and requires a new EHLO", async () => {
    const c = await RawClient.connect(server.port("smtp"));
    await c.hello();
    // CVE-2011-0411 style: commands in the same packet as STARTTLS must never run.
    c.write("STARTTLS\r\nRSET\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<lei@lx.com>\r\n");
    const r = await c.read();
    expect(r.lines).toEqual(["220 2.0.0 Ready to start TLS"]);
    // Upgrade the socket (the client side of the same trick).
    const tls = await import("node:tls");
    const raw = c.socket;
    raw.removeAllListeners("data");
    const secure = tls.connect({ socket: raw, rejectUnauthorized: false });
    await new Promise((resolve, reject) => {
      secure.once("secureConnect", resolve);
      secure.once("error", reject);
    });
    let received = "";
    secure.on("data", (d) => {
      received += d.toString();
    });
    secure.write("HELP\r\n");
    await waitFor(() => received.includes("\r\n"));
    // The first thing said over TLS answers HELP: nothing answered the injected commands.
    expect(received).toMatch(/^214 /);
    received = "";
    secure.write("MAIL FROM:<a@example.org>\r\n");
    await waitFor(() => received.includes("\r\n"));
    expect(received).toMatch(/^503 5\.5\.1 Error: send HELO\/EHLO first/);
    received = "";
    secure.write("EHLO client.example\r\n");
    await waitFor(() => /^250 /m.test(received));
    expect(received).not.toContain("STARTTLS");
    secure.destroy();
    expect((await inbox(server.config.dataDir, "lei")).filter((m) => m.data.includes("evil@example.org"))).toHaveLength(0);
  });

  it("refuses a second STARTTLS", async () => {
    const c = await RawClient.connect(server.port("smtp"));
    await c.hello();
    await c.startTls();
    await c.cmd("EHLO client.example");
    expect((await c.cmd("STARTTLS")).code).toBe(503);
    c.destroy();
  });
});

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 5));
  }
}
