/**
 * The little MIME the queue needs: header access, `Received:` counting for the hop limit, and
 * the 8-bit → 7-bit downgrade of RFC 6152 §3 / RFC 1652 (what Postfix does for a next hop that
 * does not offer 8BITMIME): every 8-bit leaf body part is re-encoded as quoted-printable (text)
 * or base64 (anything else), recursing through multipart/* and message/rfc822.
 */
import { headerEnd } from "./spool";

export interface Header {
  name: string;
  /** Unfolded value, without the leading space. */
  value: string;
}

/** The header section (raw bytes) and body of a message or body part. */
export function splitMessage(data: Buffer): { head: Buffer; body: Buffer } {
  const end = headerEnd(data);
  if (end >= data.length) return { head: data, body: Buffer.alloc(0) };
  // Skip the blank line itself.
  const skip = data[end] === 0x0d ? 2 : 1;
  return { head: data.subarray(0, end), body: data.subarray(end + skip) };
}

export function parseHeaders(head: Buffer): Header[] {
  const out: Header[] = [];
  for (const line of head.toString("latin1").split(/\r?\n/)) {
    if (line === "") continue;
    if (/^[ \t]/.test(line) && out.length > 0) {
      out[out.length - 1]!.value += ` ${line.trim()}`;
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    out.push({ name: line.slice(0, colon).trim(), value: line.slice(colon + 1).trim() });
  }
  return out;
}

export function headerValue(headers: Header[], name: string): string | undefined {
  const n = name.toLowerCase();
  return headers.find((h) => h.name.toLowerCase() === n)?.value;
}

/** Number of `Received:` headers (the hop count, RFC 5321 §6.3). */
export function countReceived(data: Buffer): number {
  const head = data.subarray(0, headerEnd(data)).toString("latin1");
  const m = head.match(/^received[ \t]*:/gim);
  return m ? m.length : 0;
}

/** `type/subtype` lower-cased and the parameters (lower-cased names, unquoted values). */
export function parseContentType(value: string | undefined): { type: string; params: Record<string, string> } {
  if (!value) return { type: "text/plain", params: {} };
  const [first, ...rest] = splitParams(value);
  const params: Record<string, string> = {};
  for (const p of rest) {
    const eq = p.indexOf("=");
    if (eq <= 0) continue;
    let v = p.slice(eq + 1).trim();
    if (v.startsWith('"') && v.endsWith('"') && v.length >= 2) v = v.slice(1, -1).replace(/\\(.)/g, "$1");
    params[p.slice(0, eq).trim().toLowerCase()] = v;
  }
  return { type: (first ?? "text/plain").trim().toLowerCase(), params };
}

function splitParams(value: string): string[] {
  const out: string[] = [];
  let cur = "";
  let quoted = false;
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (c === "\\" && quoted) {
      cur += c + (value[i + 1] ?? "");
      i++;
      continue;
    }
    if (c === '"') quoted = !quoted;
    if (c === ";" && !quoted) {
      out.push(cur);
      cur = "";
      continue;
    }
    cur += c;
  }
  out.push(cur);
  return out;
}

function has8bit(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i]! > 0x7f) return true;
  return false;
}

/** Quoted-printable (RFC 2045 §6.7) keeping line breaks as hard breaks; CRLF output. */
export function encodeQuotedPrintable(body: Buffer): string {
  const lines: string[] = [];
  let start = 0;
  const raw: Buffer[] = [];
  for (let i = 0; i < body.length; i++) {
    if (body[i] === 0x0a) {
      const end = i > start && body[i - 1] === 0x0d ? i - 1 : i;
      raw.push(body.subarray(start, end));
      start = i + 1;
    }
  }
  const tail = body.subarray(start);
  const endsWithNewline = tail.length === 0 && body.length > 0;
  if (!endsWithNewline) raw.push(tail);
  for (const line of raw) {
    let out = "";
    let width = 0;
    const push = (tok: string) => {
      if (width + tok.length > 75) {
        out += "=\r\n";
        width = 0;
      }
      out += tok;
      width += tok.length;
    };
    for (let i = 0; i < line.length; i++) {
      const b = line[i]!;
      const last = i === line.length - 1;
      const literal = (b >= 33 && b <= 126 && b !== 61) || ((b === 32 || b === 9) && !last);
      // A dot alone at a line start is fine for SMTP (dot-stuffing), but "From " is safer encoded.
      push(literal ? String.fromCharCode(b) : `=${b.toString(16).toUpperCase().padStart(2, "0")}`);
    }
    lines.push(out);
  }
  return lines.join("\r\n") + (endsWithNewline ? "\r\n" : "");
}

function encodeBase64(body: Buffer): string {
  return `${(body.toString("base64").match(/.{1,76}/g) ?? []).join("\r\n")}\r\n`;
}

/** Replaces (or adds) a header in a raw header section; keeps everything else byte for byte. */
function setHeader(head: Buffer, name: string, value: string): Buffer {
  const text = head.toString("latin1");
  const lines = text.split(/(?<=\n)/);
  const out: string[] = [];
  let skipping = false;
  const re = new RegExp(`^${name}[ \\t]*:`, "i");
  for (const l of lines) {
    if (skipping && /^[ \t]/.test(l)) continue;
    skipping = false;
    if (re.test(l)) {
      skipping = true;
      continue;
    }
    out.push(l);
  }
  let joined = out.join("");
  if (joined.length > 0 && !joined.endsWith("\n")) joined += "\r\n";
  return Buffer.concat([Buffer.from(joined, "latin1"), Buffer.from(`${name}: ${value}\r\n`, "latin1")]);
}

