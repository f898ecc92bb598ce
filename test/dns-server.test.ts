/**
 * The DNS server live on 127.0.0.1 (ephemeral ports), checked with dig and raw sockets.
 *
 * Servers:
 * - `main`: the dev stack's zones plus test records; loopback is NOT trusted (so no recursion,
 *   no RA), the only secondary is 127.0.0.5 (dig -b 127.0.0.5 is "the secondary", anything else a
 *   stranger); rate limiting off so dig runs are not limited;
 * - `upstream`: the sohu stack, authoritative for sohu.com;
 * - `resolver`: the dev stack trusting 127.0.0.0/8 and forwarding to `upstream`;
 * - `limited`: rate limit 5/s with loopback untrusted, and at most 2 TCP connections per client.
 *
 * `main`, `resolver` and `limited` answer UDP from two threads (the main thread and a worker,
 * dns/threads.ts), whatever the default on this machine, so every test here also runs through a
 * worker thread's engine, forwarding and rate limiting included; `upstream` has the default.
 */
import * as dgram from "node:dgram";
import * as net from "node:net";
import * as path from "node:path";
import * as dnsPacket from "dns-packet";
import fc from "fast-check";
import { type DnsService, startDns } from "../dns";
import { silentLogger } from "../lib/log";
import { type DigResult, devConfig, dig, freePort, tempDir } from "./dns/helpers";

const tmp = tempDir();
let main: DnsService;
let upstream: DnsService;
let resolver: DnsService;
let limited: DnsService;
let P: number;

const bigTxt = Array.from({ length: 24 }, (_, i) => ({ name: "big", type: "TXT", value: `big record ${i} `.padEnd(60, "x") }));
const mediumTxt = Array.from({ length: 10 }, (_, i) => ({ name: "medium", type: "TXT", value: `medium record ${i} `.padEnd(50, "y") }));
const testRecords = [
  ...bigTxt,
  ...mediumTxt,
  { name: "www", type: "CNAME", value: "web.lx.com" },
  { name: "web", type: "CNAME", value: "mail.lx.com" },
  { name: "dangling", type: "CNAME", value: "gone.lx.com" },
  { name: "*.wild", type: "A", value: "192.0.2.80" },
];

beforeAll(async () => {
  main = await startDns(
    devConfig(path.join(tmp.dir, "main"), {
      trustedNetworks: ["10.0.0.0/8"],
      dns: { secondaries: ["127.0.0.5"], rateLimit: 0, records: testRecords },
    }),
    {
      log: silentLogger,
      tcpIdleTimeoutMs: 1000,
      udpThreads: 2,
    },
  );
  P = main.listeners[0]!.port;
  upstream = await startDns(devConfig(path.join(tmp.dir, "up"), { listen: { address: "127.0.0.1" }, dns: { upstream: [] } }, "sohu"), {
    log: silentLogger,
  });
  resolver = await startDns(
    devConfig(path.join(tmp.dir, "res"), {
      trustedNetworks: ["127.0.0.0/8"],
      dns: { upstream: [`127.0.0.1:${upstream.listeners[0]!.port}`] },
    }),
    { log: silentLogger, udpThreads: 2 },
  );
  limited = await startDns(
    devConfig(path.join(tmp.dir, "lim"), { trustedNetworks: ["10.0.0.0/8"], limits: { connectionsPerClient: 2 }, dns: { rateLimit: 5 } }),
    {
      log: silentLogger,
      udpThreads: 2,
    },
  );
});

afterAll(async () => {
  await Promise.all([main, upstream, resolver, limited].map((s) => s?.close()));
  tmp.cleanup();
});

const rdata = (r: DigResult, type?: string) => r.answer.filter((a) => !type || a.type === type).map((a) => a.data);

