/**
 * Names are resolved safely: without `reverseLookups` the SMTP server sends no DNS query at all;
 * with it, queries go only to the configured resolver (a stub on loopback here), and a name is
 * used only when it resolves back to the client's address.
 */
import * as dgram from "node:dgram";
import * as dnsPacket from "dns-packet";
import { parseServer, ptrName } from "../smtp/resolver";
import { inbox, message, RawClient, sendRaw, startTestSmtp, testConfig } from "./helpers/smtp";

/** A DNS stub on 127.0.0.1 that answers from a table and records every question. */
async function stubDns(table: Record<string, { type: string; data: string }>) {
  const questions: string[] = [];
  const sock = dgram.createSocket("udp4");
  sock.on("message", (msg, rinfo) => {
    const q = dnsPacket.decode(msg);
    const question = q.questions?.[0];
    if (!question) return;
    questions.push(`${question.type} ${question.name}`);
    const hit = table[`${question.type} ${question.name.toLowerCase()}`];
    const answers = hit ? [{ name: question.name, type: hit.type, class: "IN", ttl: 60, data: hit.data }] : [];
    const reply = dnsPacket.encode({
      id: q.id,
      type: "response",
      flags: dnsPacket.AUTHORITATIVE_ANSWER | (hit ? 0 : 3),
      questions: q.questions,
      answers,
    } as dnsPacket.Packet);
    sock.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", r));
  return { port: sock.address().port, questions, close: () => new Promise<void>((r) => sock.close(() => r())) };
}

async function deliverOne(port: number, id: string) {
  const c = await RawClient.connect(port);
  await c.hello("helo.example");
  expect((await sendRaw(c, "a@example.org", ["lx@lx.com"], message(id))).code).toBe(250);
  c.destroy();
}

test("no DNS query at all unless reverseLookups is on", async () => {
  const dns = await stubDns({});
  const server = await startTestSmtp(testConfig({ resolvers: [`127.0.0.1:${dns.port}`], reverseLookups: false }));
  try {
    await deliverOne(server.port("smtp"), "dns-off");
    const [m] = (await inbox(server.config.dataDir, "lx")).filter((x) => x.data.includes("dns-off"));
    expect(m!.data).toContain("Received: from helo.example (unknown [127.0.0.1])");
    expect(dns.questions).toEqual([]);
  } finally {
    await server.close();
    await dns.close();
  }
});

test("reverse lookups go to the configured resolver and need forward confirmation", async () => {
  const dns = await stubDns({
    "PTR 1.0.0.127.in-addr.arpa": { type: "PTR", data: "client.lx.test" },
    "A client.lx.test": { type: "A", data: "127.0.0.1" },
    "PTR 2.0.0.127.in-addr.arpa": { type: "PTR", data: "liar.lx.test" },
    "A liar.lx.test": { type: "A", data: "192.0.2.99" },
  });
  const server = await startTestSmtp(testConfig({ resolvers: [`127.0.0.1:${dns.port}`], reverseLookups: true }));
  try {
    await deliverOne(server.port("smtp"), "dns-on");
    const [m] = (await inbox(server.config.dataDir, "lx")).filter((x) => x.data.includes("dns-on"));
    expect(m!.data).toContain("Received: from helo.example (client.lx.test [127.0.0.1])");
    expect(dns.questions).toEqual(expect.arrayContaining(["PTR 1.0.0.127.in-addr.arpa", "A client.lx.test"]));

    // A PTR name that does not resolve back to the client is not believed.
    const c = await RawClient.connect(server.port("smtp"), { localAddress: "127.0.0.2" });
    await c.hello("helo.example");
    expect((await sendRaw(c, "a@example.org", ["lx@lx.com"], message("dns-liar"))).code).toBe(250);
    c.destroy();
    const [liar] = (await inbox(server.config.dataDir, "lx")).filter((x) => x.data.includes("dns-liar"));
    expect(liar!.data).toContain("Received: from helo.example (unknown [127.0.0.2])");
    expect(dns.questions).toEqual(expect.arrayContaining(["PTR 2.0.0.127.in-addr.arpa", "A liar.lx.test"]));
  } finally {
    await server.close();
    await dns.close();
  }
});

test("resolver addresses and PTR names", () => {
  expect(parseServer("127.0.0.1")).toEqual({ host: "127.0.0.1", port: 53 });
  expect(parseServer("127.0.0.1:5353")).toEqual({ host: "127.0.0.1", port: 5353 });
  expect(parseServer("[::1]:5353")).toEqual({ host: "::1", port: 5353 });
  expect(parseServer("::1")).toEqual({ host: "::1", port: 53 });
  expect(parseServer("resolver.example:53")).toBeNull();
  expect(ptrName("192.0.2.1")).toBe("1.2.0.192.in-addr.arpa");
  expect(ptrName("::ffff:192.0.2.1")).toBe("1.2.0.192.in-addr.arpa");
  expect(ptrName("2001:db8::1")).toBe(`1.${"0.".repeat(23)}8.b.d.0.1.0.0.2.ip6.arpa`);
});