function isUtf8(b: Buffer): boolean {
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(b);
    return true;
  } catch {
    return false;
  }
}

/**
 * Converts a message with an 8-bit body to 7-bit. Returns null when that is impossible
 * (8-bit headers, or 8-bit bytes inside a part that claims to be base64/quoted-printable).
 */
export function downgrade8bit(data: Buffer): Buffer | null {
  const { head, body } = splitMessage(data);
  if (has8bit(head)) return null;
  const headers = parseHeaders(head);
  const isMime = headerValue(headers, "MIME-Version") !== undefined || headerValue(headers, "Content-Type") !== undefined;
  if (!isMime) {
    if (!has8bit(body)) return data;
    // Non-MIME 8-bit text: declare it (RFC 1428's unknown-8bit unless it is valid UTF-8).
    let h = setHeader(head, "MIME-Version", "1.0");
    h = setHeader(h, "Content-Type", `text/plain; charset=${isUtf8(body) ? "utf-8" : "unknown-8bit"}`);
    h = setHeader(h, "Content-Transfer-Encoding", "quoted-printable");
    return Buffer.concat([h, Buffer.from("\r\n"), Buffer.from(encodeQuotedPrintable(body), "latin1")]);
  }
  return downgradeEntity(head, body, headers, 0);
}

function downgradeEntity(head: Buffer, body: Buffer, headers: Header[], depth: number): Buffer | null {
  if (depth > 20) return null;
  if (!has8bit(body) && !has8bit(head)) return Buffer.concat([head, Buffer.from("\r\n"), body]);
  if (has8bit(head)) return null;
  const ct = parseContentType(headerValue(headers, "Content-Type"));
  const cte = (headerValue(headers, "Content-Transfer-Encoding") ?? "7bit").toLowerCase().trim();

  if (ct.type.startsWith("multipart/")) {
    const boundary = ct.params.boundary;
    if (!boundary) return null;
    const parts = splitMultipart(body, boundary);
    if (!parts) return null;
    const out: Buffer[] = [head, Buffer.from("\r\n"), strip8bit(parts.preamble)];
    for (const part of parts.parts) {
      const { head: ph, body: pb } = splitMessage(part);
      const converted = downgradeEntity(ph, pb, parseHeaders(ph), depth + 1);
      if (!converted) return null;
      // The CRLF before each boundary line belongs to the boundary (it was trimmed off the part).
      out.push(Buffer.from(`--${boundary}\r\n`), converted, Buffer.from("\r\n"));
    }
    out.push(Buffer.from(`--${boundary}--\r\n`), strip8bit(parts.epilogue));
    return Buffer.concat(out);
  }

  if (ct.type === "message/rfc822") {
    const inner = downgrade8bit(body);
    if (!inner) return null;
    const h = cte === "8bit" || cte === "binary" ? setHeader(head, "Content-Transfer-Encoding", "7bit") : head;
    return Buffer.concat([h, Buffer.from("\r\n"), inner]);
  }

  // A leaf. 8-bit bytes under base64/quoted-printable are a broken message: refuse.
  if (cte === "base64" || cte === "quoted-printable") return null;
  const text = ct.type.startsWith("text/");
  const h = setHeader(head, "Content-Transfer-Encoding", text ? "quoted-printable" : "base64");
  return Buffer.concat([h, Buffer.from("\r\n"), Buffer.from(text ? encodeQuotedPrintable(body) : encodeBase64(body), "latin1")]);
}

/** Preamble and epilogue are invisible to readers; 8-bit bytes there are replaced. */
function strip8bit(b: Buffer): Buffer {
  if (!has8bit(b)) return b;
  const c = Buffer.from(b);
  for (let i = 0; i < c.length; i++) if (c[i]! > 0x7f) c[i] = 0x3f;
  return c;
}

/** Splits a multipart body at its boundary lines (RFC 2046 §5.1.1). */
function splitMultipart(body: Buffer, boundary: string): { preamble: Buffer; parts: Buffer[]; epilogue: Buffer } | null {
  const text = body.toString("latin1");
  const delim = `--${boundary}`;
  const lines = text.split(/(?<=\n)/);
  let preamble = "";
  const parts: string[] = [];
  let cur: string | null = null;
  let epilogue = "";
  let closed = false;
  for (const line of lines) {
    const bare = line.replace(/\r?\n$/, "").replace(/[ \t]+$/, "");
    if (closed) {
      epilogue += line;
      continue;
    }
    if (bare === `${delim}--`) {
      if (cur !== null) parts.push(cur);
      cur = null;
      closed = true;
      continue;
    }
    if (bare === delim) {
      if (cur !== null) parts.push(cur);
      cur = "";
      continue;
    }
    if (cur === null) preamble += line;
    else cur += line;
  }
  if (cur !== null) parts.push(cur);
  if (parts.length === 0) return null;
  // The CRLF before a boundary belongs to the boundary (RFC 2046 §5.1.1).
  const trimmed = parts.map((p) => Buffer.from(p.replace(/\r?\n$/, ""), "latin1"));
  return { preamble: Buffer.from(preamble, "latin1"), parts: trimmed, epilogue: Buffer.from(epilogue, "latin1") };
}