describe("answers, checked with dig", () => {
  test("UDP and TCP share the one reported port", async () => {
    expect(main.listeners).toEqual([{ name: "dns", address: "127.0.0.1", port: P, protocol: "tcp+udp" }]);
    expect(P).toBeGreaterThan(0);
    const udp = await dig(P, ["lx.com", "SOA", "+notcp"]);
    const tcp = await dig(P, ["lx.com", "SOA", "+tcp"]);
    expect(udp.server).toMatch(/\(UDP\)/);
    expect(tcp.server).toMatch(/\(TCP\)/);
    expect(rdata(tcp)).toEqual(rdata(udp));
  });

  test("MX: `dig lx.com MX +short` prints the preference and the host", async () => {
    const r = await dig(P, ["lx.com", "MX"]);
    expect(r.status).toBe("NOERROR");
    expect(r.flags).toEqual(expect.arrayContaining(["qr", "aa"]));
    expect(r.flags).not.toContain("ra");
    expect(rdata(r, "MX")).toEqual(["10 mail.lx.com."]);
    expect(r.additional).toContainEqual({ name: "mail.lx.com.", ttl: 3600, type: "A", data: "127.0.0.1" });
  });

  test("A, SOA, NS, TXT (SPF, DMARC) and PTR", async () => {
    expect(rdata(await dig(P, ["mail.lx.com", "A"]))).toEqual(["127.0.0.1"]);
    expect(rdata(await dig(P, ["ns1.lx.com", "A"]))).toEqual(["127.0.0.1"]);
    expect(rdata(await dig(P, ["lx.com", "NS"]))).toEqual(["ns1.lx.com."]);
    const soa = rdata(await dig(P, ["lx.com", "SOA"]))[0]!.split(" ");
    expect(soa.slice(0, 2)).toEqual(["ns1.lx.com.", "hostmaster.lx.com."]);
    const today = new Date().toISOString().slice(0, 10).replaceAll("-", "");
    expect(soa[2]).toMatch(new RegExp(`^${today}\\d\\d$`));
    expect(rdata(await dig(P, ["lx.com", "TXT"]))).toEqual(['"v=spf1 mx -all"']);
    expect(rdata(await dig(P, ["_dmarc.lx.com", "TXT"]))).toEqual(['"v=DMARC1; p=quarantine"']);
    const ptr = await dig(P, ["-x", "127.0.0.1"]);
    expect(ptr.status).toBe("NOERROR");
    expect(ptr.flags).toContain("aa");
    expect(rdata(ptr, "PTR")).toEqual(["mail.lx.com."]);
  });

  test("RFC 6186 SRV records", async () => {
    const srv = async (s: string) => rdata(await dig(P, [`${s}.lx.com`, "SRV"]));
    expect(await srv("_submission._tcp")).toEqual(["0 1 587 mail.lx.com."]);
    expect(await srv("_imap._tcp")).toEqual(["0 1 143 mail.lx.com."]);
    expect(await srv("_imaps._tcp")).toEqual(["0 1 993 mail.lx.com."]);
    expect(await srv("_pop3._tcp")).toEqual(["0 1 110 mail.lx.com."]);
    expect(await srv("_pop3s._tcp")).toEqual(["0 1 995 mail.lx.com."]);
  });

  test("NXDOMAIN carries the SOA with the negative TTL; NODATA and empty non-terminals are NOERROR", async () => {
    const nx = await dig(P, ["nothere.lx.com", "A"]);
    expect(nx.status).toBe("NXDOMAIN");
    expect(nx.flags).toContain("aa");
    expect(nx.answer).toEqual([]);
    expect(nx.authority).toHaveLength(1);
    expect(nx.authority[0]).toMatchObject({ name: "lx.com.", type: "SOA", ttl: 300 });
    const nodata = await dig(P, ["mail.lx.com", "MX"]);
    expect(nodata.status).toBe("NOERROR");
    expect(nodata.answer).toEqual([]);
    expect(nodata.authority[0]).toMatchObject({ type: "SOA" });
    const ent = await dig(P, ["_tcp.lx.com", "A"]);
    expect(ent.status).toBe("NOERROR");
    expect(ent.authority[0]).toMatchObject({ type: "SOA" });
  });

  test("CNAME chains inside the zone, a dangling CNAME, and wildcards", async () => {
    const www = await dig(P, ["www.lx.com", "A"]);
    expect(www.answer.map((a) => [a.name, a.type, a.data])).toEqual([
      ["www.lx.com.", "CNAME", "web.lx.com."],
      ["web.lx.com.", "CNAME", "mail.lx.com."],
      ["mail.lx.com.", "A", "127.0.0.1"],
    ]);
    const dangling = await dig(P, ["dangling.lx.com", "A"]);
    expect(dangling.status).toBe("NXDOMAIN");
    expect(dangling.answer.map((a) => a.type)).toEqual(["CNAME"]);
    const wild = await dig(P, ["anything.wild.lx.com", "A"]);
    expect(wild.answer).toEqual([{ name: "anything.wild.lx.com.", ttl: 3600, type: "A", data: "192.0.2.80" }]);
  });

  // Each UDP thread has its own answer cache and the kernel picks the thread by the client's
  // address and port: the cache tests send from one port (`from`), so one thread sees them all.
  test("names are case-insensitive, and the answer keeps the query's spelling (cache included)", async () => {
    const from = ["-b", `127.0.0.1#${await freePort()}`];
    // An answer is cached on its second miss: warm it with the lower-case spelling.
    await dig(P, [...from, "mail.lx.com", "A"]);
    await dig(P, [...from, "mail.lx.com", "A"]);
    const hits = main.stats.cacheHits;
    const r = await dig(P, [...from, "MaIl.Lx.CoM", "A"]);
    expect(main.stats.cacheHits).toBe(hits + 1);
    expect(r.status).toBe("NOERROR");
    expect(r.answer).toEqual([{ name: "MaIl.Lx.CoM.", ttl: 3600, type: "A", data: "127.0.0.1" }]);
  });

  test("a cached answer still copies the query's RD and CD bits", async () => {
    const from = ["-b", `127.0.0.1#${await freePort()}`];
    await dig(P, [...from, "ns1.lx.com", "A"]);
    await dig(P, [...from, "ns1.lx.com", "A"]);
    const hits = main.stats.cacheHits;
    const norec = await dig(P, [...from, "ns1.lx.com", "A", "+norec"]);
    expect(norec.flags).not.toContain("rd");
    const cd = await dig(P, [...from, "ns1.lx.com", "A", "+cdflag"]);
    expect(cd.flags).toEqual(expect.arrayContaining(["rd", "cd"]));
    expect(main.stats.cacheHits).toBe(hits + 2);
  });

  test("ANY: one RRset over UDP (RFC 8482), all of them over TCP", async () => {
    const udp = await dig(P, ["lx.com", "ANY", "+notcp"]);
    expect(udp.server).toMatch(/UDP/);
    expect(udp.answer).toHaveLength(1);
    const tcp = await dig(P, ["lx.com", "ANY", "+tcp"]);
    expect(new Set(tcp.answer.map((a) => a.type))).toEqual(new Set(["SOA", "NS", "MX", "TXT"]));
  });

  test("EDNS: the client's buffer size is honoured, TC when the answer does not fit, TCP gets it all", async () => {
    const med1232 = await dig(P, ["medium.lx.com", "TXT", "+bufsize=1232", "+notcp", "+ignore"]);
    expect(med1232.flags).not.toContain("tc");
    expect(med1232.answer).toHaveLength(10);
    expect(med1232.edns).toEqual({ version: 0, udp: 1232 });
    const med512 = await dig(P, ["medium.lx.com", "TXT", "+bufsize=512", "+notcp", "+ignore"]);
    expect(med512.flags).toContain("tc");
    expect(med512.answer).toHaveLength(0);
    expect(med512.msgSize).toBeLessThanOrEqual(512);
    const noEdns = await dig(P, ["medium.lx.com", "TXT", "+noedns", "+notcp", "+ignore"]);
    expect(noEdns.flags).toContain("tc");
    expect(noEdns.edns).toBeNull();
    // Bigger than our 1232-octet maximum even when the client offers 4096.
    const big4096 = await dig(P, ["big.lx.com", "TXT", "+bufsize=4096", "+notcp", "+ignore"]);
    expect(big4096.flags).toContain("tc");
    // Without +ignore dig retries over TCP and gets everything.
    const retried = await dig(P, ["big.lx.com", "TXT", "+bufsize=512"]);
    expect(retried.server).toMatch(/TCP/);
    expect(retried.answer).toHaveLength(24);
  });

  test("BADVERS for EDNS version 1, NOTIMP for an unknown opcode", async () => {
    const bad = await dig(P, ["lx.com", "SOA", "+edns=1", "+noednsnegotiation"]);
    expect(bad.status).toBe("BADVERS");
    expect(bad.edns?.version).toBe(0);
    expect(bad.answer).toEqual([]);
    const status = await dig(P, ["lx.com", "SOA", "+opcode=2"]);
    expect(status.opcode).toBe("STATUS");
    expect(status.status).toBe("NOTIMP");
    const update = await dig(P, ["lx.com", "SOA", "+opcode=5"]);
    expect(update.status).toBe("NOTIMP");
  });

  test("AXFR: refused to strangers, served to the secondary over TCP", async () => {
    const stranger = await dig(P, ["lx.com", "AXFR"]);
    expect(stranger.transferFailed).toBe(true);
    expect(stranger.answer).toEqual([]);
    const strangerOther = await dig(P, ["-b", "127.0.0.9", "lx.com", "AXFR"]);
    expect(strangerOther.transferFailed).toBe(true);
    // dig only says "Transfer failed"; the reply itself is REFUSED, with the question and no records.
    for (const from of ["127.0.0.1", "127.0.0.9"]) {
      const refused = await tcpQuery(q("lx.com", "AXFR", 21, false), from);
      expect(refused.id).toBe(21);
      expect(rcodeOf(refused)).toBe("REFUSED");
      expect(refused.questions).toEqual([{ name: "lx.com", type: "AXFR", class: "IN" }]);
      expect([refused.answers, refused.authorities]).toEqual([[], []]);
    }
    const secondary = await dig(P, ["-b", "127.0.0.5", "lx.com", "AXFR"]);
    expect(secondary.transferFailed).toBe(false);
    const zone = main.zones().find((z) => z.origin === "lx.com")!;
    expect(secondary.answer).toHaveLength(zone.records.length + 1);
    expect(secondary.answer[0]!.type).toBe("SOA");
    expect(secondary.answer.at(-1)!.type).toBe("SOA");
    expect(secondary.answer.map((a) => a.type)).toEqual(expect.arrayContaining(["NS", "MX", "SRV", "TXT", "A", "CNAME"]));
    const rev = await dig(P, ["-b", "127.0.0.5", "0.0.127.in-addr.arpa", "AXFR"]);
    expect(rev.answer.map((a) => a.type)).toEqual(["SOA", "NS", "PTR", "SOA"]);
    // Not one of our zones.
    const notauth = await dig(P, ["-b", "127.0.0.5", "www.lx.com", "AXFR"]);
    expect(notauth.transferFailed).toBe(true);
  });
});

