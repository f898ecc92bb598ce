/**
 * "Is this service still serving?": one complete, real exchange per protocol, used by the
 * slowloris and fuzz fault tests after they have done their worst.
 */
import { createSocket } from "node:dgram";
import { connect } from "node:net";
import { LX, SmtpConn } from "./fault-helpers";
import { ImapClient, ok } from "./helpers/imap-client";
import { Pop3Client } from "./helpers/pop3-client";

export type Probe = (port: number) => Promise<void>;

export const probeSmtp: Probe = async (port) => {
  const c = await SmtpConn.open(port);
  try {
    expect((await c.reply()).code).toBe(220);
    expect((await c.cmd("EHLO probe.example.org")).code).toBe(250);
    expect((await c.cmd("MAIL FROM:<probe@example.org>")).code).toBe(250);
    expect((await c.cmd("RCPT TO:<lx@lx.com>")).code).toBe(250);
    expect((await c.cmd("RSET")).code).toBe(250);
    expect((await c.cmd("QUIT")).code).toBe(221);
  } finally {
    c.close();
  }
};

export const probePop3: Probe = async (port) => {
  const c = await Pop3Client.connect(port);
  try {
    await c.command(`USER ${LX.name}`);
    await c.command(`PASS ${LX.password}`);
    expect(await c.command("STAT")).toMatch(/^\+OK \d+ \d+/);
    await c.quit();
  } finally {
    c.destroy();
  }
};

export const probeImap: Probe = async (port) => {
  const c = await ImapClient.connect(port);
  try {
    ok(await c.login(LX.name, LX.password), "LOGIN");
    ok(await c.command("SELECT INBOX"), "SELECT");
    ok(await c.command("NOOP"), "NOOP");
    await c.logout();
  } finally {
    c.destroy();
  }
};

function soaQuery(id: number): Buffer {
  const packet = require("dns-packet") as typeof import("dns-packet");
  return packet.encode({ type: "query", id, flags: 0, questions: [{ type: "SOA", name: "lx.com" }] });
}

function checkSoa(reply: Buffer, id: number): void {
  const packet = require("dns-packet") as typeof import("dns-packet");
  const d = packet.decode(reply) as ReturnType<typeof packet.decode> & { rcode?: string };
  expect(d.id).toBe(id);
  expect(d.rcode).toBe("NOERROR");
  expect((d.answers ?? []).map((a) => a.type)).toContain("SOA");
}

/** An SOA query over UDP and one over TCP. */
export const probeDns: Probe = async (port) => {
  const udp = createSocket("udp4");
  try {
    const reply = await new Promise<Buffer>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("no UDP answer")), 5000);
      udp.once("message", (m) => {
        clearTimeout(t);
        resolve(m);
      });
      udp.send(soaQuery(4242), port, "127.0.0.1");
    });
    checkSoa(reply, 4242);
  } finally {
    udp.close();
  }
  const s = connect({ port, host: "127.0.0.1" });
  try {
    const reply = await new Promise<Buffer>((resolve, reject) => {
      let buf = Buffer.alloc(0);
      const t = setTimeout(() => reject(new Error("no TCP answer")), 5000);
      s.once("error", reject);
      s.on("data", (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          clearTimeout(t);
          resolve(buf.subarray(2, 2 + buf.readUInt16BE(0)));
        }
      });
      const q = soaQuery(4343);
      const len = Buffer.alloc(2);
      len.writeUInt16BE(q.length);
      s.write(Buffer.concat([len, q]));
    });
    checkSoa(reply, 4343);
  } finally {
    s.destroy();
  }
};
