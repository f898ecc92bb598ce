/**
 * Authoritative lookups (RFC 1034 §4.3.2), pure: zones in, sections out. No wire format here.
 *
 * - names are compared lower-case (queries arrive lower-cased by the wire layer);
 * - NXDOMAIN and NODATA carry the SOA in the authority section with the negative TTL
 *   min(SOA TTL, SOA minimum) (RFC 2308 §3);
 * - empty non-terminals (`_tcp.lx.com`) exist: NODATA, not NXDOMAIN (RFC 8020);
 * - CNAME chains are followed inside the zone, at most 8 links, loops stopped; the rcode is that of
 *   the last name (RFC 6604);
 * - wildcards (`*.x` from dns.records) are expanded as RFC 4592 says;
 * - NS records below the apex are delegations: a referral, without AA, with glue;
 * - ANY gets one RRset when `minimalAny` (UDP, RFC 8482 §4.1), every RRset otherwise (TCP);
 * - MX, SRV and NS targets we hold addresses for get them in the additional section (not for
 *   ANY); the NS set is not repeated in the authority section of positive answers. Together this
 *   is what BIND answers with `minimal-responses no-auth` (test/dns-bind.test.ts compares).
 */
import { isInZone, parentName } from "./names";
import { RCODE, type RR, TYPE, typeNumber } from "./wire";
import type { RecordType, Zone, ZoneRecord } from "./zone";

type Node = Map<RecordType, RR[]>;

export interface IndexedZone {
  zone: Zone;
  origin: string;
  soa: Extract<ZoneRecord, { type: "SOA" }>;
  /** The SOA as it goes in negative answers (TTL lowered to the negative TTL). */
  negativeSoa: RR;
  nodes: Map<string, Node>;
  /** Every name that exists: owners and their ancestors up to the origin (empty non-terminals). */
  names: Set<string>;
  /** Delegation points: owners of NS records below the apex. */
  cuts: Set<string>;
}

export class ZoneSet {
  readonly zones: IndexedZone[];

  constructor(zones: Zone[]) {
    this.zones = zones.map(index).sort((a, b) => b.origin.length - a.origin.length);
  }

  /** The zone that holds `name` (the longest origin), if any. */
  find(name: string): IndexedZone | undefined {
    for (const z of this.zones) if (isInZone(name, z.origin)) return z;
    return undefined;
  }

  get(origin: string): IndexedZone | undefined {
    return this.zones.find((z) => z.origin === origin);
  }
}

function index(zone: Zone): IndexedZone {
  const nodes = new Map<string, Node>();
  const names = new Set<string>();
  const cuts = new Set<string>();
  for (const r of zone.records) {
    let node = nodes.get(r.name);
    if (!node) nodes.set(r.name, (node = new Map()));
    const set = node.get(r.type);
    if (set) set.push(r);
    else node.set(r.type, [r]);
    for (let n = r.name; ; n = parentName(n)) {
      names.add(n);
      if (n === zone.origin || n === "") break;
    }
    if (r.type === "NS" && r.name !== zone.origin) cuts.add(r.name);
  }
  const soa = zone.records[0];
  if (soa?.type !== "SOA") throw new Error(`zone ${zone.origin} has no SOA first`);
  return {
    zone,
    origin: zone.origin,
    soa,
    negativeSoa: { ...soa, ttl: Math.min(soa.ttl, soa.data.minimum) },
    nodes,
    names,
    cuts,
  };
}

export interface LookupResult {
  rcode: number;
  aa: boolean;
  answer: RR[];
  authority: RR[];
  additional: RR[];
}

const TYPE_NAMES = new Map<number, RecordType>(
  (["A", "AAAA", "NS", "CNAME", "SOA", "PTR", "MX", "TXT", "SRV", "CAA"] as RecordType[]).map((t) => [typeNumber(t), t]),
);

/** The delegation point at or above `name` (below the apex), if any. */
function findCut(z: IndexedZone, name: string): string | null {
  if (z.cuts.size === 0) return null;
  let found: string | null = null;
  for (let n = name; n !== z.origin && n !== ""; n = parentName(n)) if (z.cuts.has(n)) found = n;
  return found; // the highest cut wins: everything under it belongs to the child
}