describe("recursion", () => {
  test("untrusted clients: REFUSED for names outside our zones, no RA anywhere", async () => {
    const r = await dig(P, ["sohu.com", "MX"]);
    expect(r.status).toBe("REFUSED");
    expect(r.flags).not.toContain("ra");
    expect(r.answer).toEqual([]);
    expect((await dig(P, ["lx.com", "MX"])).flags).not.toContain("ra");
  });

  test("trusted clients: forwarded to the upstream, RA set, AA not", async () => {
    const rp = resolver.listeners[0]!.port;
    const r = await dig(rp, ["sohu.com", "MX"]);
    expect(r.status).toBe("NOERROR");
    expect(r.flags).toContain("ra");
    expect(r.flags).not.toContain("aa");
    expect(rdata(r, "MX")).toEqual(["10 mail.sohu.com."]);
    const tcp = await dig(rp, ["mail.sohu.com", "A", "+tcp"]);
    expect(rdata(tcp)).toEqual(["127.0.0.3"]);
    const own = await dig(rp, ["lx.com", "MX"]);
    expect(own.flags).toEqual(expect.arrayContaining(["aa", "ra"]));
    const nx = await dig(rp, ["nothing.sohu.com", "A"]);
    expect(nx.status).toBe("NXDOMAIN");
  });

  test("an upstream that does not answer gives SERVFAIL", async () => {
    const s = await startDns(
      devConfig(path.join(tmp.dir, "dead"), { trustedNetworks: ["127.0.0.0/8"], dns: { upstream: ["127.0.0.1:9"] } }),
      {
        log: silentLogger,
        forwardTimeoutMs: 300,
      },
    );
    try {
      const r = await dig(s.listeners[0]!.port, ["example.org", "A"]);
      expect(r.status).toBe("SERVFAIL");
      expect(r.flags).toContain("ra");
    } finally {
      await s.close();
    }
  });
});

