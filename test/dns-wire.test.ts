/**
 * The wire layer and the engine without sockets: encode/decode round trips through dns-packet,
 * compression, truncation, malformed messages, and fuzzing the engine with random and mutated
 * packets (it must never throw, and whatever it answers must be a well-formed response).
 */
import * as path from "node:path";
import * as dnsPacket from "dns-packet";
import fc from "fast-check";
import { lookup, ZoneSet } from "../dns/answer";
import { Engine } from "../dns/engine";
import { Forwarder } from "../dns/forward";
import {
  encodeResponse,
  encodeTransfer,
  MAX_UDP_PAYLOAD,
  newQueryScan,
  parseMessage,
  RCODE,
  type RR,
  readQuestion,
  sameQuestion,
  scanQuery,
  TYPE,
} from "../dns/wire";
import { buildZones } from "../dns/zone";
import { silentLogger } from "../lib/log";
import { devConfig, tempDir } from "./dns/helpers";

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const config = devConfig(path.join(tmp.dir, "data"), {
  dns: {
    records: [
      { name: "www", type: "CNAME", value: "web.lx.com" },
      { name: "web", type: "CNAME", value: "mail.lx.com" },
      { name: "loop1", type: "CNAME", value: "loop2.lx.com" },
      { name: "loop2", type: "CNAME", value: "loop1.lx.com" },
      { name: "*.wild", type: "TXT", value: "wildcard" },
      { name: "sub", type: "NS", value: "ns.sub.lx.com" },
      { name: "ns.sub", type: "A", value: "192.0.2.53" },
    ],
  },
});
const zones = buildZones(config, { "lx.com": 2026010100 });

function query(name: string, type: string, opts: { edns?: number; id?: number } = {}): Buffer {
  return dnsPacket.encode({
    type: "query",
    id: opts.id ?? 4242,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type: type as dnsPacket.RecordType, class: "IN" }],
    additionals: opts.edns ? [{ type: "OPT", name: ".", udpPayloadSize: opts.edns, flags: 0 } as dnsPacket.Answer] : [],
  });
}

/** Our record data as dns-packet decodes it, for comparison. */
function normalize(rr: RR): unknown {
  switch (rr.type) {
    case "TXT":
      return rr.data;
    case "MX":
      return { preference: rr.data.preference, exchange: rr.data.exchange || "." };
    case "SRV":
      return { ...rr.data, target: rr.data.target || "." };
    case "CAA":
      return { flags: rr.data.flags, tag: rr.data.tag, value: rr.data.value };
    default:
      return rr.data;
  }
}
function decodedData(a: dnsPacket.Answer): unknown {
  const d = (a as { data: unknown }).data;
  if (a.type === "TXT") return (d as Buffer[]).map((b) => b.toString("utf8"));
  if (a.type === "CAA") {
    const c = d as { flags: number; tag: string; value: string };
    return { flags: c.flags, tag: c.tag, value: c.value };
  }
  return d;
}

