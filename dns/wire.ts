/**
 * The wire layer: checking and decoding incoming messages, and encoding responses.
 *
 * Decoding uses `dns-packet` (inside try/catch, after sanity checks on the counts). Encoding uses
 * dns-packet's RDATA encoders for A, AAAA, TXT and CAA, and our own writer for names, because
 * dns-packet does not compress: owner names and the names inside NS, CNAME, PTR, MX and SOA RDATA
 * are compressed (RFC 1035 §4.1.4; RFC 3597 §4 lists the types that may be), SRV targets are not
 * (RFC 2782). Nothing in here does I/O.
 */
import * as dnsPacket from "dns-packet";
import { readUncompressedName } from "./names";
import type { ZoneRecord } from "./zone";

export const TYPE = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  HINFO: 13,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  OPT: 41,
  TKEY: 249,
  TSIG: 250,
  IXFR: 251,
  AXFR: 252,
  MAILB: 253,
  MAILA: 254,
  ANY: 255,
  CAA: 257,
} as const;
export const CLASS_IN = 1;
export const CLASS_ANY = 255;

export const RCODE = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
  NOTAUTH: 9,
  /** Extended (needs EDNS): 16 = OPT extended-rcode 1, header rcode 0. */
  BADVERS: 16,
} as const;

export const OPCODE = { QUERY: 0, IQUERY: 1, STATUS: 2, NOTIFY: 4, UPDATE: 5 } as const;

/** The UDP payload size we advertise and the most we send (the DNS flag day 2020 value, as BIND). */
export const MAX_UDP_PAYLOAD = 1232;
/** RFC 1035 §4.2.1 limit without EDNS, and RFC 6891 §6.2.5's floor for smaller advertised sizes. */
export const MIN_UDP_PAYLOAD = 512;

const HEADER = 12;
const RR_FIXED = 10; // type, class, ttl, rdlength

export interface Edns {
  udpSize: number;
  version: number;
  dnssecOk: boolean;
}

export interface Question {
  /** Lower-case presentation form, escaped (see names.ts). */
  name: string;
  type: number;
  class: number;
  /** The question as it arrived (name in its original case, type, class): echoed in the response. */
  wire: Buffer;
}

export interface Query {
  id: number;
  opcode: number;
  /** Header byte 2 and 3 as received. */
  flags2: number;
  flags3: number;
  rd: boolean;
  cd: boolean;
  /** QDCOUNT as decoded. */
  qdcount: number;
  question: Question | null;
  edns: Edns | null;
  /** The serial of the SOA in the authority section (an IXFR request's current version). */
  authoritySerial: number | null;
}

export type Parsed =
  /** Too short to answer, or not worth answering. */
  | { kind: "drop"; reason: string }
  /** QR=1: a response (NOTIFY answers come back this way). */
  | { kind: "response"; id: number; opcode: number; packet: Buffer }
  /** Malformed: answer FORMERR with this header. */
  | { kind: "formerr"; id: number; opcode: number; flags2: number; reason: string; question: Question | null }
  | { kind: "query"; query: Query };

type CodecInternals = {
  decode: ((buf: Buffer) => dnsPacket.DecodedPacket) & { bytes: number };
  record(type: string): { encode(data: unknown, buf?: Buffer, offset?: number): Buffer };
};
const codec = dnsPacket as unknown as CodecInternals;

/** Reads the one question at offset 12 without following pointers; null if it is not valid. */
export function readQuestion(buf: Buffer, offset = HEADER): { question: Question; end: number } | null {
  const n = readUncompressedName(buf, offset);
  if (!n || n.end + 4 > buf.length) return null;
  return {
    question: {
      name: n.name,
      type: buf.readUInt16BE(n.end),
      class: buf.readUInt16BE(n.end + 2),
      wire: buf.subarray(offset, n.end + 4),
    },
    end: n.end + 4,
  };
}

/**
 * Checks and decodes one message. Never throws: every failure becomes `drop` or `formerr`.
 * FORMERR covers: counts that cannot fit the message, anything dns-packet cannot decode
 * (truncation, pointer loops or forward pointers, labels over 63 octets, names over 255),
 * trailing bytes, a compressed or invalid question name, more than one OPT or an OPT outside the
 * additional section or not at the root (RFC 6891 §6.1.1).
 */
