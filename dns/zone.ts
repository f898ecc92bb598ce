/**
 * The zones mailstack serves, built from the stack config alone (no hand-written zone file).
 *
 * `buildZones` is pure: the same config (and serials) always gives the same records, as plain
 * data. The server, the Pulumi program and the tests all call it. `renderZone` writes a zone as a
 * BIND master file (RFC 1035 §5), which `named-checkzone` and a BIND primary accept.
 *
 * What the forward zone holds (all from config):
 * - SOA: `dns.nameserver`, `hostmaster.<domain>` (a system alias), serial (see serial.ts);
 * - NS `dns.nameserver`, with A (and AAAA) = publicAddress(6) when the name server is in the zone;
 * - A/AAAA for `hostname`, MX `domain` → `hostname` with `dns.mxPreference`;
 * - SPF TXT (`dns.spf`) at the domain, DMARC TXT `_dmarc` with `p=<dns.dmarcPolicy>`;
 * - RFC 6186 / RFC 8314 SRV records for submission(s), IMAP(S) and POP3(S). They carry the
 *   STANDARD public ports (587, 465, 143, 993, 110, 995), not `listen.*`: the listen ports are
 *   where the process binds (unprivileged ports in the dev stack, or behind the container's
 *   port mapping), while SRV tells clients on the internet where the service is published.
 *   A service switched off in `listen` (`false`) gets the RFC 6186 §4 "not offered" record
 *   (`0 0 0 .`);
 * - `dns.records` from the stack file.
 *
 * The reverse zone (`dns.reverseNetwork`, default the /24 around publicAddress) holds SOA, NS and
 * the PTR for publicAddress → hostname. With `publicAddress6` outside that network, a second
 * reverse zone for its /64 carries its PTR.
 */
import { createHash } from "node:crypto";
import { isIP } from "node:net";
import { ConfigError, type ConfigProblem, NAMESPACE } from "../config/errors";
import type { MailConfig } from "../config/schema";
import { cidrContains, parseCidr } from "../lib/cidr";
import { checkName, isInZone, normalizeName, reverseName, reverseZoneName } from "./names";

export type RecordType = "A" | "AAAA" | "NS" | "CNAME" | "SOA" | "PTR" | "MX" | "TXT" | "SRV" | "CAA";

export interface SoaData {
  mname: string;
  rname: string;
  serial: number;
  refresh: number;
  retry: number;
  expire: number;
  /** The negative-caching TTL (RFC 2308 §4). */
  minimum: number;
}
export interface MxData {
  preference: number;
  /** `""` is the root: a null MX (RFC 7505). */
  exchange: string;
}
export interface SrvData {
  priority: number;
  weight: number;
  port: number;
  /** `""` (`.`) means the service is not offered (RFC 2782, RFC 6186 §4). */
  target: string;
}
export interface CaaData {
  flags: number;
  tag: string;
  value: string;
}

interface Base<T extends RecordType, D> {
  /** Absolute, lower-case, no trailing dot. */
  name: string;
  type: T;
  ttl: number;
  data: D;
}
export type ZoneRecord =
  | Base<"A" | "AAAA" | "NS" | "CNAME" | "PTR", string>
  | Base<"SOA", SoaData>
  | Base<"MX", MxData>
  /** Character-strings, each at most 255 octets. */
  | Base<"TXT", string[]>
  | Base<"SRV", SrvData>
  | Base<"CAA", CaaData>;

export interface Zone {
  /** The zone apex, e.g. `lx.com` or `0.0.127.in-addr.arpa`. */
  origin: string;
  kind: "forward" | "reverse";
  /** Every record; the first is the SOA. RRsets are sets (no duplicates) with one TTL each. */
  records: ZoneRecord[];
}

/** SOA timers. NOTIFY makes refresh mostly moot; expire is the RFC 1912 suggestion (2-4 weeks). */
export const SOA_TIMERS = { refresh: 3600, retry: 900, expire: 1_209_600, negativeTtl: 300 } as const;

/** Standard ports published in SRV records (RFC 6186 §3, RFC 8314 §5.1). */
export const SRV_SERVICES = [
  { service: "_submission._tcp", endpoint: "submission", port: 587 },
  { service: "_submissions._tcp", endpoint: "smtps", port: 465 },
  { service: "_imap._tcp", endpoint: "imap", port: 143 },
  { service: "_imaps._tcp", endpoint: "imaps", port: 993 },
  { service: "_pop3._tcp", endpoint: "pop3", port: 110 },
  { service: "_pop3s._tcp", endpoint: "pop3s", port: 995 },
] as const;

export function soaOf(zone: Zone): Base<"SOA", SoaData> {
  const soa = zone.records[0];
  if (soa?.type !== "SOA") throw new Error(`zone ${zone.origin} does not start with its SOA`);
  return soa;
}

