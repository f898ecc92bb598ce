/**
 * Limits and robustness: message size (552), recipients (452), command line length, the error
 * counter, idle timeout, connections per client and in all, hop count; and the server surviving
 * clients that reset mid-DATA, trickle slowly, or flood it with connections.
 */
import * as net from "node:net";
import { MaildirDelivery } from "../store/deliver";
import { inbox, message, RawClient, sendRaw, startTestSmtp, type TestServer, testConfig } from "./helpers/smtp";

let server: TestServer; // small limits, 127.0.0.1 untrusted
beforeAll(async () => {
  server = await startTestSmtp(
    testConfig({
      trustedNetworks: ["10.9.9.0/24"],
      limits: {
        messageSize: 4000,
        recipients: 3,
        badCommands: 5,
        connectionsPerClient: 4,
        maxConnections: 50,
        idleTimeout: 30,
        hopCount: 5,
      },
    }),
  );
});
afterAll(() => server.close());
// Each test starts with no session open (the per-client limit is small).
beforeEach(() => sessionsDrainTo(0));

const connect = () => RawClient.connect(server.port("smtp"));
const count = async (user: string, needle: string) =>
  (await inbox(server.config.dataDir, user)).filter((m) => m.data.includes(needle)).length;

/** Waits until the server has `n` sessions open (sessions end asynchronously after a close). */
async function sessionsDrainTo(n: number) {
  const svc = server.service as unknown as { connections: number };
  for (let i = 0; i < 200 && svc.connections > n; i++) await new Promise((r) => setTimeout(r, 10));
  expect(svc.connections).toBe(n);
}

describe("limits", () => {
  it("refuses a message over the size limit with 552 and keeps the session usable", async () => {
    const c = await connect();
    await c.hello();
    expect((await c.cmd("MAIL FROM:<a@example.org> SIZE=4001")).lines[0]).toBe("552 5.3.4 Message size exceeds fixed limit");
    const big = await sendRaw(c, "a@example.org", ["lx@lx.com"], message("size-big", "x".repeat(5000)));
    expect(big.lines[0]).toBe("552 5.3.4 Error: message file too big");
    const small = await sendRaw(c, "a@example.org", ["lx@lx.com"], message("size-small", "x".repeat(1000)));
    expect(small.code).toBe(250);
    c.destroy();
    expect(await count("lx", "size-big")).toBe(0);
    expect(await count("lx", "size-small")).toBe(1);
  });

  it("accepts the limit's number of recipients and answers 452 4.5.3 beyond", async () => {
    const c = await connect();
    await c.hello();
    await c.cmd("MAIL FROM:<a@example.org>");
    for (const r of ["lx@lx.com", "lei@lx.com", "bin@lx.com"]) expect((await c.cmd(`RCPT TO:<${r}>`)).code).toBe(250);
    expect((await c.cmd("RCPT TO:<postmaster@lx.com>")).lines[0]).toBe("452 4.5.3 Error: too many recipients");
    expect((await c.cmd("DATA")).code).toBe(354);
    c.write(`${message("rcpt-limit")}.\r\n`);
    expect((await c.read()).code).toBe(250);
    c.destroy();
    // bin is lx: one copy each for lx and lei.
    expect(await count("lx", "rcpt-limit")).toBe(1);
    expect(await count("lei", "rcpt-limit")).toBe(1);
  });

  it("answers 500 5.5.2 to a command line over the limit, then carries on", async () => {
    const c = await connect();
    await c.hello();
    // 512 octets (RFC 5321 §4.5.3.1.4) is fine, and so is a long AUTH-sized line.
    expect((await c.cmd(`NOOP ${"n".repeat(507)}`)).code).toBe(250);
    c.write(`MAIL FROM:<${"a".repeat(20000)}@example.org>\r\n`);
    expect((await c.read()).lines[0]).toBe("500 5.5.2 Error: line too long");
    expect((await c.cmd("NOOP")).code).toBe(250);
    c.destroy();
  });

  it("disconnects after too many errors with 421", async () => {
    const c = await connect();
    await c.hello();
    for (let i = 0; i < 4; i++) expect((await c.cmd(`BOGUS${i}`)).code).toBe(500);
    c.write("BOGUS5\r\n");
    expect((await c.read()).code).toBe(500);
    expect((await c.read()).lines[0]).toBe("421 4.7.0 mail.lx.com Error: too many errors");
    await c.closed;
  });

  it("refuses a message that went through too many hops (mail loop)", async () => {
    const c = await connect();
    await c.hello();
    const hops = Array.from({ length: 5 }, (_, i) => `Received: from hop${i} by hop${i + 1}\r\n`).join("");
    const r = await sendRaw(c, "a@example.org", ["lx@lx.com"], message("loop", "x", hops));
    expect(r.lines[0]).toMatch(/^554 5\.4\.6 /);
    c.destroy();
  });

  it("limits connections per client address (421) and frees the slot on close", async () => {
    await sessionsDrainTo(0);
    const clients = await Promise.all(Array.from({ length: 4 }, () => connect()));
    for (const c of clients) expect((await c.read()).code).toBe(220);
    const extra = await connect();
    expect((await extra.read()).lines[0]).toBe("421 4.7.0 mail.lx.com Error: too many connections from your address");
    await extra.closed;
    clients[0]!.destroy();
    await sessionsDrainTo(3);
    const again = await connect();
    expect((await again.read()).code).toBe(220);
    for (const c of [...clients, again]) c.destroy();
  });
});