export function parseMessage(buf: Buffer): Parsed {
  if (buf.length < HEADER) return { kind: "drop", reason: "shorter than a header" };
  const id = buf.readUInt16BE(0);
  const flags2 = buf[2]!;
  const opcode = (flags2 >> 3) & 0xf;
  if (flags2 & 0x80) return { kind: "response", id, opcode, packet: buf };
  const qd = buf.readUInt16BE(4);
  const an = buf.readUInt16BE(6);
  const ns = buf.readUInt16BE(8);
  const ar = buf.readUInt16BE(10);
  const formerr = (reason: string, question: Question | null = null): Parsed => ({ kind: "formerr", id, opcode, flags2, reason, question });
  // A question is at least 5 octets (root name, type, class), a record at least 11.
  if (qd * 5 + (an + ns + ar) * 11 > buf.length - HEADER) return formerr("counts exceed the message");
  const q = qd >= 1 ? readQuestion(buf) : null;
  let packet: dnsPacket.DecodedPacket;
  try {
    packet = codec.decode(buf);
  } catch (err) {
    return formerr(`undecodable: ${(err as Error).message}`, q?.question ?? null);
  }
  if (codec.decode.bytes !== buf.length) return formerr("trailing bytes after the last record", q?.question ?? null);
  if (qd >= 1 && !q) return formerr("question name is compressed or invalid");
  let edns: Edns | null = null;
  for (const rr of [...(packet.answers ?? []), ...(packet.authorities ?? [])])
    if (rr.type === "OPT") return formerr("OPT outside the additional section", q?.question ?? null);
  for (const rr of packet.additionals ?? []) {
    if (rr.type !== "OPT") continue;
    if (edns) return formerr("more than one OPT record", q?.question ?? null);
    if (rr.name !== ".") return formerr("OPT owner is not the root", q?.question ?? null);
    const opt = rr as dnsPacket.OptAnswer & { ednsVersion?: number; flags?: number };
    edns = { udpSize: opt.udpPayloadSize ?? 512, version: opt.ednsVersion ?? 0, dnssecOk: ((opt.flags ?? 0) & 0x8000) !== 0 };
  }
  const soa = (packet.authorities ?? []).find((a) => a.type === "SOA") as { data?: { serial?: unknown } } | undefined;
  return {
    kind: "query",
    query: {
      id,
      opcode,
      flags2,
      flags3: buf[3]!,
      rd: (flags2 & 0x01) !== 0,
      cd: (buf[3]! & 0x10) !== 0,
      qdcount: (packet.questions ?? []).length,
      question: q?.question ?? null,
      edns,
      authoritySerial: typeof soa?.data?.serial === "number" ? soa.data.serial : null,
    },
  };
}

/**
 * The query a message that `scanQuery` accepted carries, without a second decode: scanQuery has
 * checked the whole message (one uncompressed question, nothing else but a well-formed OPT, no
 * trailing bytes). Null if the question name is not valid after all (then use parseMessage).
 */
export function queryFromScan(buf: Buffer, scan: QueryScan): Query | null {
  const q = readQuestion(buf);
  if (!q || q.end !== scan.qEnd) return null;
  return {
    id: buf.readUInt16BE(0),
    opcode: 0,
    flags2: buf[2]!,
    flags3: buf[3]!,
    rd: (buf[2]! & 0x01) !== 0,
    cd: (buf[3]! & 0x10) !== 0,
    qdcount: 1,
    question: q.question,
    edns: scan.udpSize < 0 ? null : { udpSize: scan.udpSize, version: scan.version, dnssecOk: scan.dnssecOk },
    authoritySerial: null,
  };
}

/**
 * What the fast path's strict reader found in a plain query. One object is reused for every
 * datagram (see `scanQuery`), so reading a query allocates nothing.
 */
export interface QueryScan {
  /** Offset just past the question. */
  qEnd: number;
  /**
   * FNV-1a of the question (name with its ASCII letters lower-cased, type, class): the answer
   * cache's key stem. Equal for spellings that differ in case only (RFC 4343).
   */
  hash: number;
  /** The OPT record's payload size, or -1 without one. */
  udpSize: number;
  /** EDNS version and the DO bit (0 and false without an OPT record). */
  version: number;
  dnssecOk: boolean;
}