describe("encode/decode round trip", () => {
  test("every record of the zones survives encoding with compression and decodes with dns-packet", () => {
    for (const z of zones) {
      const msgs = encodeTransfer({ id: 1, opcode: 0, aa: true, rd: false, ra: false, cd: false, question: null, edns: null }, z.records);
      const decoded = msgs.flatMap((m) => dnsPacket.decode(m).answers ?? []);
      expect(decoded).toHaveLength(z.records.length);
      decoded.forEach((a, i) => {
        const r = z.records[i]!;
        expect(a.name).toBe(r.name);
        expect(a.type).toBe(r.type);
        expect((a as { ttl: number }).ttl).toBe(r.ttl);
        expect(decodedData(a)).toEqual(normalize(r));
      });
    }
  });

  test("property: random RRsets round-trip, and compression never makes a message larger", () => {
    const label = fc.stringMatching(/^[a-z0-9_][a-z0-9-]{0,20}$/);
    const name = fc.array(label, { minLength: 1, maxLength: 4 }).map((ls) => `${ls.join(".")}.lx.com`);
    const rr = fc.oneof(
      fc.record({ name, type: fc.constant("A" as const), ttl: fc.nat(2 ** 31 - 1), data: fc.ipV4() }),
      fc.record({ name, type: fc.constant("CNAME" as const), ttl: fc.nat(86400), data: name }),
      fc.record({
        name,
        type: fc.constant("MX" as const),
        ttl: fc.nat(86400),
        data: fc.record({ preference: fc.nat(65535), exchange: name }),
      }),
      fc.record({
        name,
        type: fc.constant("TXT" as const),
        ttl: fc.nat(86400),
        data: fc.array(fc.string({ maxLength: 80 }), { minLength: 1, maxLength: 3 }),
      }),
      fc.record({
        name,
        type: fc.constant("SRV" as const),
        ttl: fc.nat(86400),
        data: fc.record({ priority: fc.nat(65535), weight: fc.nat(65535), port: fc.nat(65535), target: name }),
      }),
    );
    fc.assert(
      fc.property(fc.array(rr, { minLength: 1, maxLength: 20 }), (records) => {
        const q = readQuestion(query("lx.com", "ANY"))!.question;
        const ours = encodeResponse({
          id: 7,
          opcode: 0,
          aa: true,
          rd: true,
          ra: false,
          cd: false,
          rcode: 0,
          question: q,
          answer: records as RR[],
          limit: 65535,
        });
        const d = dnsPacket.decode(ours);
        expect(d.answers).toHaveLength(records.length);
        d.answers!.forEach((a, i) => {
          expect(a.name).toBe(records[i]!.name);
          expect(decodedData(a)).toEqual(normalize(records[i] as RR));
        });
        const plain = dnsPacket.encode({
          type: "response",
          id: 7,
          questions: [{ name: "lx.com", type: "ANY" as dnsPacket.RecordType }],
          answers: records.map(
            (r) => ({ ...r, data: r.type === "TXT" ? (r.data as string[]).map((s) => Buffer.from(s)) : r.data }) as dnsPacket.Answer,
          ),
        });
        expect(ours.length).toBeLessThanOrEqual(plain.length);
      }),
      { numRuns: 150 },
    );
  });

  test("names are compressed: the MX answer points back into the question", () => {
    const q = readQuestion(query("lx.com", "MX"))!.question;
    const r = lookup(new ZoneSet(zones), "lx.com", TYPE.MX, { minimalAny: true })!;
    const msg = encodeResponse({ id: 1, opcode: 0, rd: false, ra: false, cd: false, question: q, ...r, limit: 512 });
    // Answer owner = pointer to offset 12 (0xC00C).
    const qEnd = 12 + 8 + 4;
    expect(msg.readUInt16BE(qEnd)).toBe(0xc00c);
    expect(msg.includes(Buffer.from("\x02lx\x03com\x00", "latin1"), qEnd)).toBe(false);
    const d = dnsPacket.decode(msg);
    expect(d.answers![0]!).toMatchObject({ name: "lx.com", data: { preference: 10, exchange: "mail.lx.com" } });
    expect(d.additionals!.map((a) => [a.name, a.type])).toContainEqual(["mail.lx.com", "A"]);
  });
});