describe("robustness", () => {
  it("survives a client that resets mid-DATA and delivers nothing of it", async () => {
    const c = await connect();
    await c.hello();
    await c.cmd("MAIL FROM:<a@example.org>");
    await c.cmd("RCPT TO:<lx@lx.com>");
    await c.cmd("DATA");
    c.write("Subject: reset-mid-data\r\n\r\nhalf a mess");
    await new Promise((r) => setTimeout(r, 50));
    c.socket.resetAndDestroy();
    await sessionsDrainTo(0);
    const d = await connect();
    await d.hello();
    expect((await sendRaw(d, "a@example.org", ["lx@lx.com"], message("after-reset"))).code).toBe(250);
    d.destroy();
    expect(await count("lx", "reset-mid-data")).toBe(0);
    expect(await count("lx", "after-reset")).toBe(1);
  });

  it("answers a client that pipelines everything and half-closes at once", async () => {
    const c = await connect();
    await c.read();
    c.write(`EHLO x.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<lx@lx.com>\r\nDATA\r\n`);
    for (let i = 0; i < 4; i++) await c.read();
    c.write(`${message("half-close")}.\r\nQUIT\r\n`);
    c.socket.end();
    expect((await c.read()).code).toBe(250);
    expect((await c.read()).code).toBe(221);
    await c.closed;
    expect(await count("lx", "half-close")).toBe(1);
  });

  it("serves a slow client that trickles its message", async () => {
    const c = await connect();
    await c.hello();
    await c.cmd("MAIL FROM:<a@example.org>");
    await c.cmd("RCPT TO:<lei@lx.com>");
    await c.cmd("DATA");
    const text = `${message("slow-client", "a\r\n.b\r\nc")}.\r\n`.replace("\r\n.b", "\r\n..b");
    for (let i = 0; i < text.length; i += 7) {
      c.write(text.slice(i, i + 7));
      await new Promise((r) => setTimeout(r, 2));
    }
    expect((await c.read()).code).toBe(250);
    c.destroy();
    const [m] = (await inbox(server.config.dataDir, "lei")).filter((x) => x.data.includes("slow-client"));
    expect(m!.data.endsWith("a\r\n.b\r\nc\r\n")).toBe(true);
  });

  it("stays up under a connection flood and serves a client afterwards", async () => {
    // 200 sockets from one address: 4 get sessions, the rest 421; none may crash the server.
    const sockets = await Promise.all(
      Array.from(
        { length: 200 },
        () =>
          new Promise<net.Socket>((resolve) => {
            const s = net.connect({ port: server.port("smtp"), host: "127.0.0.1" });
            s.on("error", () => undefined);
            s.once("connect", () => resolve(s));
            s.once("error", () => resolve(s));
          }),
      ),
    );
    // Half of them throw garbage and reset at once.
    sockets.forEach((s, i) => {
      if (i % 2 === 0) {
        s.write("\x00\xff garbage\r\n");
        s.resetAndDestroy();
      }
    });
    for (const s of sockets) s.destroy();
    await sessionsDrainTo(0);
    const c = await connect();
    await c.hello();
    expect((await sendRaw(c, "a@example.org", ["lx@lx.com"], message("after-flood"))).code).toBe(250);
    c.destroy();
  });
});

describe("timeouts and the total connection limit", () => {
  let tight: TestServer;
  beforeAll(async () => {
    tight = await startTestSmtp(testConfig({ limits: { idleTimeout: 0.3, maxConnections: 3 } }));
  });
  afterAll(() => tight.close());

  it("closes an idle session with 421 4.4.2", async () => {
    const c = await RawClient.connect(tight.port("smtp"));
    await c.hello();
    const r = await c.read();
    expect(r.lines[0]).toBe("421 4.4.2 mail.lx.com Error: timeout exceeded");
    await c.closed;
  });

  it("refuses connections beyond maxConnections with 421, trusted clients too", async () => {
    const open = await Promise.all(Array.from({ length: 3 }, () => RawClient.connect(tight.port("smtp"))));
    for (const c of open) expect((await c.read()).code).toBe(220);
    const extra = await RawClient.connect(tight.port("smtp"));
    expect((await extra.read()).lines[0]).toBe("421 4.7.0 mail.lx.com Error: too many connections");
    for (const c of open) c.destroy();
  });
});

describe("shutdown", () => {
  it("answers the message being stored, then says 421 to everyone and stops", async () => {
    const config = testConfig();
    const maildir = new MaildirDelivery(config.dataDir);
    let storing: () => void = () => undefined;
    const started = new Promise<void>((r) => {
      storing = r;
    });
    const s = await startTestSmtp(config, {
      delivery: {
        deliverLocal: async (users, data) => {
          storing();
          await new Promise((r) => setTimeout(r, 300));
          return maildir.deliverLocal(users, data);
        },
      },
    });
    const idle = await RawClient.connect(s.port("smtp"));
    await idle.hello();
    const busy = await RawClient.connect(s.port("smtp"));
    await busy.hello();
    await busy.cmd("MAIL FROM:<a@example.org>");
    await busy.cmd("RCPT TO:<lx@lx.com>");
    await busy.cmd("DATA");
    busy.write(`${message("at-shutdown")}.\r\n`);
    await started;
    const closing = s.close();
    expect((await idle.read()).lines[0]).toBe("421 4.3.2 mail.lx.com Service shutting down, closing transmission channel");
    expect((await busy.read()).code).toBe(250);
    expect((await busy.read()).code).toBe(421);
    await closing;
    await Promise.all([idle.closed, busy.closed]);
    expect((await inbox(config.dataDir, "lx")).filter((m) => m.data.includes("at-shutdown"))).toHaveLength(1);
    await expect(RawClient.connect(s.port("smtp"))).rejects.toThrow();
  });
});