export function newQueryScan(): QueryScan {
  return { qEnd: 0, hash: 0, udpSize: -1, version: 0, dnssecOk: false };
}

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/**
 * The fast path's strict reader: a plain query with exactly one question, no answer or authority
 * records and at most an OPT, with nothing left over. Fills `out` and returns true, or returns
 * false (then the full parser decides).
 */
export function scanQuery(buf: Buffer, out: QueryScan): boolean {
  const len = buf.length;
  if (len < HEADER + 5 || len > 512) return false;
  if ((buf[2]! & 0xf8) !== 0) return false; // QR=0, opcode QUERY
  if (buf[4] !== 0 || buf[5] !== 1 || buf[6] !== 0 || buf[7] !== 0 || buf[8] !== 0 || buf[9] !== 0 || buf[10] !== 0) return false;
  const ar = buf[11]!;
  if (ar > 1) return false;
  let pos = HEADER;
  let h = FNV_OFFSET;
  for (;;) {
    if (pos >= len) return false;
    const l = buf[pos]!;
    if (l === 0) break;
    if (l > 63 || pos + 1 + l >= len || pos - HEADER + l + 2 > 255) return false;
    // Length octets are below 64, so folding only A-Z leaves them alone.
    h = Math.imul(h ^ l, FNV_PRIME);
    const end = pos + 1 + l;
    for (let i = pos + 1; i < end; i++) {
      const c = buf[i]!;
      h = Math.imul(h ^ (c >= 0x41 && c <= 0x5a ? c | 0x20 : c), FNV_PRIME);
    }
    pos = end;
  }
  pos++;
  if (pos + 4 > len) return false;
  const qEnd = pos + 4;
  for (let i = pos; i < qEnd; i++) h = Math.imul(h ^ buf[i]!, FNV_PRIME);
  out.qEnd = qEnd;
  out.hash = h;
  if (ar === 0) {
    out.udpSize = -1;
    out.version = 0;
    out.dnssecOk = false;
    return qEnd === len;
  }
  // OPT: root name, type 41, class = payload size, ttl = ext-rcode/version/flags, rdlength, options.
  if (qEnd + 11 > len || buf[qEnd] !== 0 || buf.readUInt16BE(qEnd + 1) !== TYPE.OPT) return false;
  const rdlen = buf.readUInt16BE(qEnd + 9);
  if (qEnd + 11 + rdlen !== len) return false;
  // Options must be well-formed too (code, length, data), so a bad one takes the full parser.
  let o = qEnd + 11;
  while (o < len) {
    if (o + 4 > len) return false;
    o += 4 + buf.readUInt16BE(o + 2);
  }
  if (o !== len) return false;
  out.udpSize = buf.readUInt16BE(qEnd + 3);
  out.version = buf[qEnd + 6]!;
  out.dnssecOk = (buf[qEnd + 7]! & 0x80) !== 0;
  return true;
}

/**
 * Whether two messages carry the same question at offset 12 (each ending at `end`), the name's
 * ASCII letters compared without case: 0 if not, 1 if byte for byte, 2 if only the case differs.
 */
export function sameQuestion(a: Buffer, b: Buffer, end: number): 0 | 1 | 2 {
  let r: 1 | 2 = 1;
  const nameEnd = end - 4;
  for (let i = HEADER; i < nameEnd; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x === y) continue;
    if ((x | 0x20) !== (y | 0x20) || (x | 0x20) < 0x61 || (x | 0x20) > 0x7a) return 0;
    r = 2;
  }
  for (let i = nameEnd; i < end; i++) if (a[i] !== b[i]) return 0;
  return r;
}

// ---------------------------------------------------------------------------------------------
// Encoding.

/** A record to encode: zone data, possibly with a synthesized owner (wildcards). */
export type RR = ZoneRecord;

const fixedRdata = new WeakMap<object, Buffer>();

