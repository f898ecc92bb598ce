/**
 * Trace headers (RFC 5321 §4.4): `Received:` on every message we accept and `Return-Path:` on
 * final delivery; and the hop count that stops mail loops (RFC 5321 §6.3).
 */

export interface ReceivedInfo {
  /** HELO/EHLO argument as the client gave it. */
  helo: string;
  /** Forward-confirmed reverse name of the client, or null. */
  clientName: string | null;
  clientAddress: string;
  /** Our host name. */
  by: string;
  /** `SMTP`, `ESMTP`, `ESMTPS`, `ESMTPA`, `ESMTPSA`, `UTF8SMTPS`, ... (RFC 3848, RFC 6531). */
  protocol: string;
  queueId: string;
  /** TLS version and cipher, when the session is encrypted. */
  tls?: { version: string; cipher: string };
  /** The one recipient, when there is exactly one (more would disclose Bcc recipients). */
  for?: string;
  date?: Date;
}

/** RFC 5322 date-time (`Tue, 01 Jul 2025 12:00:00 +0000`). */
export function rfc5322Date(d: Date): string {
  return d.toUTCString().replace(/GMT$/, "+0000");
}

/** Client-supplied text inside a header comment: printable, no parentheses or backslashes. */
function clean(s: string, max = 255): string {
  const out = s.replace(/[^\x21-\x7e]/g, "?").replace(/[()\\]/g, "?");
  return out.length > max ? `${out.slice(0, max)}...` : out;
}

export function receivedHeader(r: ReceivedInfo): string {
  const addr = r.clientAddress.includes(":") ? `IPv6:${r.clientAddress}` : r.clientAddress;
  const lines = [`Received: from ${clean(r.helo) || "unknown"} (${r.clientName ? clean(r.clientName) : "unknown"} [${addr}])`];
  if (r.tls) lines.push(`\t(using ${clean(r.tls.version)} with cipher ${clean(r.tls.cipher)})`);
  lines.push(`\tby ${r.by} (mailstack) with ${r.protocol} id ${r.queueId}`);
  if (r.for) lines.push(`\tfor <${clean(r.for, 512)}>; ${rfc5322Date(r.date ?? new Date())}`);
  else lines[lines.length - 1] += `; ${rfc5322Date(r.date ?? new Date())}`;
  return `${lines.join("\r\n")}\r\n`;
}

export function returnPathHeader(sender: string): string {
  return `Return-Path: <${sender.replace(/[\x00-\x1f\x7f<>]/g, "")}>\r\n`;
}

/** Calls `fn` with the name of each header field in the header section (not the body). */
function eachFieldName(data: Buffer, fn: (lowerName: string) => void): void {
  let pos = 0;
  while (pos < data.length) {
    // An empty line ends the header section.
    if (data[pos] === 0x0d && data[pos + 1] === 0x0a) break;
    if (data[pos] === 0x0a) break;
    const nl = data.indexOf(0x0a, pos);
    const end = nl < 0 ? data.length : nl;
    // Continuation lines start with whitespace and name no field.
    if (data[pos] !== 0x20 && data[pos] !== 0x09) {
      const colon = data.indexOf(0x3a, pos);
      if (colon > pos && colon < end) fn(data.toString("latin1", pos, colon).trim().toLowerCase());
    }
    if (nl < 0) break;
    pos = nl + 1;
  }
}

/** How many `Received:` header fields the message already has (header section only). */
export function countReceived(data: Buffer): number {
  let count = 0;
  eachFieldName(data, (n) => {
    if (n === "received") count++;
  });
  return count;
}

/**
 * For mail from authenticated submission clients: the `Date:` and `Message-ID:` fields a
 * message must have (RFC 5322 §3.6) when the client left them out (RFC 6409 §8.2, §8.3).
 */
export function missingSubmissionHeaders(data: Buffer, queueId: string, hostname: string, now = new Date()): string {
  let date = false;
  let id = false;
  eachFieldName(data, (n) => {
    if (n === "date") date = true;
    else if (n === "message-id") id = true;
  });
  return `${date ? "" : `Date: ${rfc5322Date(now)}\r\n`}${id ? "" : `Message-ID: <${queueId}@${hostname}>\r\n`}`;
}
