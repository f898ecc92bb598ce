/**
 * Domain names as mailstack's DNS code handles them: absolute, lower-case, in presentation form
 * without the trailing dot (`mail.lx.com`; the root is `""`). Any label byte outside
 * `[a-z0-9_*-]` is written as `\DDD` (RFC 1035 §5.1), so `.` only ever separates labels and a
 * suffix test on strings is a test on whole labels.
 */
import { isIP } from "node:net";
import { parseCidr, toBits, unmapV4 } from "../lib/cidr";

/** RFC 1035 §2.3.4: 63 octets per label, 255 octets per name in wire form. */
export const MAX_LABEL = 63;
export const MAX_NAME_WIRE = 255;

const SAFE_LABEL = /^[a-z0-9_*-]{1,63}$/;

/** `Mail.LX.com.` → `mail.lx.com`; `@`-free, no escapes expected (config values). */
export function normalizeName(name: string): string {
  const n = name.trim().toLowerCase();
  if (n === "." || n === "") return "";
  return n.endsWith(".") ? n.slice(0, -1) : n;
}

export function labels(name: string): string[] {
  return name === "" ? [] : name.split(".");
}

/** True if `name` is `zone` or below it. */
export function isInZone(name: string, zone: string): boolean {
  if (zone === "") return true;
  return name === zone || name.endsWith(`.${zone}`);
}

/** The parent name (`a.b.c` → `b.c`; a single label → root `""`). */
export function parentName(name: string): string {
  const i = name.indexOf(".");
  return i < 0 ? "" : name.slice(i + 1);
}

/** Wire length of a name in presentation form without escapes. */
export function wireLength(name: string): number {
  return name === "" ? 1 : Buffer.byteLength(name) + 2;
}

/**
 * Checks a config name (owner or target). Underscores are allowed (`_dmarc`, `_submission._tcp`),
 * and `*` as a whole first label (a wildcard) when `wildcard` is set. Returns a reason or null.
 */
export function checkName(name: string, { wildcard = false } = {}): string | null {
  if (name === "") return null;
  const ls = labels(name);
  if (wireLength(name) > MAX_NAME_WIRE) return "is longer than 255 octets";
  for (let i = 0; i < ls.length; i++) {
    const l = ls[i]!;
    if (l === "") return "has an empty label";
    if (l.length > MAX_LABEL) return `label "${l}" is longer than 63 octets`;
    if (l === "*") {
      if (!wildcard || i !== 0) return "may only have * as its first label";
      continue;
    }
    if (!SAFE_LABEL.test(l) || l.includes("*")) return `label "${l}" may only hold letters, digits, - and _`;
  }
  return null;
}

/**
 * Reads a name from a message at `offset` without following compression pointers (which a
 * question section of a query never needs). Returns the presentation form (lower-cased, escaped)
 * and the offset after the name, or null when the bytes are not a valid uncompressed name.
 */
export function readUncompressedName(buf: Buffer, offset: number): { name: string; end: number } | null {
  let pos = offset;
  let out = "";
  let total = 0;
  for (;;) {
    if (pos >= buf.length) return null;
    const len = buf[pos]!;
    if (len === 0) {
      pos++;
      break;
    }
    if (len > MAX_LABEL) return null; // a pointer (0xC0) or a reserved label type
    total += len + 1;
    if (total + 1 > MAX_NAME_WIRE) return null;
    if (pos + 1 + len > buf.length) return null;
    if (out !== "") out += ".";
    for (let i = pos + 1; i <= pos + len; i++) {
      let c = buf[i]!;
      if (c >= 0x41 && c <= 0x5a) c += 0x20;
      // a-z 0-9 - _ * pass; everything else, dots and backslashes included, becomes \DDD.
      if ((c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x5f || c === 0x2a) {
        out += String.fromCharCode(c);
      } else {
        out += `\\${String(c).padStart(3, "0")}`;
      }
    }
    pos += 1 + len;
  }
  return { name: out, end: pos };
}

/** The reverse-lookup name of an address: `192.0.2.1` → `1.2.0.192.in-addr.arpa`. */
export function reverseName(address: string): string {
  const a = unmapV4(address);
  if (isIP(a) === 4) return `${a.split(".").reverse().join(".")}.in-addr.arpa`;
  const bits = toBits(a);
  if (bits === null || isIP(a) !== 6) throw new Error(`not an IP address: ${address}`);
  const hex = bits.toString(16).padStart(32, "0");
  return `${[...hex].reverse().join(".")}.ip6.arpa`;
}

/**
 * The reverse zone for a network. Zones are cut on label boundaries: octets for IPv4, nibbles for
 * IPv6, so a prefix that is not a multiple of 8 (or 4) is widened to the enclosing boundary
 * (a /25 serves the /24's zone; RFC 2317 classless delegation is out of scope).
 */
export function reverseZoneName(cidr: string): string {
  const c = parseCidr(cidr);
  if (!c) throw new Error(`not a CIDR: ${cidr}`);
  if (c.family === 4) {
    const octets = Math.floor(c.prefix / 8);
    const parts = [24, 16, 8, 0].map((s) => String(Number((c.bits >> BigInt(s)) & 0xffn))).slice(0, octets);
    return [...parts.reverse(), "in-addr", "arpa"].join(".");
  }
  const nibbles = Math.floor(c.prefix / 4);
  const hex = c.bits.toString(16).padStart(32, "0").slice(0, nibbles);
  return [...[...hex].reverse(), "ip6", "arpa"].join(".");
}