/** RDATA (with its length prefix) for the types without names to compress, via dns-packet. */
function encodeFixedRdata(rr: RR): Buffer {
  const cached = fixedRdata.get(rr);
  if (cached) return cached;
  let out: Buffer;
  switch (rr.type) {
    case "A":
      out = codec.record("A").encode(rr.data);
      break;
    case "AAAA":
      out = codec.record("AAAA").encode(rr.data);
      break;
    case "TXT":
      // dns-packet turns strings into Buffers in place: give it its own array.
      out = codec.record("TXT").encode(rr.data.map((s) => Buffer.from(s, "utf8")));
      break;
    case "CAA":
      out = codec.record("CAA").encode({ flags: rr.data.flags, tag: rr.data.tag, value: rr.data.value });
      break;
    default:
      throw new Error(`no fixed encoding for ${rr.type}`);
  }
  fixedRdata.set(rr, out);
  return out;
}

const typeCode: Record<RR["type"], number> = {
  A: TYPE.A,
  AAAA: TYPE.AAAA,
  NS: TYPE.NS,
  CNAME: TYPE.CNAME,
  SOA: TYPE.SOA,
  PTR: TYPE.PTR,
  MX: TYPE.MX,
  TXT: TYPE.TXT,
  SRV: TYPE.SRV,
  CAA: TYPE.CAA,
};
export function typeNumber(type: RR["type"]): number {
  return typeCode[type];
}

/** Bytes of one presentation-form label (`\DDD` escapes decoded). */
function labelBytes(label: string): Buffer {
  if (!label.includes("\\")) return Buffer.from(label, "latin1");
  const out: number[] = [];
  for (let i = 0; i < label.length; i++) {
    if (label[i] === "\\" && /^\d{3}$/.test(label.slice(i + 1, i + 4))) {
      out.push(Number(label.slice(i + 1, i + 4)));
      i += 3;
    } else out.push(label.charCodeAt(i) & 0xff);
  }
  return Buffer.from(out);
}

class Overflow extends Error {}

/**
 * Writes one message into a scratch buffer with name compression. `limit` is the size the
 * message may reach; writing past it throws Overflow, and `mark`/`rewind` undo whole RRsets.
 */
export class MessageWriter {
  private readonly buf: Buffer;
  off = 0;
  private names = new Map<string, number>();
  private added: string[] = [];

  constructor(
    private limit: number,
    scratch?: Buffer,
  ) {
    this.buf = scratch && scratch.length >= 65535 ? scratch : Buffer.allocUnsafe(65535);
    if (this.limit > 65535) this.limit = 65535;
  }

  setLimit(limit: number): void {
    this.limit = Math.min(limit, 65535);
  }

  private room(n: number): void {
    if (this.off + n > this.limit) throw new Overflow();
  }

  u8(v: number): void {
    this.room(1);
    this.buf[this.off++] = v;
  }
  u16(v: number): void {
    this.room(2);
    this.buf.writeUInt16BE(v, this.off);
    this.off += 2;
  }
  u32(v: number): void {
    this.room(4);
    this.buf.writeUInt32BE(v >>> 0, this.off);
    this.off += 4;
  }
  bytes(b: Buffer): void {
    this.room(b.length);
    b.copy(this.buf, this.off);
    this.off += b.length;
  }
  patch16(at: number, v: number): void {
    this.buf.writeUInt16BE(v, at);
  }

  private remember(suffix: string, at: number): void {
    if (at < 0x4000 && !this.names.has(suffix)) {
      this.names.set(suffix, at);
      this.added.push(suffix);
    }
  }

  /** Writes a name, compressed against earlier names unless `compress` is false. */
  name(name: string, compress = true): void {
    let start = 0;
    while (start < name.length) {
      const suffix = start === 0 ? name : name.slice(start);
      const ptr = compress ? this.names.get(suffix) : undefined;
      if (ptr !== undefined) {
        this.u16(0xc000 | ptr);
        return;
      }
      let dot = name.indexOf(".", start);
      if (dot < 0) dot = name.length;
      const label = name.slice(start, dot);
      const at = this.off;
      if (label.includes("\\")) {
        const lb = labelBytes(label);
        this.u8(lb.length);
        this.bytes(lb);
      } else {
        this.room(1 + label.length);
        this.buf[this.off++] = label.length;
        this.off += this.buf.write(label, this.off, "latin1");
      }
      this.remember(suffix, at);
      start = dot + 1;
    }
    this.u8(0);
  }