/** One query over TCP (RFC 7766: 2-byte length prefix) from `local`; the first reply, decoded. */
function tcpQuery(msg: Buffer, local: string): Promise<dnsPacket.DecodedPacket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port: P, host: "127.0.0.1", localAddress: local }, () =>
      sock.write(dnsPacket.streamEncode(dnsPacket.decode(msg))),
    );
    let buf = Buffer.alloc(0);
    sock.on("data", (d) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        sock.destroy();
        resolve(dnsPacket.decode(buf.subarray(2, 2 + buf.readUInt16BE(0))));
      }
    });
    sock.on("error", reject);
    sock.on("end", () => reject(new Error("connection closed without a reply")));
  });
}

/** A raw UDP client: sends datagrams, collects every reply. */
async function udpClient() {
  const sock = dgram.createSocket("udp4");
  const replies: Buffer[] = [];
  sock.on("message", (m) => replies.push(m));
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
  return {
    replies,
    send: (b: Buffer, port: number) => new Promise<void>((r) => sock.send(b, port, "127.0.0.1", () => r())),
    close: () => new Promise<void>((r) => sock.close(() => r())),
  };
}

const q = (name: string, type: string, id = 1, edns = true) =>
  dnsPacket.encode({
    type: "query",
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type: type as dnsPacket.RecordType }],
    additionals: edns ? [{ type: "OPT", name: ".", udpPayloadSize: 1232, flags: 0 } as dnsPacket.Answer] : [],
  });
