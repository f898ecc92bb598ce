/**
 * The DNS server with more than one UDP thread (dns/threads.ts): the main thread's socket and a
 * worker thread's socket on one port (SO_REUSEPORT), the kernel choosing by the client's address
 * and port. Queries therefore go out from many source ports (`fromManyPorts`), so that each
 * thread gets some (with 40 ports, the chance that one thread gets none is 2^-39); the per-thread
 * counters (`threadStats`) show that it did.
 *
 * Also: the shared rate limiter (one budget per client prefix whatever thread a datagram reaches),
 * NOTIFY acknowledgements that reach a worker, the default number of threads, and what happens
 * when a worker thread stops.
 */
import * as dgram from "node:dgram";
import * as path from "node:path";
import type { Worker } from "node:worker_threads";
import * as dnsPacket from "dns-packet";
import pino from "pino";
import { ConfigError } from "../config/schema";
import { type DnsService, startDns } from "../dns";
import { RateLimiter, rateLimitTable } from "../dns/ratelimit";
import { defaultUdpThreads } from "../dns/threads";
import { silentLogger } from "../lib/log";
import { devConfig, dig, loopbackSockets, tempDir, until } from "./dns/helpers";

const tmp = tempDir("mailstack-dns-threads-");
const services: DnsService[] = [];
let dirs = 0;

afterAll(async () => {
  await Promise.all(services.map((s) => s.close()));
  tmp.cleanup();
});

async function start(overrides: Record<string, unknown>, opts: Parameters<typeof startDns>[1] = {}): Promise<DnsService> {
  const s = await startDns(devConfig(path.join(tmp.dir, `d${dirs++}`), overrides), { log: silentLogger, udpThreads: 2, ...opts });
  services.push(s);
  return s;
}

const portOf = (s: DnsService) => s.listeners[0]!.port;

/** A logger that keeps every line (as parsed JSON). */
function capturingLogger(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  return { lines, log: pino({ level: "info" }, { write: (l: string) => void lines.push(JSON.parse(l)) }) };
}

const query = (name: string, type: string, id: number) =>
  dnsPacket.encode({ type: "query", id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: type as dnsPacket.RecordType }] });

/**
 * One query from each of `n` sockets (so from `n` source ports); the answers in socket order. A
 * query without an answer is sent again (loopback does not lose datagrams, but a full receive
 * buffer may); after 5 tries the test fails.
 */