  /** Copies the question as received and registers its name for compression. */
  question(q: Question): void {
    const at = this.off;
    this.bytes(q.wire);
    let pos = at;
    let start = 0;
    while (start < q.name.length) {
      this.remember(start === 0 ? q.name : q.name.slice(start), pos);
      pos += 1 + this.buf[pos]!;
      const dot = q.name.indexOf(".", start);
      start = dot < 0 ? q.name.length : dot + 1;
    }
  }

  rr(rr: RR): void {
    this.name(rr.name);
    this.room(RR_FIXED);
    this.u16(typeCode[rr.type]);
    this.u16(CLASS_IN);
    this.u32(rr.ttl);
    switch (rr.type) {
      case "NS":
      case "CNAME":
      case "PTR": {
        const at = this.off;
        this.u16(0);
        this.name(rr.data);
        this.patch16(at, this.off - at - 2);
        return;
      }
      case "MX": {
        const at = this.off;
        this.u16(0);
        this.u16(rr.data.preference);
        this.name(rr.data.exchange);
        this.patch16(at, this.off - at - 2);
        return;
      }
      case "SOA": {
        const at = this.off;
        this.u16(0);
        this.name(rr.data.mname);
        this.name(rr.data.rname);
        this.u32(rr.data.serial);
        this.u32(rr.data.refresh);
        this.u32(rr.data.retry);
        this.u32(rr.data.expire);
        this.u32(rr.data.minimum);
        this.patch16(at, this.off - at - 2);
        return;
      }
      case "SRV": {
        const at = this.off;
        this.u16(0);
        this.u16(rr.data.priority);
        this.u16(rr.data.weight);
        this.u16(rr.data.port);
        this.name(rr.data.target, false);
        this.patch16(at, this.off - at - 2);
        return;
      }
      default:
        this.bytes(encodeFixedRdata(rr));
    }
  }

  opt(udpSize: number, extendedRcode: number, dnssecOk: boolean): void {
    this.u8(0);
    this.u16(TYPE.OPT);
    this.u16(udpSize);
    this.u8(extendedRcode);
    this.u8(0); // version
    this.u16(dnssecOk ? 0x8000 : 0);
    this.u16(0);
  }

  mark(): { off: number; added: number } {
    return { off: this.off, added: this.added.length };
  }
  rewind(m: { off: number; added: number }): void {
    this.off = m.off;
    while (this.added.length > m.added) this.names.delete(this.added.pop()!);
  }

  /** Tries `fn`; on overflow, undoes what it wrote and returns false. */
  attempt(fn: () => void): boolean {
    const m = this.mark();
    try {
      fn();
      return true;
    } catch (err) {
      if (!(err instanceof Overflow)) throw err;
      this.rewind(m);
      return false;
    }
  }

  result(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.off));
  }
}

export interface ResponseSpec {
  id: number;
  opcode: number;
  aa: boolean;
  rd: boolean;
  ra: boolean;
  cd: boolean;
  /** Full rcode; values over 15 need `edns` (RFC 6891 §6.1.3). */
  rcode: number;
  question: Question | null;
  answer?: RR[];
  authority?: RR[];
  additional?: RR[];
  /** Present when the query had an OPT: our OPT goes in the additional section. */
  edns?: { dnssecOk: boolean } | null;
  /** Largest message allowed (the UDP payload size, or 65535 over TCP). */
  limit: number;
}

let scratch: Buffer | undefined;

/** Groups consecutive records of one name and type, so truncation drops whole RRsets. */
function rrsets(rrs: RR[]): RR[][] {
  const out: RR[][] = [];
  for (const r of rrs) {
    const last = out[out.length - 1];
    if (last && last[0]!.name === r.name && last[0]!.type === r.type) last.push(r);
    else out.push([r]);
  }
  return out;
}

/**
 * Encodes a response. If the answer or authority section does not fit, the message goes out with
 * TC set and only the question (and OPT), as BIND does; additional records that do not fit are
 * left out without TC (RFC 2181 §9).
 */
