/**
 * The query engine: one message in, the reply out, for either transport. The gates, in order:
 *
 * 1. parse (wire.ts): too short → dropped; a response (QR=1) → handed to NOTIFY bookkeeping,
 *    never answered; malformed → FORMERR;
 * 2. EDNS version other than 0 → BADVERS (RFC 6891 §6.1.3);
 * 3. opcode: QUERY is served, NOTIFY is REFUSED (we are the primary), anything else → NOTIMP;
 * 4. question: exactly one; meta types (OPT, TSIG, TKEY) → FORMERR; MAILA/MAILB → NOTIMP;
 *    classes other than IN (or ANY) → REFUSED;
 * 5. AXFR/IXFR: only from `dns.secondaries`, else REFUSED (see `transfer`);
 * 6. a name in our zones → the authoritative answer (answer.ts), AA set;
 * 7. any other name → forwarded upstream for trusted clients, REFUSED for everyone else.
 *
 * RA is set exactly when this client may recurse (trusted and an upstream configured).
 * UDP answers pass the rate limiter (ratelimit.ts) unless the client is trusted.
 *
 * Hot path: authoritative UDP answers are cached encoded, keyed on a hash of the question (name
 * without case), the payload limit and the EDNS/DO bits, and matched on the question's bytes. A
 * cached answer is copied and patched (ID, the query's own spelling of the name, RD, CD, RA)
 * without decoding or encoding anything, and without building a string: the per-datagram work is
 * one scan of the raw question, one Map lookup by number, one copy. Only queries that the strict
 * `scanQuery` reads (one question, no records but an optional well-formed OPT) take it; all
 * others go through the full parser first. The cache is emptied when the zones change.
 */
import { networkMatcher, unmapV4 } from "../lib/cidr";
import { lookup, transferRecords, ZoneSet } from "./answer";
import type { Forwarder, HostPort } from "./forward";
import { RateLimiter } from "./ratelimit";
import {
  CLASS_ANY,
  CLASS_IN,
  encodeResponse,
  encodeTransfer,
  errorResponse,
  MAX_UDP_PAYLOAD,
  MIN_UDP_PAYLOAD,
  newQueryScan,
  OPCODE,
  parseMessage,
  type Query,
  queryFromScan,
  RCODE,
  type ResponseSpec,
  sameQuestion,
  scanQuery,
  TYPE,
} from "./wire";
import type { Zone } from "./zone";

export interface Client {
  address: string;
  port: number;
  transport: "udp" | "tcp";
}

/** One message, several (a zone transfer over TCP), or nothing (dropped). */
export type Reply = Buffer | Buffer[] | null;

/** The logging the engine and the UDP transport need: a pino Logger, or a worker thread's relay. */
export interface DnsLog {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface EngineOptions {
  log: DnsLog;
  trustedNetworks: readonly string[];
  /** Secondaries: allowed to transfer (by address). */
  secondaries: readonly HostPort[];
  forwarder: Forwarder;
  /** Responses per second per client prefix; 0 = off. */
  rateLimit: number;
  /** The rate limiter's buckets, shared by every thread's engine (ratelimit.ts); private if omitted. */
  rateLimitTable?: SharedArrayBuffer;
  /**
   * Where the counters go (STAT_NAMES order): a slice of the server's shared stats buffer, so a
   * reload's new engine keeps counting and the main thread can add up every thread's. Private if
   * omitted.
   */
  counters?: Float64Array;
  /** Responses (QR=1) that reached a server socket: NOTIFY acknowledgements. */
  onResponse?: (msg: Buffer, from: HostPort) => void;
  cacheEntries?: number;
}

export const STAT_NAMES = [
  "queries",
  "cacheHits",
  "formerr",
  "dropped",
  "rateLimited",
  "slipped",
  "refused",
  "forwarded",
  "transfers",
] as const;
export type EngineStats = Record<(typeof STAT_NAMES)[number], number>;
const QUERIES = 0;
const CACHE_HITS = 1;
const FORMERR = 2;
const DROPPED = 3;
const RATE_LIMITED = 4;
const SLIPPED = 5;
const REFUSED = 6;
const FORWARDED = 7;
const TRANSFERS = 8;

/**
 * Bytes per thread in a shared counters buffer: the counters padded to two cache lines, so two
 * threads never write to the same line (each bumps its own per query).
 */
export const STATS_SLOT_BYTES = 128;

/** Thread `slot`'s counters in a buffer of `STATS_SLOT_BYTES` per thread. */
export function statsSlot(buffer: SharedArrayBuffer, slot: number): Float64Array {
  return new Float64Array(buffer, slot * STATS_SLOT_BYTES, STAT_NAMES.length);
}

/** The counters as named numbers (each `counters` array is one thread's, or a sum). */
export function statsOf(counters: Float64Array): EngineStats {
  const out = {} as EngineStats;
  STAT_NAMES.forEach((n, i) => {
    out[n] = counters[i]!;
  });
  return out;
}

/** A cached answer. Entries whose keys collide are chained through `next`. */
interface CacheEntry {
  key: number;
  /** The encoded answer; its question (offset 12 to `qEnd`) is the question as first asked. */
  buf: Buffer;
  qEnd: number;
  limit: number;
  /** 0 without EDNS, 1 with, 2 with DO set. */
  ednsBits: number;
  /** Used since the eviction clock last passed: a second chance (CLOCK). */
  hit: boolean;
  next: CacheEntry | null;
}

/** RFC 1982 serial comparison: is `a` newer than `b`? */
export function serialGreater(a: number, b: number): boolean {
  return a !== b && ((a > b && a - b < 2 ** 31) || (a < b && b - a > 2 ** 31));
}

export class Engine {
  zones: ZoneSet;
  /** STAT_NAMES order; a plain Float64Array because the hot path bumps it per query. */
  private readonly c: Float64Array;
  /** Encoded answers by key (see `cacheKey`); `hit` gives an entry a second chance at eviction (CLOCK). */
  private cache = new Map<number, CacheEntry>();
  private cached = 0;
  /** Insertion order for eviction (a queue over an array; Map iteration from the front gets slow). */
  private order: CacheEntry[] = [];
  /** Keys that missed once: the cache's doorkeeper. */
  private seenOnce = new Set<number>();
  private orderHead = 0;
  /** The fast path's reader state, reused for every datagram. */
  private readonly scan = newQueryScan();
  private readonly maxCache: number;
  private readonly rrl: RateLimiter;
  private readonly isTrustedNet: (a: string) => boolean;
  private trustMemo = new Map<string, boolean>();
  private readonly secondaryAddrs: Set<string>;