describe("truncation", () => {
  const big: RR[] = Array.from(
    { length: 40 },
    (_, i) => ({ name: "big.lx.com", type: "TXT", ttl: 60, data: [`record number ${i} `.padEnd(40, "x")] }) as RR,
  );
  const q = readQuestion(query("big.lx.com", "TXT"))!.question;
  const base = { id: 9, opcode: 0, aa: true, rd: false, ra: false, cd: false, rcode: 0, question: q };

  test("an answer that does not fit sets TC and leaves only the question (and OPT)", () => {
    const msg = encodeResponse({ ...base, answer: big, edns: { dnssecOk: false }, limit: 512 });
    expect(msg.length).toBeLessThanOrEqual(512);
    const d = dnsPacket.decode(msg);
    expect(d.flag_tc).toBe(true);
    expect(d.answers).toHaveLength(0);
    expect(d.additionals!.map((a) => a.type)).toEqual(["OPT"]);
    const full = dnsPacket.decode(encodeResponse({ ...base, answer: big, limit: 65535 }));
    expect(full.flag_tc).toBe(false);
    expect(full.answers).toHaveLength(40);
  });

  test("additional records that do not fit are left out without TC (RFC 2181 §9)", () => {
    const answer = big.slice(0, 9);
    const additional: RR[] = Array.from(
      { length: 10 },
      (_, i) => ({ name: `h${i}.lx.com`, type: "A", ttl: 60, data: `192.0.2.${i}` }) as RR,
    );
    const msg = encodeResponse({ ...base, answer, additional, limit: 512 });
    const d = dnsPacket.decode(msg);
    expect(msg.length).toBeLessThanOrEqual(512);
    expect(d.flag_tc).toBe(false);
    expect(d.answers).toHaveLength(9);
    expect(d.additionals!.length).toBeLessThan(10);
  });
});

describe("malformed messages", () => {
  const valid = query("mail.lx.com", "A");
  const kind = (b: Buffer) => parseMessage(b).kind;

  test("too short to have a header: dropped", () => {
    expect(kind(Buffer.alloc(11))).toBe("drop");
  });
  test("counts that cannot fit: FORMERR", () => {
    const b = Buffer.from(valid);
    b.writeUInt16BE(5000, 6);
    expect(kind(b)).toBe("formerr");
  });
  test("truncated question: FORMERR", () => {
    expect(kind(valid.subarray(0, valid.length - 3))).toBe("formerr");
  });
  test("compression loop and forward pointer: FORMERR", () => {
    const loop = Buffer.concat([valid.subarray(0, 12), Buffer.from([0xc0, 12, 0, 1, 0, 1])]);
    expect(kind(loop)).toBe("formerr");
    const fwd = Buffer.concat([valid.subarray(0, 12), Buffer.from([0xc0, 14, 0, 0, 1, 0, 1])]);
    expect(kind(fwd)).toBe("formerr");
    // A loop inside an answer record of a query.
    const withAnswer = Buffer.concat([valid, Buffer.from([0xc0, valid.length, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4])]);
    withAnswer.writeUInt16BE(1, 6);
    expect(kind(withAnswer)).toBe("formerr");
  });
  test("a label over 63 octets and a name over 255: FORMERR", () => {
    const longLabel = Buffer.concat([valid.subarray(0, 12), Buffer.from([64]), Buffer.alloc(64, 0x61), Buffer.from([0, 0, 1, 0, 1])]);
    expect(kind(longLabel)).toBe("formerr");
    const labels = Array.from({ length: 5 }, () => Buffer.concat([Buffer.from([60]), Buffer.alloc(60, 0x61)]));
    const longName = Buffer.concat([valid.subarray(0, 12), ...labels, Buffer.from([0, 0, 1, 0, 1])]);
    expect(kind(longName)).toBe("formerr");
  });
  test("trailing bytes and two OPT records: FORMERR", () => {
    expect(kind(Buffer.concat([valid, Buffer.from([1, 2, 3])]))).toBe("formerr");
    const opt = Buffer.from([0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]);
    const two = Buffer.concat([valid, opt, opt]);
    two.writeUInt16BE(2, 10);
    expect(kind(two)).toBe("formerr");
  });
  test("a response is never treated as a query", () => {
    const b = Buffer.from(valid);
    b[2] = b[2]! | 0x80;
    expect(kind(b)).toBe("response");
  });
});

