/**
 * What SEARCH's SUBJECT, FROM, TO, CC, BCC and SENTBEFORE/SENTON/SENTSINCE compare against
 * (RFC 3501 §6.4.4): the ENVELOPE's subject and address fields as text, and the Date: header's
 * day. They come from the message header alone and are kept per message in the folder cache as
 * one small string (lower-cased fields separated by NUL), so a repeated SEARCH reads no file,
 * parses nothing and allocates nothing per message.
 *
 * The text of an address field is made from its ENVELOPE form (`Name <mailbox@host>`,
 * comma-separated, names decoded; `addressListText`); a single plain address takes a shortcut
 * that gives the same text without the address parser.
 */
import { libmime } from "./lazy";
import { addresses, decodeText, type Json } from "./mime";

/** Cache field name (bump the number when the format changes). */
export const SEARCH_FIELDS_CACHE = "imap-search-1";

/** Positions of the fields in the record. */
export const FIELD = { subject: 0, from: 1, to: 2, cc: 3, bcc: 4, sent: 5 } as const;
export type FieldName = Exclude<keyof typeof FIELD, "sent">;

const WANTED: Record<string, number> = { subject: 0, from: 1, to: 2, cc: 3, bcc: 4, date: 5 };

/** The search record of a message from its header block (CRLF or LF line ends). */
export function searchFields(header: Buffer): string {
  const raw = headerValues(header);
  const out = new Array<string>(6);
  out[0] = raw[0] === undefined ? "" : decodeWords(raw[0]);
  for (let i = 1; i <= 4; i++) out[i] = raw[i] === undefined ? "" : addressText(raw[i]!);
  for (let i = 0; i <= 4; i++) out[i] = clean(out[i]!.toLowerCase());
  const day = raw[5] === undefined ? null : headerDay(decodeWords(raw[5]));
  out[5] = day === null ? "" : String(day);
  return out.join("\0");
}

function clean(s: string): string {
  return s.includes("\0") ? s.replace(/\0/g, " ") : s;
}

/** Whether a record's field contains `needle` (already lower-cased; "" matches everything). */
export function fieldContains(record: string, field: number, needle: string): boolean {
  if (needle === "") return true;
  if (needle.includes("\0")) return false;
  let start = 0;
  for (let i = 0; i < field; i++) start = record.indexOf("\0", start) + 1;
  const end = record.indexOf("\0", start);
  const at = record.indexOf(needle, start);
  return at >= 0 && at + needle.length <= (end < 0 ? record.length : end);
}

/** The Date: header's day (ms at UTC midnight), or null. */
export function sentDay(record: string): number | null {
  const at = record.lastIndexOf("\0");
  const text = record.slice(at + 1);
  return text === "" ? null : Number(text);
}

/**
 * Unfolded, trimmed values of the first Subject, From, To, Cc, Bcc and Date fields (by FIELD
 * position, Date last), each decoded as parseHeader does (UTF-8 when valid, else Latin-1).
 */
function headerValues(h: Buffer): (string | undefined)[] {
  const out: (string | undefined)[] = new Array(6);
  let found = 0;
  let pos = 0;
  const len = h.length;
  while (pos < len && found < 6) {
    const first = h[pos];
    if (first === 0x0a || (first === 0x0d && h[pos + 1] === 0x0a)) break; // blank line: end of header
    // The field: this line and the continuation lines after it.
    let end = h.indexOf(0x0a, pos);
    end = end < 0 ? len : end + 1;
    while (end < len && (h[end] === 0x20 || h[end] === 0x09)) {
      const nl = h.indexOf(0x0a, end);
      end = nl < 0 ? len : nl + 1;
    }
    const slot = wantedSlot(h, pos, end);
    if (slot >= 0 && out[slot] === undefined) {
      const colon = h.indexOf(0x3a, pos);
      out[slot] = decodeText(h.subarray(colon + 1, end))
        .replace(/\r?\n(?=[ \t])/g, "")
        .replace(/\r?\n$/, "")
        .trim();
      found++;
    }
    pos = end;
  }
  return out;
}

/** Which wanted field the line at `pos` starts (by name, case-insensitive), or -1. */
function wantedSlot(h: Buffer, pos: number, end: number): number {
  const c = h[pos]! | 0x20;
  // s(ubject) f(rom) t(o) c(c) b(cc) d(ate)
  if (c !== 0x73 && c !== 0x66 && c !== 0x74 && c !== 0x63 && c !== 0x62 && c !== 0x64) return -1;
  let colon = -1;
  for (let i = pos; i < end && i < pos + 8; i++) {
    if (h[i] === 0x3a) {
      colon = i;
      break;
    }
  }
  if (colon < 0) return -1;
  const name = h.toString("latin1", pos, colon).trim().toLowerCase();
  return WANTED[name] ?? -1;
}

function decodeWords(s: string): string {
  if (!s.includes("=?")) return s;
  try {
    return libmime().decodeWords(s);
  } catch {
    return s;
  }
}

const PLAIN_ADDRESS = /^[A-Za-z0-9._+-]+@[A-Za-z0-9.-]+$/;
const PLAIN_NAME = /^[A-Za-z0-9]+(?: [A-Za-z0-9]+)*$/;

/**
 * One plain address (`a@b`, `<a@b>` or `Plain Words <a@b>`) as addressListText renders it, or
 * null when the value needs the address parser.
 */
export function plainAddressText(value: string): string | null {
  const lt = value.indexOf("<");
  if (lt < 0) return PLAIN_ADDRESS.test(value) ? value : null;
  if (value.charCodeAt(value.length - 1) !== 0x3e || value.indexOf("<", lt + 1) >= 0) return null;
  const addr = value.slice(lt + 1, -1);
  if (!PLAIN_ADDRESS.test(addr)) return null;
  const name = value.slice(0, lt).trim();
  if (name === "") return addr;
  return PLAIN_NAME.test(name) ? `${name} <${addr}>` : null;
}

/** An address header's text, as in the ENVELOPE. */
export function addressText(value: string): string {
  return plainAddressText(value) ?? addressListText(addresses(value));
}

/** ENVELOPE address list → `Name <mailbox@host>, ...` (names decoded; groups as `name:`). */
export function addressListText(v: Json): string {
  if (!Array.isArray(v)) return "";
  const parts: string[] = [];
  for (const a of v) {
    if (!Array.isArray(a)) continue;
    const [name, , mailbox, host] = a as [string | null, unknown, string | null, string | null];
    if (host === null) {
      if (mailbox) parts.push(`${mailbox}:`);
      continue;
    }
    const addr = `${mailbox ?? ""}@${host}`;
    parts.push(name ? `${decodeWords(name)} <${addr}>` : addr);
  }
  return parts.join(", ");
}

const MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DAY = 86400000;

/** The calendar day a Date: header names (its own day: "disregarding time and timezone"). */
export function headerDay(value: string): number | null {
  const m = /(\d{1,2})\s+([A-Za-z]{3})[a-z]*\s+(\d{2,4})/.exec(value);
  if (m) {
    const mon = MONTHS.indexOf(m[2]!.toLowerCase());
    let year = Number(m[3]);
    if (year < 50) year += 2000;
    else if (year < 100) year += 1900;
    if (mon >= 0) return Date.UTC(year, mon, Number(m[1]));
  }
  const t = Date.parse(value);
  return Number.isNaN(t) ? null : Math.floor(t / DAY) * DAY;
}
