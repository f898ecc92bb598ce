/**
 * The IMAP response compiler: pure code that turns response values into wire bytes
 * (RFC 3501 §7 / RFC 9051 §7 formal syntax). Strings are quoted when they can be and sent as
 * literals when they cannot (CR, LF, NUL, 8-bit text outside UTF-8 mode, or long values).
 */
import { isUtf8 } from "node:buffer";

/** A string value: quoted or literal as needed. */
export class IString {
  constructor(readonly value: string | Buffer) {}
}
/** Always a literal (message data). `binary` makes it a literal8 (`~{n}`, RFC 3516). */
export class ILiteral {
  constructor(
    readonly value: Buffer,
    readonly binary = false,
  ) {}
}
/** Raw text put on the wire as it is (atoms, flags, `BODY[1.2]<0>` keys, pre-built parts). */
export class IRaw {
  constructor(readonly value: string) {}
}

/**
 * Response values:
 * - `string`: an atom (written as it is);
 * - `number` / `bigint`: a number;
 * - `null`: NIL;
 * - arrays: parenthesized lists;
 * - `IString`, `ILiteral`, `IRaw` as above.
 */
export type Value = string | number | bigint | null | IString | ILiteral | IRaw | Value[];

export const str = (v: string | Buffer): IString => new IString(v);
export const lit = (v: Buffer, binary = false): ILiteral => new ILiteral(v, binary);
export const raw = (v: string): IRaw => new IRaw(v);
/** An nstring: NIL for null/undefined. */
export const nstr = (v: string | Buffer | null | undefined): IString | null => (v === null || v === undefined ? null : new IString(v));

export interface CompileOptions {
  /** UTF-8 may appear in quoted strings (IMAP4rev2 / UTF8=ACCEPT). */
  utf8?: boolean;
}

/** Output collector: strings and buffers in order, joined at flush. */
export class Chunks {
  parts: Array<string | Buffer> = [];
  /** Approximate byte size (strings counted by UTF-16 length; exact enough for batching). */
  size = 0;

  text(s: string): void {
    this.parts.push(s);
    this.size += s.length;
  }

  bytes(b: Buffer): void {
    this.parts.push(b);
    this.size += b.length;
  }

  toBuffer(): Buffer {
    return Buffer.concat(this.parts.map((p) => (typeof p === "string" ? Buffer.from(p, "utf8") : p)));
  }

  take(): Array<string | Buffer> {
    const p = this.parts;
    this.parts = [];
    this.size = 0;
    return p;
  }
}

const MAX_QUOTED = 1024;

/** Can these bytes be sent as a quoted string? */
function quotable(s: string, utf8: boolean): boolean {
  if (s.length > MAX_QUOTED) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x0d || c === 0x0a || c === 0) return false;
    if (c >= 0x80 && !utf8) return false;
    if (c < 0x20 || c === 0x7f) return false;
  }
  return true;
}

export function quote(s: string): string {
  return `"${s.replace(/[\\"]/g, (m) => `\\${m}`)}"`;
}

export function writeValue(out: Chunks, v: Value, opts: CompileOptions = {}): void {
  if (v === null) {
    out.text("NIL");
  } else if (typeof v === "string") {
    out.text(v);
  } else if (typeof v === "number") {
    out.text(String(Math.trunc(v)));
  } else if (typeof v === "bigint") {
    out.text(v.toString());
  } else if (Array.isArray(v)) {
    out.text("(");
    for (let i = 0; i < v.length; i++) {
      if (i > 0) out.text(" ");
      writeValue(out, v[i]!, opts);
    }
    out.text(")");
  } else if (v instanceof IRaw) {
    out.text(v.value);
  } else if (v instanceof ILiteral) {
    out.text(`${v.binary ? "~" : ""}{${v.value.length}}\r\n`);
    out.bytes(v.value);
  } else {
    writeString(out, v.value, opts);
  }
}

function writeString(out: Chunks, value: string | Buffer, opts: CompileOptions): void {
  const asText = typeof value === "string" || isUtf8(value);
  const s = typeof value === "string" ? value : value.toString(asText ? "utf8" : "latin1");
  if (asText && quotable(s, opts.utf8 === true)) {
    out.text(quote(s));
    return;
  }
  const bytes = typeof value === "string" ? Buffer.from(value, "utf8") : value;
  out.text(`{${bytes.length}}\r\n`);
  out.bytes(bytes);
}