export function encodeResponse(spec: ResponseSpec): Buffer {
  scratch ??= Buffer.allocUnsafe(65535);
  const optLen = spec.edns ? 11 : 0;
  const w = new MessageWriter(spec.limit - optLen, scratch);
  const header = (tc: boolean, counts: [number, number, number, number]) => {
    w.off = 0;
    w.u16(spec.id);
    w.u8(0x80 | ((spec.opcode & 0xf) << 3) | (spec.aa ? 0x04 : 0) | (tc ? 0x02 : 0) | (spec.rd ? 0x01 : 0));
    w.u8((spec.ra ? 0x80 : 0) | (spec.cd ? 0x10 : 0) | (spec.rcode & 0xf));
    for (const c of counts) w.u16(c);
  };
  const finish = (counts: [number, number, number, number]) => {
    const end = w.off;
    w.off = 4;
    for (const c of counts) w.u16(c);
    w.off = end;
    if (spec.edns) {
      w.setLimit(65535);
      w.opt(MAX_UDP_PAYLOAD, spec.rcode >> 4, spec.edns.dnssecOk);
    }
    return w.result();
  };
  const qd = spec.question ? 1 : 0;
  const ar0 = spec.edns ? 1 : 0;
  header(false, [qd, 0, 0, ar0]);
  if (spec.question) w.question(spec.question);
  const afterQuestion = w.mark();
  const answer = spec.answer ?? [];
  const authority = spec.authority ?? [];
  const fits = w.attempt(() => {
    for (const r of answer) w.rr(r);
    for (const r of authority) w.rr(r);
  });
  if (!fits) {
    w.rewind(afterQuestion);
    const end = w.off;
    header(true, [qd, 0, 0, ar0]);
    w.off = end;
    return finish([qd, 0, 0, ar0]);
  }
  let ar = 0;
  for (const set of rrsets(spec.additional ?? [])) {
    if (
      w.attempt(() => {
        for (const r of set) w.rr(r);
      })
    )
      ar += set.length;
    else break;
  }
  return finish([qd, answer.length, authority.length, ar + ar0]);
}

/**
 * Encodes a zone transfer (RFC 5936): the SOA, every other record, the SOA again, over as many
 * messages as needed (each at most `maxMessage` octets, compressed on its own). The question
 * goes in the first message only (§2.2.1 allows that).
 */
export function encodeTransfer(
  spec: Omit<ResponseSpec, "answer" | "authority" | "additional" | "limit" | "rcode">,
  records: RR[],
  maxMessage = 16384,
): Buffer[] {
  const out: Buffer[] = [];
  let i = 0;
  let first = true;
  while (i < records.length || first) {
    const w = new MessageWriter(maxMessage - (spec.edns ? 11 : 0));
    w.u16(spec.id);
    w.u8(0x80 | ((spec.opcode & 0xf) << 3) | (spec.aa ? 0x04 : 0) | (spec.rd ? 0x01 : 0));
    w.u8((spec.ra ? 0x80 : 0) | (spec.cd ? 0x10 : 0));
    const qd = first && spec.question ? 1 : 0;
    for (const c of [qd, 0, 0, 0]) w.u16(c);
    if (qd) w.question(spec.question!);
    let n = 0;
    while (i < records.length) {
      const rec = records[i]!;
      if (!w.attempt(() => w.rr(rec))) {
        if (n === 0) throw new Error(`record ${rec.name} ${rec.type} does not fit in a message`);
        break;
      }
      n++;
      i++;
    }
    const end = w.off;
    w.off = 4;
    w.u16(qd);
    w.u16(n);
    w.u16(0);
    w.u16(spec.edns ? 1 : 0);
    w.off = end;
    if (spec.edns) {
      w.setLimit(65535);
      w.opt(MAX_UDP_PAYLOAD, 0, spec.edns.dnssecOk);
    }
    out.push(w.result());
    first = false;
  }
  return out;
}

/** A minimal answer to a message we could not fully read: header (and question when known). */
export function errorResponse(
  id: number,
  flags2: number,
  rcode: number,
  question: Question | null,
  edns: { dnssecOk: boolean } | null = null,
): Buffer {
  return encodeResponse({
    id,
    opcode: (flags2 >> 3) & 0xf,
    aa: false,
    rd: (flags2 & 0x01) !== 0,
    ra: false,
    cd: false,
    rcode,
    question,
    edns,
    limit: 65535,
  });
}