describe("fast path", () => {
  const scanned = (m: Buffer) => {
    const s = newQueryScan();
    return scanQuery(m, s) ? s : null;
  };

  test("reads ordinary queries and keys them case-insensitively", () => {
    const upper = query("MAIL.lx.COM", "A", { edns: 1232 });
    const lower = query("mail.lx.com", "A", { edns: 1232 });
    const a = scanned(upper)!;
    const b = scanned(lower)!;
    expect(a).not.toBeNull();
    expect(a.hash).toBe(b.hash);
    expect(a.qEnd).toBe(12 + 13 + 4);
    expect([a.udpSize, a.version, a.dnssecOk]).toEqual([1232, 0, false]);
    expect(scanned(query("mail.lx.com", "MX"))!.hash).not.toBe(b.hash);
    expect(scanned(query("mail.lx.com", "A"))!.udpSize).toBe(-1);
    expect(sameQuestion(upper, lower, a.qEnd)).toBe(2);
    expect(sameQuestion(lower, Buffer.from(lower), a.qEnd)).toBe(1);
    expect(sameQuestion(lower, query("mail.lx.con", "A", { edns: 1232 }), a.qEnd)).toBe(0);
    expect(sameQuestion(lower, query("mail.lx.com", "AAAA", { edns: 1232 }), a.qEnd)).toBe(0);
  });

  test("property: names equal but for the case of letters match; [ is not {, @ is not `", () => {
    const chars = ["a", "B", "z", "Z", "[", "{", "@", "`", "_", "-", "0"];
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...chars), { minLength: 1, maxLength: 20 }), (cs) => {
        const label = cs.join("");
        const mk = (l: string) => query(`${l}.lx.com`, "A");
        const a = mk(label);
        const s = scanned(a)!;
        const lower = mk(label.toLowerCase()); // in this alphabet toLowerCase changes A-Z only
        expect(sameQuestion(a, lower, s.qEnd)).toBe(label === label.toLowerCase() ? 1 : 2);
        expect(scanned(lower)!.hash).toBe(s.hash);
        const swapped = label.replaceAll("[", "{").replaceAll("@", "`");
        if (swapped !== label) {
          expect(sameQuestion(a, mk(swapped), s.qEnd)).toBe(0);
        }
      }),
      { numRuns: 500 },
    );
  });

  test("property: whatever the fast path accepts, the full parser accepts as a query", () => {
    const seeds = [query("lx.com", "MX"), query("mail.lx.com", "A", { edns: 4096 }), query("_imaps._tcp.lx.com", "SRV", { edns: 512 })];
    fc.assert(
      fc.property(
        fc.constantFrom(...seeds),
        fc.array(fc.tuple(fc.nat(600), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
        fc.nat(4),
        (seed, flips, cut) => {
          const b = Buffer.from(seed);
          for (const [i, v] of flips) if (i < b.length) b[i] = v;
          const m = cut > 0 ? b.subarray(0, Math.max(0, b.length - cut)) : b;
          if (scanned(m)) expect(parseMessage(m).kind).toBe("query");
        },
      ),
      { numRuns: 3000 },
    );
  });
});