/** A status or data response. */
export interface Response {
  /** `*`, `+` or a command tag. */
  tag: string;
  /** OK / NO / BAD / BYE / PREAUTH, or a data keyword (`FLAGS`, `LIST`), or a number for `* 3 EXISTS`. */
  command: string;
  /** Data after the keyword (data responses). */
  attributes?: Value[];
  /** Response code for status responses: `[CODE args]`. */
  code?: { name: string; args?: Value[] };
  /** Human-readable text for status responses. */
  text?: string;
}

export function writeResponse(out: Chunks, r: Response, opts: CompileOptions = {}): void {
  out.text(`${r.tag} ${r.command}`);
  if (r.attributes) {
    for (const a of r.attributes) {
      out.text(" ");
      writeValue(out, a, opts);
    }
  }
  if (r.code) {
    out.text(` [${r.code.name}`);
    for (const a of r.code.args ?? []) {
      out.text(" ");
      writeValue(out, a, opts);
    }
    out.text("]");
  }
  if (r.text !== undefined) out.text(` ${sanitizeText(r.text)}`);
  else if (r.code || ["OK", "NO", "BAD", "BYE", "PREAUTH"].includes(r.command)) out.text(" ");
  out.text("\r\n");
}

/** Human-readable text: one line, printable characters only. */
export function sanitizeText(t: string): string {
  const s = t.replace(/[\x00-\x1f\x7f]+/g, " ").trim();
  return s.length > 0 ? s : "Completed";
}

export function compile(r: Response, opts: CompileOptions = {}): Buffer {
  const out = new Chunks();
  writeResponse(out, r, opts);
  return out.toBuffer();
}

/** IMAP date-time: `"17-Jul-1996 02:44:25 -0700"` (RFC 3501 §9 date-time), in UTC. */
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const PAD2 = Array.from({ length: 60 }, (_, i) => (i < 10 ? `0${i}` : String(i)));
const DAY = Array.from({ length: 32 }, (_, i) => (i < 10 ? ` ${i}` : String(i)));
let lastDateMs = Number.NaN;
let lastDateText = "";
export function formatDateTime(d: Date): string {
  const ms = d.getTime();
  const sec = ms - (ms % 1000);
  if (sec === lastDateMs) return lastDateText;
  const text = `"${DAY[d.getUTCDate()]}-${MONTHS[d.getUTCMonth()]}-${d.getUTCFullYear()} ${PAD2[d.getUTCHours()]}:${PAD2[d.getUTCMinutes()]}:${PAD2[d.getUTCSeconds()]} +0000"`;
  lastDateMs = sec;
  lastDateText = text;
  return text;
}

/** Parses an IMAP date-time (APPEND). Returns null when malformed. */
export function parseDateTime(s: string): Date | null {
  const m = /^ ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})$/.exec(s);
  if (!m) return null;
  const mon = MONTHS.findIndex((x) => x.toLowerCase() === m[2]!.toLowerCase());
  if (mon < 0) return null;
  const [day, year, hh, mm, ss, zh, zm] = [m[1], m[3], m[4], m[5], m[6], m[8], m[9]].map(Number) as number[];
  if (day! < 1 || day! > 31 || hh! > 23 || mm! > 59 || ss! > 60 || zm! > 59) return null;
  const utc = Date.UTC(year!, mon, day!, hh!, mm!, Math.min(ss!, 59));
  const check = new Date(Date.UTC(year!, mon, day!));
  if (check.getUTCDate() !== day) return null;
  const offset = (zh! * 60 + zm!) * (m[7] === "-" ? -1 : 1);
  return new Date(utc - offset * 60000);
}

/** Parses an IMAP search date (`1-Feb-1994`); returns the UTC day start, or null. */
export function parseDate(s: string): number | null {
  const m = /^(\d{1,2})-([A-Za-z]{3})-(\d{4})$/.exec(s);
  if (!m) return null;
  const mon = MONTHS.findIndex((x) => x.toLowerCase() === m[2]!.toLowerCase());
  if (mon < 0) return null;
  const day = Number(m[1]);
  const t = Date.UTC(Number(m[3]), mon, day);
  if (new Date(t).getUTCDate() !== day) return null;
  return t;
}