/** dns-packet decodes the rcode but its types do not declare it. */
const rcodeOf = (d: dnsPacket.DecodedPacket) => (d as dnsPacket.DecodedPacket & { rcode: string }).rcode;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("zone transfer requests over UDP", () => {
  test("AXFR over UDP is FORMERR for the secondary; IXFR over UDP gets the SOA", async () => {
    const sock = dgram.createSocket("udp4");
    await new Promise<void>((r) => sock.bind(0, "127.0.0.5", () => r()));
    const replies: Buffer[] = [];
    sock.on("message", (m) => replies.push(m));
    try {
      sock.send(q("lx.com", "AXFR", 11), P, "127.0.0.1");
      sock.send(q("lx.com", "IXFR", 12), P, "127.0.0.1");
      await sleep(300);
    } finally {
      sock.close();
    }
    const byId = new Map(replies.map((r) => [r.readUInt16BE(0), dnsPacket.decode(r)]));
    expect(rcodeOf(byId.get(11)!)).toBe("FORMERR");
    expect(byId.get(12)!.answers!.map((a) => a.type)).toEqual(["SOA"]);
  });
});

describe("robustness", () => {
  test("fuzz over UDP: random and mutated packets never stop the server; replies are well-formed", async () => {
    const c = await udpClient();
    const seeds = [q("lx.com", "MX"), q("www.lx.com", "A"), q("big.lx.com", "TXT"), q("lx.com", "AXFR"), q("sohu.com", "A", 1, false)];
    const sent = new Map<number, Buffer>();
    const packets = fc.sample(
      fc.oneof(
        fc.uint8Array({ minLength: 0, maxLength: 300 }).map((u) => Buffer.from(u)),
        fc
          .tuple(
            fc.constantFrom(...seeds),
            fc.array(fc.tuple(fc.nat(80), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 5 }),
            fc.nat(10),
          )
          .map(([seed, flips, cut]) => {
            const b = Buffer.from(seed);
            for (const [i, v] of flips) if (i < b.length) b[i] = v;
            return cut > 0 && cut < b.length ? b.subarray(0, b.length - cut) : b;
          }),
      ),
      { numRuns: 1500, seed: 4711 },
    );
    try {
      for (const [i, p] of packets.entries()) {
        sent.set(i, p);
        await c.send(p, P);
        if (i % 100 === 0) await sleep(5);
      }
      await sleep(300);
      for (const r of c.replies) {
        const d = dnsPacket.decode(r);
        expect(d.type).toBe("response");
        expect(r.length).toBeLessThanOrEqual(1232);
      }
    } finally {
      await c.close();
    }
    // Still serving, over both transports.
    expect(rdata(await dig(P, ["lx.com", "MX"]))).toEqual(["10 mail.lx.com."]);
    expect(rdata(await dig(P, ["lx.com", "MX", "+tcp"]))).toEqual(["10 mail.lx.com."]);
    expect(main.stats.formerr).toBeGreaterThan(0);
  });

  test("garbage over TCP closes that connection only", async () => {
    const sock = net.connect(P, "127.0.0.1");
    await new Promise((r) => sock.once("connect", r));
    sock.write(Buffer.from([0, 5, 1, 2, 3, 4, 5])); // a 5-octet "message": no header to answer
    const closed = await Promise.race([new Promise((r) => sock.once("close", () => r(true))), sleep(3000).then(() => false)]);
    sock.destroy();
    expect(closed).toBe(true);
    expect(rdata(await dig(P, ["lx.com", "MX", "+tcp"]))).toEqual(["10 mail.lx.com."]);
  });

  test("TCP: several queries in one connection, pipelined, then closed when idle", async () => {
    const sock = net.connect(P, "127.0.0.1");
    await new Promise((r) => sock.once("connect", r));
    const frames = [q("lx.com", "MX", 101), q("mail.lx.com", "A", 102), q("nothere.lx.com", "A", 103)].map((m) => {
      const f = Buffer.alloc(m.length + 2);
      f.writeUInt16BE(m.length, 0);
      m.copy(f, 2);
      return f;
    });
    // All three in one write, the last split across two writes.
    sock.write(Buffer.concat([frames[0]!, frames[1]!, frames[2]!.subarray(0, 5)]));
    await sleep(50);
    sock.write(frames[2]!.subarray(5));
    let buf = Buffer.alloc(0);
    const answers: dnsPacket.DecodedPacket[] = [];
    const closed = new Promise<number>((resolve) => {
      const opened = Date.now();
      sock.on("close", () => resolve(Date.now() - opened));
    });
    sock.on("data", (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= buf.readUInt16BE(0) + 2) {
        answers.push(dnsPacket.decode(buf.subarray(2, buf.readUInt16BE(0) + 2)));
        buf = buf.subarray(buf.readUInt16BE(0) + 2);
      }
    });
    // The server closes the idle connection (tcpIdleTimeoutMs: 1000 in this test).
    const idleClosed = await Promise.race([closed.then(() => true), sleep(5000).then(() => false)]);
    sock.destroy();
    expect(idleClosed).toBe(true);
    expect(answers.map((a) => [a.id, rcodeOf(a)])).toEqual([
      [101, "NOERROR"],
      [102, "NOERROR"],
      [103, "NXDOMAIN"],
    ]);
  });
});