async function fromManyPorts(port: number, n: number, name: string, type: string): Promise<dnsPacket.DecodedPacket[]> {
  const socks = await loopbackSockets(n);
  try {
    return await Promise.all(
      socks.map(
        (s, i) =>
          new Promise<dnsPacket.DecodedPacket>((resolve, reject) => {
            const q = query(name, type, 1000 + i);
            let tries = 0;
            let timer: NodeJS.Timeout | undefined;
            const send = () => {
              if (++tries > 5) return reject(new Error(`no answer to ${name} ${type} from port ${s.address().port}`));
              s.send(q, port, "127.0.0.1");
              timer = setTimeout(send, 1000);
            };
            s.on("message", (m) => {
              const d = dnsPacket.decode(m);
              if (d.id !== 1000 + i) return;
              clearTimeout(timer);
              resolve(d);
            });
            send();
          }),
      ),
    );
  } finally {
    await Promise.all(socks.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}

const rcodeOf = (d: dnsPacket.DecodedPacket) => (d as dnsPacket.DecodedPacket & { rcode: string }).rcode;
const dataOf = (d: dnsPacket.DecodedPacket) => (d.answers ?? []).map((a) => (a as { data: unknown }).data);
const queriesPerThread = (s: DnsService) => s.threadStats().map((t) => t.queries);

describe("two UDP threads", () => {
  test("queries from many source ports are all answered, by both threads; TCP too", async () => {
    const s = await start({ dns: { rateLimit: 0 } });
    expect(s.udpThreads).toBe(2);
    const answers = await fromManyPorts(portOf(s), 40, "lx.com", "MX");
    expect(answers.map((d) => [rcodeOf(d), dataOf(d)])).toEqual(
      Array.from({ length: 40 }, () => ["NOERROR", [{ preference: 10, exchange: "mail.lx.com" }]]),
    );
    const perThread = queriesPerThread(s);
    expect(perThread).toHaveLength(2);
    expect(perThread.every((n) => n > 0)).toBe(true);
    expect(s.stats.queries).toBe(perThread[0]! + perThread[1]!);
    const tcp = await dig(portOf(s), ["lx.com", "MX", "+tcp"]);
    expect(tcp.answer.map((a) => a.data)).toEqual(["10 mail.lx.com."]);
  });

  test("a reload changes the answers of every thread before it resolves", async () => {
    const dir = path.join(tmp.dir, "reload");
    const s = await startDns(devConfig(dir, { dns: { rateLimit: 0 } }), { log: silentLogger, udpThreads: 2 });
    services.push(s);
    const before = await fromManyPorts(portOf(s), 40, "new.lx.com", "A");
    expect(new Set(before.map(rcodeOf))).toEqual(new Set(["NXDOMAIN"]));
    const counted = queriesPerThread(s);
    const r = await s.reload(devConfig(dir, { dns: { rateLimit: 0, records: [{ name: "new", type: "A", value: "192.0.2.44" }] } }));
    expect(r.changed).toEqual(["lx.com"]);
    const after = await fromManyPorts(portOf(s), 40, "new.lx.com", "A");
    expect(after.map((d) => [rcodeOf(d), dataOf(d)])).toEqual(Array.from({ length: 40 }, () => ["NOERROR", ["192.0.2.44"]]));
    // Each thread answered some of the queries after the reload, every one with the new record.
    const served = queriesPerThread(s).map((n, i) => n - counted[i]!);
    expect(served.every((n) => n > 0)).toBe(true);
    const serial = (await fromManyPorts(portOf(s), 40, "lx.com", "SOA")).map((d) => (dataOf(d)[0] as { serial: number }).serial);
    expect(new Set(serial)).toEqual(new Set([r.serials["lx.com"]]));
  });

  test("a worker thread that stops is started again, from the zones as they are now", async () => {
    const workers: Worker[] = [];
    const { log, lines } = capturingLogger();
    const dir = path.join(tmp.dir, "restart");
    const s = await startDns(devConfig(dir, { dns: { rateLimit: 0 } }), {
      log,
      udpThreads: 2,
      udpRestartDelayMs: 50,
      onUdpWorker: (w) => workers.push(w),
    });
    services.push(s);
    await s.reload(devConfig(dir, { dns: { rateLimit: 0, records: [{ name: "late", type: "A", value: "192.0.2.7" }] } }));
    expect(workers).toHaveLength(1);
    await workers[0]!.terminate();
    // Stopped: the kernel gives all its clients to the main thread's socket.
    expect(s.udpThreads).toBe(1);
    const meanwhile = await fromManyPorts(portOf(s), 20, "late.lx.com", "A");
    expect(meanwhile.map(dataOf)).toEqual(Array.from({ length: 20 }, () => ["192.0.2.7"]));
    expect(lines).toContainEqual(expect.objectContaining({ level: 50, thread: 1, msg: "DNS UDP thread stopped; starting it again" }));
    await until(async () => s.udpThreads === 2, 20_000, "the thread to start again");
    expect(workers).toHaveLength(2);
    const counted = queriesPerThread(s);
    const after = await fromManyPorts(portOf(s), 40, "late.lx.com", "A");
    expect(after.map(dataOf)).toEqual(Array.from({ length: 40 }, () => ["192.0.2.7"]));
    expect(queriesPerThread(s)[1]! - counted[1]!).toBeGreaterThan(0);
  });

  test("a worker thread that keeps stopping is left stopped, with an error; UDP is still served", async () => {
    const workers: Worker[] = [];
    const { log, lines } = capturingLogger();
    const s = await start(
      { dns: { rateLimit: 0 } },
      { log, udpRestartDelayMs: 20, udpMaxRestarts: 2, onUdpWorker: (w) => workers.push(w) },
    );
    for (let i = 0; i < 3; i++) {
      await until(async () => s.udpThreads === 2 && workers.length === i + 1, 20_000, `start ${i + 1} of the thread`);
      await workers[i]!.terminate();
    }
    await until(async () => lines.some((l) => /keeps stopping/.test(String(l.msg))), 5000, "the thread to be given up");
    expect(s.udpThreads).toBe(1);
    expect(workers).toHaveLength(3);
    const answers = await fromManyPorts(portOf(s), 20, "lx.com", "MX");
    expect(answers.map(rcodeOf)).toEqual(Array.from({ length: 20 }, () => "NOERROR"));
  });

  test("rate limiting: one budget per client prefix, whatever thread a datagram reaches", async () => {
    // Loopback is not trusted here, so 127.0.0.0/24 gets 5 answers a second in all (with a
    // budget per thread it would get 10).
    const s = await start({ trustedNetworks: ["10.0.0.0/8"], dns: { rateLimit: 5 } });
    const socks = await loopbackSockets(20);
    const replies: dnsPacket.DecodedPacket[] = [];
    try {
      for (const u of socks) u.on("message", (m) => replies.push(dnsPacket.decode(m)));
      socks.forEach((u, i) => {
        u.send(query("lx.com", "MX", 2 * i), portOf(s), "127.0.0.1");
        u.send(query("lx.com", "MX", 2 * i + 1), portOf(s), "127.0.0.1");
      });
      await until(async () => s.stats.queries === 40, 5000, "all 40 queries to arrive");
      await new Promise((r) => setTimeout(r, 300));
    } finally {
      await Promise.all(socks.map((u) => new Promise<void>((r) => u.close(() => r()))));
    }
    expect(queriesPerThread(s).every((n) => n > 0)).toBe(true);
    const full = replies.filter((d) => !d.flag_tc);
    expect(full.length).toBeGreaterThanOrEqual(5);
    expect(full.length).toBeLessThan(10);
    expect(s.stats.rateLimited + s.stats.slipped).toBe(40 - full.length);
  });

  test("NOTIFY acknowledgements that reach the worker thread count", async () => {
    // 16 secondaries, each answering NOTIFY from its own port: the acknowledgements come back to
    // both threads' sockets (all 16 to one of them: 2^-15).
    const secondaries = await loopbackSockets(16);
    for (const u of secondaries)
      u.on("message", (m, from) => {
        const ack = Buffer.from(m.subarray(0, 12 + m.subarray(12).indexOf(0) + 5)); // header and question
        ack[2] = ack[2]! | 0x80;
        ack.writeUInt16BE(0, 6);
        u.send(ack, from.port, from.address);
      });
    try {
      const targets = secondaries.map((u) => `127.0.0.1:${u.address().port}`);
      const s = await start({ dns: { rateLimit: 0, secondaries: targets } }, { notifyRetryMs: 5000, notifyAttempts: 1 });
      const acks = await s.notified;
      expect(acks.filter((a) => a.zone === "lx.com")).toHaveLength(16);
      expect(acks.every((a) => a.acknowledged)).toBe(true);
      // The acknowledgements are responses: each counts as a message where it arrived.
      expect(queriesPerThread(s).every((n) => n > 0)).toBe(true);
    } finally {
      await Promise.all(secondaries.map((u) => new Promise<void>((r) => u.close(() => r()))));
    }
  });
});

describe("answers in bursts (udp.ts)", () => {
  test("a burst of 300 queries from one socket: each answered once, with its own ID and question", async () => {
    const s = await start({ dns: { rateLimit: 0 } }, { udpThreads: 1 });
    const u = dgram.createSocket("udp4");
    await new Promise<void>((r) => u.bind(0, "127.0.0.1", () => r()));
    const names = ["lx.com MX", "mail.lx.com A", "nothere.lx.com A", "_dmarc.lx.com TXT", "lx.com SOA"];
    const got = new Map<number, dnsPacket.DecodedPacket[]>();
    u.on("message", (m) => {
      const d = dnsPacket.decode(m);
      got.set(d.id!, [...(got.get(d.id!) ?? []), d]);
    });
    try {
      for (let i = 0; i < 300; i++) {
        const [name, type] = names[i % names.length]!.split(" ") as [string, string];
        u.send(query(name, type, i), portOf(s), "127.0.0.1");
      }
      await until(async () => got.size === 300, 10_000, "300 answers");
      await new Promise((r) => setTimeout(r, 100));
    } finally {
      await new Promise<void>((r) => u.close(() => r()));
    }
    expect([...got.values()].every((ds) => ds.length === 1)).toBe(true);
    for (const [id, [d]] of got) {
      const [name, type] = names[id % names.length]!.split(" ");
      expect([d!.questions![0]!.name, d!.questions![0]!.type]).toEqual([name, type]);
      expect(rcodeOf(d!)).toBe(name === "nothere.lx.com" ? "NXDOMAIN" : "NOERROR");
    }
  });
});

describe("how many threads", () => {
  test("by default one per core but one, from 1 to 2: a 2-core host gets one", () => {
    expect([1, 2, 3, 4, 16].map((cores) => defaultUdpThreads(cores))).toEqual([1, 1, 2, 2, 2]);
  });

  test("one thread: no worker, plain UDP", async () => {
    const s = await start({ dns: { rateLimit: 0 } }, { udpThreads: 1 });
    expect(s.udpThreads).toBe(1);
    expect(s.threadStats()).toHaveLength(1);
    const answers = await fromManyPorts(portOf(s), 10, "mail.lx.com", "A");
    expect(answers.map(dataOf)).toEqual(Array.from({ length: 10 }, () => ["127.0.0.1"]));
  });

  test("the stack's dns.threads sets the number when no start option does", async () => {
    const s = await startDns(devConfig(path.join(tmp.dir, `d${dirs++}`), { dns: { rateLimit: 0, threads: 2 } }), { log: silentLogger });
    services.push(s);
    expect(s.udpThreads).toBe(2);
    expect(s.threadStats()).toHaveLength(2);
    const answers = await fromManyPorts(portOf(s), 10, "mail.lx.com", "A");
    expect(answers.map(dataOf)).toEqual(Array.from({ length: 10 }, () => ["127.0.0.1"]));
  });

  test("the schema refuses dns.threads outside 1 to 64, naming the key", () => {
    for (const threads of [0, 1.5, 65]) {
      expect(() => devConfig(path.join(tmp.dir, "schema"), { dns: { threads } })).toThrow(/mailstack:dns\.threads/);
    }
  });

  test("a number of threads that is not a whole number from 1 to 64 is a config error", async () => {
    for (const n of [0, 1.5, 65]) {
      const err = await startDns(devConfig(path.join(tmp.dir, `bad${n}`)), { log: silentLogger, udpThreads: n }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigError);
      expect(String((err as Error).message)).toContain("mailstack:dns.threads");
    }
  });
});

describe("the rate limiter's shared table", () => {
  test("limiters over one table share each prefix's budget; other prefixes have their own", () => {
    let t = 1_000_000;
    const table = rateLimitTable(16);
    const a = new RateLimiter(4, table, 2, () => t);
    const b = new RateLimiter(4, table, 2, () => t);
    const sent = [a, b, a, b, a, b].map((l, i) => l.check(`192.0.2.${i}`));
    expect(sent).toEqual(["send", "send", "send", "send", "drop", "slip"]);
    expect(a.check("198.51.100.1")).toBe("send");
    expect(b.check("2001:db8:0:1::1")).toBe("send");
    expect(a.size).toBe(3);
    // Half a second later, half the budget is back.
    t += 500;
    expect([a.check("192.0.2.9"), b.check("192.0.2.9"), a.check("192.0.2.9")]).toEqual(["send", "send", "drop"]);
  });

  test("a flood of prefixes cannot grow the table; old buckets give way", () => {
    let t = 0;
    const l = new RateLimiter(10, rateLimitTable(4), 2, () => t);
    for (let i = 0; i < 10_000; i++) {
      t += 0.01;
      expect(l.check(`10.${(i >> 8) & 255}.${i & 255}.1`)).toBe("send");
    }
    expect(l.size).toBeLessThanOrEqual(32);
  });

  test("off at rate 0", () => {
    const l = new RateLimiter(0);
    expect(l.enabled).toBe(false);
    expect(Array.from({ length: 100 }, () => l.check("192.0.2.1")).every((d) => d === "send")).toBe(true);
  });
});