describe("engine fuzz (no sockets)", () => {
  const engine = new Engine(zones, { log: silentLogger, trustedNetworks: [], secondaries: [], forwarder: new Forwarder([]), rateLimit: 0 });
  const client = { address: "192.0.2.10", port: 5353, transport: "udp" as const };

  function checkReply(input: Buffer, out: unknown) {
    if (out === null) return;
    expect(out instanceof Promise).toBe(false);
    for (const b of Array.isArray(out) ? out : [out as Buffer]) {
      expect(b.length).toBeLessThanOrEqual(MAX_UDP_PAYLOAD);
      const d = dnsPacket.decode(b);
      expect(d.type).toBe("response");
      expect(d.id).toBe(input.readUInt16BE(0));
    }
  }

  test("random bytes: never throws; replies are well-formed responses with the query's ID", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 600 }), (bytes) => {
        const b = Buffer.from(bytes);
        const out = engine.handle(b, client);
        if (b.length >= 12) checkReply(b, out);
        else expect(out).toBeNull();
      }),
      { numRuns: 4000 },
    );
  });

  test("mutated valid queries: never throws, always a well-formed answer or nothing", () => {
    const seeds = [
      "lx.com MX",
      "www.lx.com A",
      "loop1.lx.com A",
      "x.wild.lx.com TXT",
      "a.sub.lx.com A",
      "1.0.0.127.in-addr.arpa PTR",
      "lx.com ANY",
      "lx.com AXFR",
    ].map((s, i) => query(s.split(" ")[0]!, s.split(" ")[1]!, { edns: i % 2 ? 1232 : 0 }));
    fc.assert(
      fc.property(
        fc.constantFrom(...seeds),
        fc.array(fc.tuple(fc.nat(200), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
        fc.uint8Array({ maxLength: 8 }),
        (seed, flips, tail) => {
          const b = Buffer.concat([seed, Buffer.from(tail)]);
          for (const [i, v] of flips) if (i < b.length) b[i] = v;
          const out = engine.handle(b, client);
          if (b.length >= 12 && !(b[2]! & 0x80)) checkReply(b, out);
        },
      ),
      { numRuns: 4000 },
    );
  });

  test("the answer cache: admitted on a second miss, hot answers survive floods, hits equal misses", () => {
    const small = new Engine(zones, {
      log: silentLogger,
      trustedNetworks: [],
      secondaries: [],
      forwarder: new Forwarder([]),
      rateLimit: 0,
      cacheEntries: 8,
    });
    // Authoritative answers never involve forwarding: the reply is synchronous.
    const ask = (b: Buffer) => small.handle(b, client) as Buffer | null;
    const hot = query("mail.lx.com", "A", { edns: 1232, id: 1 });
    const first = ask(hot) as Buffer;
    ask(hot);
    expect(small.stats.cacheHits).toBe(0);
    const hit = ask(hot) as Buffer;
    expect(small.stats.cacheHits).toBe(1);
    expect(hit.equals(first)).toBe(true);
    // One-off names never enter; names asked twice do, and push out the cold entries only.
    for (let i = 0; i < 200; i++) {
      ask(query(`once${i}.lx.com`, "A", { edns: 1232 }));
      const twice = query(`twice${i}.lx.com`, "A", { edns: 1232 });
      ask(twice);
      ask(twice);
      ask(hot);
    }
    expect(small.stats.cacheHits).toBe(201);
    // A hit with another ID and spelling is that query's own answer.
    const mixed = ask(query("MAIL.lx.com", "A", { edns: 1232, id: 999 })) as Buffer;
    const d = dnsPacket.decode(mixed);
    expect(d.id).toBe(999);
    expect(d.questions![0]!.name).toBe("MAIL.lx.com");
    expect(d.answers!.map((a) => [a.name, (a as { data: unknown }).data])).toEqual([["MAIL.lx.com", "127.0.0.1"]]);
  });

  test("the CNAME loop, chain, wildcard and delegation give sane answers", () => {
    const zs = new ZoneSet(zones);
    const chain = lookup(zs, "www.lx.com", TYPE.A, { minimalAny: true })!;
    expect(chain.answer.map((a) => [a.name, a.type])).toEqual([
      ["www.lx.com", "CNAME"],
      ["web.lx.com", "CNAME"],
      ["mail.lx.com", "A"],
    ]);
    const loop = lookup(zs, "loop1.lx.com", TYPE.A, { minimalAny: true })!;
    expect(loop.answer.map((a) => a.name)).toEqual(["loop1.lx.com", "loop2.lx.com"]);
    const wild = lookup(zs, "Deep.x.wild.lx.com".toLowerCase(), TYPE.TXT, { minimalAny: true })!;
    expect(wild.answer).toEqual([{ name: "deep.x.wild.lx.com", type: "TXT", ttl: 3600, data: ["wildcard"] }]);
    const ref = lookup(zs, "host.sub.lx.com", TYPE.A, { minimalAny: true })!;
    expect(ref).toMatchObject({ aa: false, rcode: RCODE.NOERROR, answer: [] });
    expect(ref.authority.map((a) => a.type)).toEqual(["NS"]);
    expect(ref.additional.map((a) => a.data)).toEqual(["192.0.2.53"]);
    expect(lookup(zs, "example.org", TYPE.A, { minimalAny: true })).toBeNull();
  });
});