/** A copy of the zone with another SOA serial. */
export function withSerial(zone: Zone, serial: number): Zone {
  const soa = soaOf(zone);
  return { ...zone, records: [{ ...soa, data: { ...soa.data, serial } }, ...zone.records.slice(1)] };
}

/**
 * A hash of the zone's content without the serial: the server bumps the serial exactly when
 * this changes. Order-independent, so reordering `dns.records` is not a change.
 */
export function zoneHash(zone: Zone): string {
  const lines = zone.records.map((r) => JSON.stringify(r.type === "SOA" ? { ...r, data: { ...r.data, serial: 0 } } : r));
  lines.sort();
  return createHash("sha256").update(zone.origin).update("\n").update(lines.join("\n")).digest("hex");
}

/**
 * Builds the forward and reverse zones from the config. `serials` maps zone origins to their SOA
 * serial (the server keeps them, see serial.ts); a zone without one gets serial 1.
 * Throws `ConfigError` naming `mailstack:dns.records[i]...` for records that cannot be served.
 */
export function buildZones(config: MailConfig, serials: Readonly<Record<string, number>> = {}): Zone[] {
  const problems: ConfigProblem[] = [];
  const ttl = config.dns.ttl;
  const domain = normalizeName(config.domain);
  const hostname = normalizeName(config.hostname);
  const ns = normalizeName(config.dns.nameserver);
  const addrs = hostAddresses(config);

  const soa = (origin: string): ZoneRecord => ({
    name: origin,
    type: "SOA",
    ttl,
    data: {
      mname: ns,
      rname: `hostmaster.${domain}`,
      serial: serials[origin] ?? 1,
      refresh: SOA_TIMERS.refresh,
      retry: SOA_TIMERS.retry,
      expire: SOA_TIMERS.expire,
      minimum: Math.min(SOA_TIMERS.negativeTtl, ttl),
    },
  });

  // Forward zone.
  const fwd: ZoneRecord[] = [soa(domain), { name: domain, type: "NS", ttl, data: ns }];
  const addressRecords = (name: string) => {
    if (addrs.v4) fwd.push({ name, type: "A", ttl, data: addrs.v4 });
    if (addrs.v6) fwd.push({ name, type: "AAAA", ttl, data: addrs.v6 });
  };
  if (isInZone(ns, domain)) addressRecords(ns);
  fwd.push({ name: domain, type: "MX", ttl, data: { preference: config.dns.mxPreference, exchange: hostname } });
  if (config.dns.spf.trim() !== "") fwd.push({ name: domain, type: "TXT", ttl, data: splitTxt(config.dns.spf) });
  if (isInZone(hostname, domain)) addressRecords(hostname);
  fwd.push({ name: `_dmarc.${domain}`, type: "TXT", ttl, data: [`v=DMARC1; p=${config.dns.dmarcPolicy}`] });
  for (const s of SRV_SERVICES) {
    const on = config.listen[s.endpoint] !== null;
    fwd.push({
      name: `${s.service}.${domain}`,
      type: "SRV",
      ttl,
      data: on ? { priority: 0, weight: 1, port: s.port, target: hostname } : { priority: 0, weight: 0, port: 0, target: "" },
    });
  }

  // Reverse zone(s).
  const zones: Zone[] = [{ origin: domain, kind: "forward", records: fwd }];
  const reverse = (network: string, address: string) => {
    const origin = reverseZoneName(network);
    if (zones.some((z) => z.origin === origin)) {
      zones.find((z) => z.origin === origin)!.records.push({ name: reverseName(address), type: "PTR", ttl, data: hostname });
      return;
    }
    zones.push({
      origin,
      kind: "reverse",
      records: [soa(origin), { name: origin, type: "NS", ttl, data: ns }, { name: reverseName(address), type: "PTR", ttl, data: hostname }],
    });
  };
  const rn = parseCidr(config.dns.reverseNetwork);
  reverse(config.dns.reverseNetwork, config.publicAddress);
  if (config.publicAddress6 && config.publicAddress6 !== config.publicAddress) {
    if (rn && cidrContains(rn, config.publicAddress6)) reverse(config.dns.reverseNetwork, config.publicAddress6);
    else reverse(`${config.publicAddress6}/64`, config.publicAddress6);
  }

  // Extra records from the stack file.
  for (const [i, rec] of config.dns.records.entries()) {
    const path = (key?: string) => `${NAMESPACE}:dns.records[${i}]${key ? `.${key}` : ""}`;
    const before = problems.length;
    const owner = ownerName(rec.name, domain, zones);
    const why = checkName(owner, { wildcard: true });
    if (why) problems.push({ path: path("name"), message: `"${rec.name}" ${why}` });
    const zone = longestZone(zones, owner);
    if (!zone)
      problems.push({ path: path("name"), message: `"${rec.name}" is outside the zones ${zones.map((z) => z.origin).join(", ")}` });
    const data = parseValue(rec.type, rec.value, domain, (message) => problems.push({ path: path("value"), message }));
    if (problems.length > before || !zone) continue;
    if (rec.type === "CNAME" && owner === zone.origin) {
      problems.push({ path: path("type"), message: "a CNAME cannot be at the zone apex (RFC 1912 §2.4)" });
      continue;
    }
    zone.records.push({ name: owner, type: rec.type, ttl: rec.ttl ?? ttl, data } as ZoneRecord);
  }

  for (const zone of zones) {
    zone.records = normalizeRRsets(zone.records);
    // RFC 1034 §3.6.2: a CNAME owner has no other data.
    const byName = new Map<string, Set<string>>();
    for (const r of zone.records) {
      if (!byName.has(r.name)) byName.set(r.name, new Set());
      byName.get(r.name)!.add(r.type);
    }
    for (const [name, types] of byName) {
      if (types.has("CNAME") && types.size > 1) {
        const i = config.dns.records.findIndex((r) => r.type === "CNAME" && ownerName(r.name, domain, zones) === name);
        problems.push({
          path: `${NAMESPACE}:dns.records[${i}].name`,
          message: `${name} has a CNAME and also ${[...types].filter((t) => t !== "CNAME").join(", ")} records (RFC 1034 §3.6.2)`,
        });
      }
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return zones;
}

function hostAddresses(config: MailConfig): { v4?: string; v6?: string } {
  const out: { v4?: string; v6?: string } = {};
  for (const a of [config.publicAddress, config.publicAddress6]) {
    if (!a) continue;
    if (isIP(a) === 4) out.v4 ??= a;
    else if (isIP(a) === 6) out.v6 ??= a.toLowerCase();
  }
  return out;
}

/** `@` is the domain; `x.` is absolute; a name inside one of our zones is taken as written; else relative to the domain. */
function ownerName(name: string, domain: string, zones: Zone[]): string {
  const n = name.trim();
  if (n === "@" || n === "") return domain;
  if (n.endsWith(".")) return normalizeName(n);
  const lower = n.toLowerCase();
  if (zones.some((z) => isInZone(lower, z.origin))) return lower;
  return `${lower}.${domain}`;
}

function longestZone(zones: Zone[], name: string): Zone | undefined {
  let best: Zone | undefined;
  for (const z of zones) if (isInZone(name, z.origin) && (!best || z.origin.length > best.origin.length)) best = z;
  return best;
}

/** Target names in values are always absolute (a trailing dot is optional); `@` is the domain. */
function targetName(text: string, domain: string, fail: (m: string) => void, { allowRoot = false } = {}): string {
  const t = text.trim();
  if (t === "@") return domain;
  if (t === ".") {
    if (!allowRoot) fail(`"." is not allowed here`);
    return "";
  }
  const n = normalizeName(t);
  const why = checkName(n);
  if (why || n === "") fail(`"${text}" ${why ?? "is empty"}`);
  return n;
}

function u16(text: string | undefined, what: string, fail: (m: string) => void): number {
  if (text === undefined || !/^\d{1,5}$/.test(text) || Number(text) > 65535) {
    fail(`${what} must be a number from 0 to 65535`);
    return 0;
  }
  return Number(text);
}

function parseValue(type: RecordType, value: string, domain: string, fail: (m: string) => void): ZoneRecord["data"] {
  const words = value.trim().split(/\s+/);
  switch (type) {
    case "A":
      if (isIP(value.trim()) !== 4) fail(`"${value}" is not an IPv4 address`);
      return value.trim();
    case "AAAA":
      if (isIP(value.trim()) !== 6) fail(`"${value}" is not an IPv6 address`);
      return value.trim().toLowerCase();
    case "CNAME":
    case "NS":
    case "PTR":
      return targetName(value, domain, fail);
    case "MX": {
      if (words.length !== 2) fail(`"${value}" is not "<preference> <host>" (e.g. "10 mail.example.com")`);
      return { preference: u16(words[0], "the preference", fail), exchange: targetName(words[1] ?? "", domain, fail, { allowRoot: true }) };
    }
    case "SRV": {
      if (words.length !== 4) fail(`"${value}" is not "<priority> <weight> <port> <target>"`);
      return {
        priority: u16(words[0], "the priority", fail),
        weight: u16(words[1], "the weight", fail),
        port: u16(words[2], "the port", fail),
        target: targetName(words[3] ?? "", domain, fail, { allowRoot: true }),
      };
    }
    case "TXT":
      return parseTxt(value, fail);
    case "CAA": {
      const m = /^\s*(\d{1,3})\s+([A-Za-z0-9]+)\s+(.*)$/.exec(value);
      if (!m || Number(m[1]) > 255) {
        fail(`"${value}" is not "<flags> <tag> <value>" (e.g. 0 issue "letsencrypt.org")`);
        return { flags: 0, tag: "issue", value: "" };
      }
      let v = m[3]!.trim();
      if (v.startsWith('"') && v.endsWith('"') && v.length >= 2) v = v.slice(1, -1);
      return { flags: Number(m[1]), tag: m[2]!.toLowerCase(), value: v };
    }
    case "SOA":
      fail("SOA records come from the config, not from dns.records");
      return "";
  }
}

/**
 * TXT values: `"a" "b"` (quoted character-strings, `\"` and `\\` escapes) or plain text, which is
 * split into 255-octet strings (long DKIM keys).
 */
export function parseTxt(value: string, fail: (m: string) => void = () => {}): string[] {
  const v = value.trim();
  if (!v.startsWith('"')) return splitTxt(value);
  const out: string[] = [];
  let i = 0;
  while (i < v.length) {
    if (v[i] === " " || v[i] === "\t") {
      i++;
      continue;
    }
    if (v[i] !== '"') {
      fail("quoted TXT strings must be separated by spaces");
      return splitTxt(value);
    }
    let s = "";
    i++;
    while (i < v.length && v[i] !== '"') {
      if (v[i] === "\\" && i + 1 < v.length) i++;
      s += v[i];
      i++;
    }
    if (i >= v.length) {
      fail("unterminated quoted string");
      return splitTxt(value);
    }
    i++;
    out.push(...splitTxt(s));
  }
  return out.length > 0 ? out : [""];
}

/** Splits text into character-strings of at most 255 UTF-8 octets, never inside a character. */
export function splitTxt(text: string): string[] {
  const out: string[] = [];
  let cur = "";
  let curBytes = 0;
  for (const ch of text) {
    const b = Buffer.byteLength(ch);
    if (curBytes + b > 255) {
      out.push(cur);
      cur = "";
      curBytes = 0;
    }
    cur += ch;
    curBytes += b;
  }
  out.push(cur);
  return out;
}

/** Drops duplicate records and gives every RRset its lowest TTL (RFC 2181 §5.2). SOA stays first. */
function normalizeRRsets(records: ZoneRecord[]): ZoneRecord[] {
  const seen = new Set<string>();
  const out: ZoneRecord[] = [];
  const minTtl = new Map<string, number>();
  for (const r of records) {
    const key = `${r.name}\0${r.type}\0${JSON.stringify(r.data)}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ ...r } as ZoneRecord);
    const set = `${r.name}\0${r.type}`;
    minTtl.set(set, Math.min(minTtl.get(set) ?? Number.POSITIVE_INFINITY, r.ttl));
  }
  for (const r of out) r.ttl = minTtl.get(`${r.name}\0${r.type}`)!;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Master-file rendering (RFC 1035 §5.1), for BIND and for people.

function abs(name: string): string {
  return name === "" ? "." : `${name}.`;
}

/** A character-string in master-file form: quoted, `"` and `\` escaped, non-printables as \DDD. */
export function quoteTxt(s: string): string {
  let out = '"';
  for (const b of Buffer.from(s, "utf8")) {
    if (b === 0x22 || b === 0x5c) out += `\\${String.fromCharCode(b)}`;
    else if (b < 0x20 || b > 0x7e) out += `\\${String(b).padStart(3, "0")}`;
    else out += String.fromCharCode(b);
  }
  return `${out}"`;
}

export function rdataText(r: ZoneRecord): string {
  switch (r.type) {
    case "A":
    case "AAAA":
      return r.data;
    case "NS":
    case "CNAME":
    case "PTR":
      return abs(r.data);
    case "SOA": {
      const d = r.data;
      return `${abs(d.mname)} ${abs(d.rname)} ${d.serial} ${d.refresh} ${d.retry} ${d.expire} ${d.minimum}`;
    }
    case "MX":
      return `${r.data.preference} ${abs(r.data.exchange)}`;
    case "TXT":
      return r.data.map(quoteTxt).join(" ");
    case "SRV":
      return `${r.data.priority} ${r.data.weight} ${r.data.port} ${abs(r.data.target)}`;
    case "CAA":
      return `${r.data.flags} ${r.data.tag} ${quoteTxt(r.data.value)}`;
  }
}

/** The zone as a BIND master file: absolute owner names, explicit TTL and class on every line. */
export function renderZone(zone: Zone): string {
  const soa = soaOf(zone);
  const lines = [
    `; ${zone.origin}: generated by mailstack from the stack config. Do not edit.`,
    `$ORIGIN ${abs(zone.origin)}`,
    `$TTL ${soa.ttl}`,
  ];
  for (const r of zone.records) lines.push(`${abs(r.name)}\t${r.ttl}\tIN\t${r.type}\t${rdataText(r)}`);
  return `${lines.join("\n")}\n`;
}
