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
 * Hot path: authoritative UDP answers are cached encoded, keyed on the lower-cased question, the
 * payload limit and the EDNS/DO bits. A cached answer is copied and patched (ID, the query's own
 * spelling of the name, RD, CD, RA) without decoding or encoding anything. Only queries that the
 * strict `fastParse` reads (one question, no records but an optional well-formed OPT) take it; all
 * others go through the full parser first. The cache is emptied when the zones change.
 */
import type { Logger } from "pino";
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
  type FastQuery,
  fastParse,
  MAX_UDP_PAYLOAD,
  MIN_UDP_PAYLOAD,
  OPCODE,
  parseMessage,
  type Query,
  queryFromFast,
  RCODE,
  type ResponseSpec,
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

export interface EngineOptions {
  log: Logger;
  trustedNetworks: readonly string[];
  /** Secondaries: allowed to transfer (by address). */
  secondaries: readonly HostPort[];
  forwarder: Forwarder;
  /** Responses per second per client prefix; 0 = off. */
  rateLimit: number;
  /** Responses (QR=1) that reached a server socket: NOTIFY acknowledgements. */
  onResponse?: (msg: Buffer, from: HostPort) => void;
  cacheEntries?: number;
}

export interface EngineStats {
  queries: number;
  cacheHits: number;
  formerr: number;
  dropped: number;
  rateLimited: number;
  slipped: number;
  refused: number;
  forwarded: number;
  transfers: number;
}

/** RFC 1982 serial comparison: is `a` newer than `b`? */
export function serialGreater(a: number, b: number): boolean {
  return a !== b && ((a > b && a - b < 2 ** 31) || (a < b && b - a > 2 ** 31));
}

export class Engine {
  zones: ZoneSet;
  readonly stats: EngineStats = {
    queries: 0,
    cacheHits: 0,
    formerr: 0,
    dropped: 0,
    rateLimited: 0,
    slipped: 0,
    refused: 0,
    forwarded: 0,
    transfers: 0,
  };
  /** Encoded answers; `hit` gives an entry a second chance at eviction (CLOCK). */
  private cache = new Map<string, { buf: Buffer; hit: boolean }>();
  /** Insertion order for eviction (a queue over an array; Map iteration from the front gets slow). */
  private order: string[] = [];
  /** Keys that missed once: the cache's doorkeeper. */
  private seenOnce = new Set<string>();
  private orderHead = 0;
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
    this.rrl = new RateLimiter(opts.rateLimit);
    this.isTrustedNet = networkMatcher(opts.trustedNetworks);
    this.secondaryAddrs = new Set(opts.secondaries.map((s) => unmapV4(s.address)));
  }

  setZones(zones: Zone[]): void {
    this.zones = new ZoneSet(zones);
    this.cache.clear();
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
    this.stats.queries++;
    if (client.transport === "udp") {
      const fq = fastParse(msg);
      if (fq && (!fq.edns || fq.edns.version === 0)) {
        const key = cacheKey(fq, udpLimit(fq.edns));
        const hit = this.cache.get(key);
        if (hit) {
          this.stats.cacheHits++;
          hit.hit = true;
          return this.rateLimit(client, this.patch(hit.buf, msg, fq, client.address));
        }
        const fastQuery = queryFromFast(msg, fq);
        const r = fastQuery ? this.query(fastQuery, msg, client) : this.process(msg, client);
        if (r.cacheable && Buffer.isBuffer(r.reply)) {
          // Admit an answer on its second miss only: one-off names (random-subdomain floods)
          // never displace anything and cost no cache churn.
          if (this.seenOnce.has(key)) this.remember(key, r.reply);
          else {
            if (this.seenOnce.size >= this.maxCache) this.seenOnce.clear();
            this.seenOnce.add(key);
          }
        }
        return r.reply instanceof Promise ? r.reply : this.rateLimit(client, r.reply as Buffer | null);
      }
    }
    const r = this.process(msg, client);
    if (r.reply instanceof Promise) return r.reply;
    return client.transport === "udp" && Buffer.isBuffer(r.reply) ? this.rateLimit(client, r.reply) : r.reply;
  }

  /**
   * Adds an answer, evicting the oldest entry that was not used since it was last looked at, so
   * a flood of one-off names (random-subdomain queries) cannot push the hot answers out.
   */
  private remember(key: string, buf: Buffer): void {
    while (this.cache.size >= this.maxCache && this.orderHead < this.order.length) {
      const k = this.order[this.orderHead++]!;
      const e = this.cache.get(k);
      if (!e) continue;
      if (e.hit) {
        e.hit = false;
        this.order.push(k);
      } else this.cache.delete(k);
    }
    if (this.orderHead > 4096 && this.orderHead * 2 > this.order.length) {
      this.order = this.order.slice(this.orderHead);
      this.orderHead = 0;
    }
    this.cache.set(key, { buf, hit: false });
    this.order.push(key);
  }

  /** A cached answer made this query's own: ID, name spelling, RD, CD and RA. */
  private patch(template: Buffer, query: Buffer, fq: FastQuery, address: string): Buffer {
    const out = Buffer.allocUnsafe(template.length);
    template.copy(out);
    out[0] = query[0]!;
    out[1] = query[1]!;
    out[2] = (template[2]! & 0xfe) | (query[2]! & 0x01);
    out[3] = (template[3]! & 0x6f) | (this.recursionFor(address) ? 0x80 : 0) | (query[3]! & 0x10);
    query.copy(out, 12, 12, fq.qEnd - 4);
    return out;
  }

  private rateLimit(client: Client, reply: Buffer | null): Buffer | null {
    if (!reply || !this.rrl.enabled || this.trusted(client.address)) return reply;
    const d = this.rrl.check(client.address);
    if (d === "send") return reply;
    if (d === "drop") {
      this.stats.rateLimited++;
      return null;
    }
    this.stats.slipped++;
    return slip(reply);
  }

  private process(msg: Buffer, client: Client): { reply: Reply | Promise<Reply>; cacheable: boolean } {
    const p = parseMessage(msg);
    if (p.kind === "drop") {
      this.stats.dropped++;
      return { reply: null, cacheable: false };
    }
    if (p.kind === "response") {
      if (client.transport === "udp") this.opts.onResponse?.(msg, { address: unmapV4(client.address), port: client.port });
      return { reply: null, cacheable: false };
    }
    if (p.kind === "formerr") {
      this.stats.formerr++;
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
      if (rcode === RCODE.REFUSED) this.stats.refused++;
      if (rcode === RCODE.FORMERR) this.stats.formerr++;
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
      this.stats.forwarded++;
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
    this.stats.transfers++;
    this.opts.log.info({ client: client.address, zone: z.origin, serial: z.soa.data.serial }, "zone transfer");
    return encodeTransfer({ ...base, aa: true }, transferRecords(z));
  }
}

/** The UDP payload we may fill: 512 without EDNS, else the client's size within [512, 1232]. */
export function udpLimit(edns: { udpSize: number } | null): number {
  if (!edns) return MIN_UDP_PAYLOAD;
  return Math.max(MIN_UDP_PAYLOAD, Math.min(edns.udpSize, MAX_UDP_PAYLOAD));
}

function cacheKey(fq: FastQuery, limit: number): string {
  return `${fq.key}|${limit}|${fq.edns ? (fq.edns.dnssecOk ? 2 : 1) : 0}`;
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