  constructor(
    zones: Zone[],
    private readonly opts: EngineOptions,
  ) {
    this.zones = new ZoneSet(zones);
    this.maxCache = opts.cacheEntries ?? 10_000;
    this.rrl = new RateLimiter(opts.rateLimit, opts.rateLimitTable);
    this.c = opts.counters ?? new Float64Array(STAT_NAMES.length);
    this.isTrustedNet = networkMatcher(opts.trustedNetworks);
    this.secondaryAddrs = new Set(opts.secondaries.map((s) => unmapV4(s.address)));
  }

  /** This engine's counters (a snapshot). */
  get stats(): EngineStats {
    return statsOf(this.c);
  }

  setZones(zones: Zone[]): void {
    this.zones = new ZoneSet(zones);
    this.cache.clear();
    this.cached = 0;
    this.seenOnce.clear();
    this.order = [];
    this.orderHead = 0;
  }

  trusted(address: string): boolean {
    let t = this.trustMemo.get(address);
    if (t === undefined) {
      t = this.isTrustedNet(address);
      if (this.trustMemo.size > 4096) this.trustMemo.clear();
      this.trustMemo.set(address, t);
    }
    return t;
  }

  /** Whether recursion is offered to this client (and so RA is set). */
  recursionFor(address: string): boolean {
    return this.opts.forwarder.available && this.trusted(address);
  }

  handle(msg: Buffer, client: Client): Reply | Promise<Reply> {
    this.c[QUERIES]!++;
    const scan = this.scan;
    if (client.transport === "udp" && scanQuery(msg, scan) && scan.version === 0) {
      const limit = scan.udpSize < 0 ? MIN_UDP_PAYLOAD : Math.max(MIN_UDP_PAYLOAD, Math.min(scan.udpSize, MAX_UDP_PAYLOAD));
      const ednsBits = scan.udpSize < 0 ? 0 : scan.dnssecOk ? 2 : 1;
      const key = cacheKey(scan.hash, limit, ednsBits);
      const qEnd = scan.qEnd;
      for (let e: CacheEntry | null | undefined = this.cache.get(key); e; e = e.next) {
        if (e.qEnd !== qEnd || e.limit !== limit || e.ednsBits !== ednsBits) continue;
        const same = sameQuestion(e.buf, msg, qEnd);
        if (same === 0) continue;
        this.c[CACHE_HITS]!++;
        e.hit = true;
        return this.rateLimit(client, this.patch(e.buf, msg, qEnd, same === 2, client.address));
      }
      const fastQuery = queryFromScan(msg, scan);
      const r = fastQuery ? this.query(fastQuery, msg, client) : this.process(msg, client);
      if (r.cacheable && Buffer.isBuffer(r.reply)) {
        // Admit an answer on its second miss only: one-off names (random-subdomain floods)
        // never displace anything and cost no cache churn. (A key collision here only admits
        // an answer one miss early.)
        if (this.seenOnce.has(key)) this.remember(key, r.reply, qEnd, limit, ednsBits);
        else {
          if (this.seenOnce.size >= this.maxCache) this.seenOnce.clear();
          this.seenOnce.add(key);
        }
      }
      return r.reply instanceof Promise ? r.reply : this.rateLimit(client, r.reply as Buffer | null);
    }
    const r = this.process(msg, client);
    if (r.reply instanceof Promise) return r.reply;
    return client.transport === "udp" && Buffer.isBuffer(r.reply) ? this.rateLimit(client, r.reply) : r.reply;
  }