describe("TCP connection limits", () => {
  test("a client over limits.connectionsPerClient is closed at once; the others keep working", async () => {
    const lp = limited.listeners[0]!.port;
    const conns = await Promise.all(
      [0, 1, 2].map(
        (i) =>
          new Promise<net.Socket>((resolve) => {
            const c = net.connect(lp, "127.0.0.1", () => setTimeout(() => resolve(c), i * 20));
            c.on("error", () => {});
          }),
      ),
    );
    try {
      await sleep(200);
      const open = conns.filter((c) => !c.destroyed && !c.readableEnded);
      expect(open).toHaveLength(2);
      const m = q("lx.com", "MX", 77);
      const frame = Buffer.concat([Buffer.from([m.length >> 8, m.length & 0xff]), m]);
      for (const c of open) {
        const reply = await new Promise<Buffer>((resolve) => {
          c.once("data", resolve);
          c.write(frame);
        });
        expect(dnsPacket.decode(reply.subarray(2)).id).toBe(77);
      }
    } finally {
      for (const c of conns) c.destroy();
    }
  });
});

describe("response rate limiting", () => {
  test("over the limit, answers are dropped or slipped as TC; the budget refills", async () => {
    const lp = limited.listeners[0]!.port;
    const c = await udpClient();
    try {
      await Promise.all(Array.from({ length: 40 }, (_, i) => c.send(q("lx.com", "MX", 1000 + i), lp)));
      await sleep(300);
      const decoded = c.replies.map((r) => dnsPacket.decode(r));
      const full = decoded.filter((d) => !d.flag_tc);
      const slipped = decoded.filter((d) => d.flag_tc);
      expect(full.length).toBeGreaterThanOrEqual(5);
      expect(full.length).toBeLessThan(10);
      expect(slipped.length).toBeGreaterThan(5);
      expect(slipped.every((d) => d.answers!.length === 0 && d.questions!.length === 1)).toBe(true);
      expect(decoded.length).toBeLessThan(40);
      expect(limited.stats.rateLimited).toBeGreaterThan(0);
      // A second later the budget is back.
      await sleep(1100);
      c.replies.length = 0;
      await c.send(q("lx.com", "MX", 2000), lp);
      await sleep(200);
      expect(c.replies.map((r) => dnsPacket.decode(r)).filter((d) => !d.flag_tc)).toHaveLength(1);
    } finally {
      await c.close();
    }
  });

  test("trusted networks are exempt", async () => {
    const c = await udpClient();
    try {
      const rp = resolver.listeners[0]!.port;
      for (let i = 0; i < 250; i++) await c.send(q("lx.com", "MX", i), rp);
      await sleep(400);
      expect(c.replies.filter((r) => !dnsPacket.decode(r).flag_tc)).toHaveLength(250);
    } finally {
      await c.close();
    }
  });
});