/** The closest encloser (RFC 4592 §3.3.1): the longest existing ancestor of `name`. */
function closestEncloser(z: IndexedZone, name: string): string {
  let n = parentName(name);
  while (n !== z.origin && !z.names.has(n)) n = parentName(n);
  return n;
}

function synth(set: RR[], owner: string): RR[] {
  return set[0]!.name === owner ? set : set.map((r) => ({ ...r, name: owner }) as RR);
}

const needsAdditional = (rr: RR) => rr.type === "MX" || rr.type === "SRV" || rr.type === "NS";

/** Address records we hold for `target`, for the additional section. */
function addressesFor(zs: ZoneSet, target: string): RR[] {
  // Glue below a delegation point is ours to give too (RFC 1034 §4.2.1).
  const node = zs.find(target)?.nodes.get(target);
  if (!node) return [];
  return [...(node.get("A") ?? []), ...(node.get("AAAA") ?? [])];
}

function withAdditional(zs: ZoneSet, r: LookupResult): LookupResult {
  if (!r.answer.some(needsAdditional) && !r.authority.some(needsAdditional)) return r;
  const targets: string[] = [];
  for (const rr of [...r.answer, ...r.authority]) {
    if (rr.type === "MX" && rr.data.exchange !== "") targets.push(rr.data.exchange);
    else if (rr.type === "SRV" && rr.data.target !== "") targets.push(rr.data.target);
    else if (rr.type === "NS") targets.push(rr.data);
  }
  const have = new Set(r.answer.filter((a) => a.type === "A" || a.type === "AAAA").map((a) => a.name));
  const done = new Set<string>();
  for (const t of targets) {
    if (done.has(t) || have.has(t)) continue;
    done.add(t);
    r.additional.push(...addressesFor(zs, t));
  }
  return r;
}

/**
 * Answers `qname`/`qtype` from our zones, or returns null when no zone of ours holds the name
 * (then recursion or REFUSED is the caller's decision).
 */
export function lookup(zs: ZoneSet, qname: string, qtype: number, opts: { minimalAny: boolean }): LookupResult | null {
  const zone = zs.find(qname);
  if (!zone) return null;
  const res: LookupResult = { rcode: RCODE.NOERROR, aa: true, answer: [], authority: [], additional: [] };
  const seen = new Set<string>();
  let name = qname;
  for (let hop = 0; ; hop++) {
    const cut = findCut(zone, name);
    if (cut) {
      if (res.answer.length === 0) {
        // Referral: the child's NS set, with glue we hold.
        res.aa = false;
        res.authority.push(...zone.nodes.get(cut)!.get("NS")!);
      }
      break;
    }
    let node = zone.nodes.get(name);
    if (!node && !zone.names.has(name)) {
      const wild = zone.nodes.get(`*.${closestEncloser(zone, name)}`);
      if (!wild) {
        res.rcode = RCODE.NXDOMAIN;
        res.authority.push(zone.negativeSoa);
        break;
      }
      node = wild;
    }
    if (!node) {
      res.authority.push(zone.negativeSoa); // empty non-terminal: NODATA
      break;
    }
    if (qtype === TYPE.ANY) {
      const sets = [...node.values()];
      for (const set of opts.minimalAny ? sets.slice(0, 1) : sets) res.answer.push(...synth(set, name));
      break;
    }
    const cname = node.get("CNAME");
    if (cname && qtype !== TYPE.CNAME) {
      res.answer.push(...synth(cname, name));
      seen.add(name);
      const target = cname[0]!.data as string;
      // Follow only inside this zone; a resolver follows the rest (and loops stop here).
      if (seen.has(target) || hop >= 8 || zs.find(target) !== zone) break;
      name = target;
      continue;
    }
    const t = TYPE_NAMES.get(qtype);
    const set = t ? node.get(t) : undefined;
    if (set) res.answer.push(...synth(set, name));
    else res.authority.push(zone.negativeSoa); // NODATA
    break;
  }
  // ANY gets no additional data (as BIND): it is the query type amplification abuses.
  return qtype === TYPE.ANY ? res : withAdditional(zs, res);
}

/** Every record of a zone in transfer order: SOA, the rest, SOA (RFC 5936 §2.2). */
export function transferRecords(z: IndexedZone): RR[] {
  return [z.soa, ...z.zone.records.slice(1), z.soa];
}