  /**
   * Adds an answer, evicting the oldest entry that was not used since it was last looked at, so
   * a flood of one-off names (random-subdomain queries) cannot push the hot answers out.
   */
  private remember(key: number, buf: Buffer, qEnd: number, limit: number, ednsBits: number): void {
    while (this.cached >= this.maxCache && this.orderHead < this.order.length) {
      const e = this.order[this.orderHead++]!;
      if (e.hit) {
        e.hit = false;
        this.order.push(e);
      } else this.forget(e);
    }
    if (this.orderHead > 4096 && this.orderHead * 2 > this.order.length) {
      this.order = this.order.slice(this.orderHead);
      this.orderHead = 0;
    }
    const e: CacheEntry = { key, buf, qEnd, limit, ednsBits, hit: false, next: this.cache.get(key) ?? null };
    this.cache.set(key, e);
    this.cached++;
    this.order.push(e);
  }

  private forget(e: CacheEntry): void {
    const head = this.cache.get(e.key);
    if (head === e) {
      if (e.next) this.cache.set(e.key, e.next);
      else this.cache.delete(e.key);
    } else {
      let p: CacheEntry | null | undefined = head;
      while (p && p.next !== e) p = p.next;
      if (!p) return;
      p.next = e.next;
    }
    this.cached--;
  }

  /** A cached answer made this query's own: ID, name spelling (when it differs), RD, CD and RA. */
  private patch(template: Buffer, query: Buffer, qEnd: number, respell: boolean, address: string): Buffer {
    const out = Buffer.allocUnsafe(template.length);
    out.set(template);
    out[0] = query[0]!;
    out[1] = query[1]!;
    out[2] = (template[2]! & 0xfe) | (query[2]! & 0x01);
    out[3] = (template[3]! & 0x6f) | (this.recursionFor(address) ? 0x80 : 0) | (query[3]! & 0x10);
    if (respell) for (let i = 12; i < qEnd - 4; i++) out[i] = query[i]!;
    return out;
  }

  private rateLimit(client: Client, reply: Buffer | null): Buffer | null {
    if (!reply || !this.rrl.enabled || this.trusted(client.address)) return reply;
    const d = this.rrl.check(client.address);
    if (d === "send") return reply;
    if (d === "drop") {
      this.c[RATE_LIMITED]!++;
      return null;
    }
    this.c[SLIPPED]!++;
    return slip(reply);
  }

  private process(msg: Buffer, client: Client): { reply: Reply | Promise<Reply>; cacheable: boolean } {
    const p = parseMessage(msg);
    if (p.kind === "drop") {
      this.c[DROPPED]!++;
      return { reply: null, cacheable: false };
    }
    if (p.kind === "response") {
      if (client.transport === "udp") this.opts.onResponse?.(msg, { address: unmapV4(client.address), port: client.port });
      return { reply: null, cacheable: false };
    }
    if (p.kind === "formerr") {
      this.c[FORMERR]!++;
      this.opts.log.debug({ client: client.address, reason: p.reason }, "malformed message");
      return { reply: errorResponse(p.id, p.flags2, RCODE.FORMERR, p.question), cacheable: false };
    }
    return this.query(p.query, msg, client);
  }