describe("serials across restarts and reloads", () => {
  test("same config keeps the serial; a new record bumps it and is served at once", async () => {
    const dir = path.join(tmp.dir, "serial");
    const c1 = devConfig(dir);
    const s1 = await startDns(c1, { log: silentLogger });
    const serial1 = (s1.zones()[0]!.records[0]!.data as { serial: number }).serial;
    await s1.close();
    const s2 = await startDns(c1, { log: silentLogger });
    try {
      expect((s2.zones()[0]!.records[0]!.data as { serial: number }).serial).toBe(serial1);
      const port = s2.listeners[0]!.port;
      expect((await dig(port, ["new.lx.com", "A"])).status).toBe("NXDOMAIN");
      const r = await s2.reload(devConfig(dir, { dns: { records: [{ name: "new", type: "A", value: "192.0.2.44" }] } }));
      expect(r.changed).toEqual(["lx.com"]);
      // Plain data, as the CLI logs it after SIGHUP (no Promise that would log as {}).
      expect(r).toEqual({ changed: ["lx.com"], serials: { "lx.com": serial1 + 1 } });
      expect(JSON.parse(JSON.stringify(r))).toEqual(r);
      const soa = await dig(port, ["lx.com", "SOA", "+short"]);
      expect(soa.stdout.split(" ")[2]).toBe(String(serial1 + 1));
      expect(rdata(await dig(port, ["new.lx.com", "A"]))).toEqual(["192.0.2.44"]);
    } finally {
      await s2.close();
    }
  });
});