  private query(q: Query, msg: Buffer, client: Client): { reply: Reply | Promise<Reply>; cacheable: boolean } {
    const ra = this.recursionFor(client.address);
    const base: Omit<ResponseSpec, "rcode"> = {
      id: q.id,
      opcode: q.opcode,
      aa: false,
      rd: q.rd,
      ra,
      cd: q.cd,
      question: q.question,
      edns: q.edns ? { dnssecOk: q.edns.dnssecOk } : null,
      limit: 65535,
    };
    const fail = (rcode: number) => {
      if (rcode === RCODE.REFUSED) this.c[REFUSED]!++;
      if (rcode === RCODE.FORMERR) this.c[FORMERR]!++;
      return { reply: encodeResponse({ ...base, rcode }), cacheable: false };
    };
    if (q.edns && q.edns.version !== 0) return fail(RCODE.BADVERS);
    if (q.opcode === OPCODE.NOTIFY) return fail(RCODE.REFUSED);
    if (q.opcode !== OPCODE.QUERY) return fail(RCODE.NOTIMP);
    if (!q.question || q.qdcount !== 1) return fail(RCODE.FORMERR);
    const { name, type } = q.question;
    if (type === TYPE.OPT || type === TYPE.TSIG || type === TYPE.TKEY || type === 0) return fail(RCODE.FORMERR);
    if (type === TYPE.MAILA || type === TYPE.MAILB) return fail(RCODE.NOTIMP);
    if (q.question.class !== CLASS_IN && q.question.class !== CLASS_ANY) return fail(RCODE.REFUSED);
    if (type === TYPE.AXFR || type === TYPE.IXFR) return { reply: this.transfer(q, client, base, fail), cacheable: false };

    const udp = client.transport === "udp";
    const r = lookup(this.zones, name, type, { minimalAny: udp });
    if (!r) {
      if (!ra) return fail(RCODE.REFUSED);
      this.c[FORWARDED]!++;
      return { reply: this.forward(msg, client, base), cacheable: false };
    }
    const reply = encodeResponse({
      ...base,
      aa: r.aa,
      rcode: r.rcode,
      answer: r.answer,
      authority: r.authority,
      additional: r.additional,
      limit: udp ? udpLimit(q.edns) : 65535,
    });
    return { reply, cacheable: true };
  }

  private async forward(msg: Buffer, client: Client, base: Omit<ResponseSpec, "rcode">): Promise<Reply> {
    const reply = await this.opts.forwarder.forward(msg, client.transport === "tcp");
    if (!reply) return encodeResponse({ ...base, rcode: RCODE.SERVFAIL });
    reply[2] = reply[2]! & ~0x04; // not authoritative: we only relay
    reply[3] = reply[3]! | 0x80; // recursion available
    return reply;
  }

  /**
   * AXFR and IXFR (RFC 5936, RFC 1995), only for the secondaries' addresses: REFUSED for anyone
   * else before anything about the zone is revealed. For a name that is not one of our apexes,
   * NOTAUTH. Over UDP an AXFR is FORMERR (as BIND) and an IXFR gets the SOA alone (RFC 1995 §2).
   * Over TCP an IXFR from a secondary that is current gets the SOA alone; otherwise both get the
   * whole zone (an AXFR-style IXFR answer, which RFC 1995 §4 allows).
   */
  private transfer(q: Query, client: Client, base: Omit<ResponseSpec, "rcode">, fail: (rcode: number) => { reply: Reply }): Reply {
    const question = q.question!;
    if (!this.secondaryAddrs.has(unmapV4(client.address))) {
      this.opts.log.info({ client: client.address, zone: question.name }, "zone transfer refused");
      return fail(RCODE.REFUSED).reply;
    }
    const z = this.zones.get(question.name);
    if (!z) return fail(RCODE.NOTAUTH).reply;
    const soaOnly = () => encodeResponse({ ...base, aa: true, rcode: RCODE.NOERROR, answer: [z.soa] });
    if (client.transport === "udp") return question.type === TYPE.IXFR ? soaOnly() : fail(RCODE.FORMERR).reply;
    if (question.type === TYPE.IXFR) {
      const serial = q.authoritySerial;
      if (serial !== null && !serialGreater(z.soa.data.serial, serial)) return soaOnly();
    }
    this.c[TRANSFERS]!++;
    this.opts.log.info({ client: client.address, zone: z.origin, serial: z.soa.data.serial }, "zone transfer");
    return encodeTransfer({ ...base, aa: true }, transferRecords(z));
  }
}

/** The UDP payload we may fill: 512 without EDNS, else the client's size within [512, 1232]. */
export function udpLimit(edns: { udpSize: number } | null): number {
  if (!edns) return MIN_UDP_PAYLOAD;
  return Math.max(MIN_UDP_PAYLOAD, Math.min(edns.udpSize, MAX_UDP_PAYLOAD));
}

/** The answer cache's key: the question's hash with the payload limit and the EDNS/DO bits folded in. */
function cacheKey(questionHash: number, limit: number, ednsBits: number): number {
  let h = Math.imul(questionHash ^ (limit & 0xff), 0x01000193);
  h = Math.imul(h ^ (limit >>> 8), 0x01000193);
  return Math.imul(h ^ ednsBits, 0x01000193);
}

/** The rate limiter's "slip": header and question only, TC set, so the client retries over TCP. */
function slip(reply: Buffer): Buffer {
  let end = 12;
  if (reply.readUInt16BE(4) >= 1) {
    while (end < reply.length && reply[end] !== 0) end += reply[end]! + 1;
    end += 5;
  }
  const out = Buffer.from(reply.subarray(0, Math.min(end, reply.length)));
  out[2] = out[2]! | 0x02;
  out.writeUInt16BE(out.length > 12 ? 1 : 0, 4);
  out.fill(0, 6, 12);
  return out;
}
