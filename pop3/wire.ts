/**
 * The POP3 output side, pure: status lines, multi-line responses and message bodies as they go
 * on the wire (RFC 1939 §3: dot-stuffing and the terminating "." line).
 */

const CRLF = Buffer.from("\r\n");
const TERMINATOR = Buffer.from(".\r\n");
const DOT = Buffer.from(".");
const LF_DOT = Buffer.from("\n.");

/** RFC 2449 §8 / RFC 3206 response codes we use. */
export type RespCode = "AUTH" | "IN-USE" | "SYS/TEMP" | "SYS/PERM" | "LOGIN-DELAY";

/** A failure that carries its reply (mox style: errors know their response code). */
export class Pop3Error extends Error {
  constructor(
    message: string,
    readonly code?: RespCode,
  ) {
    super(message);
    this.name = "Pop3Error";
  }
}

export function ok(text: string): string {
  return text === "" ? "+OK\r\n" : `+OK ${text}\r\n`;
}

export function err(text: string, code?: RespCode): string {
  return `-ERR ${code ? `[${code}] ` : ""}${text}\r\n`;
}

/** A multi-line response whose lines are protocol text (CAPA, LIST, UIDL): stuffed and terminated. */
export function multiline(first: string, lines: readonly string[]): string {
  let out = ok(first);
  for (const l of lines) out += `${l.startsWith(".") ? "." : ""}${l}\r\n`;
  return `${out}.\r\n`;
}

/**
 * A message (CRLF line ends, as Mailbox.read gives it) as the body of a multi-line response:
 * every line that starts with "." gets another "." in front, a final CRLF is added when the
 * message lacks one, and the ".CRLF" terminator follows. The plain statement of the rule: RETR
 * and TOP send through BodyEncoder, which the tests hold to the same bytes.
 */
export function dotStuff(message: Buffer): Buffer {
  const chunks: Buffer[] = [];
  // Lines start at offset 0 and after every LF; only those starting with "." cost anything.
  if (message.length > 0 && message[0] === 0x2e) chunks.push(DOT);
  let start = 0;
  for (let i = message.indexOf(LF_DOT); i >= 0; i = message.indexOf(LF_DOT, i + 2)) {
    chunks.push(message.subarray(start, i + 1), DOT);
    start = i + 1;
  }
  chunks.push(message.subarray(start));
  const endsWithCrlf = message.length >= 2 && message[message.length - 2] === 0x0d && message[message.length - 1] === 0x0a;
  if (message.length > 0 && !endsWithCrlf) {
    // A lone trailing LF is turned into CRLF; anything else gets one appended.
    if (message[message.length - 1] === 0x0a) {
      const last = chunks.pop()!;
      chunks.push(last.subarray(0, last.length - 1), CRLF);
    } else chunks.push(CRLF);
  }
  chunks.push(TERMINATOR);
  return Buffer.concat(chunks);
}

const CR = 0x0d;
const LF = 0x0a;
const DOT_BYTE = 0x2e;

/**
 * A message as the body of a multi-line response, for bytes that come in one piece or in chunks
 * (RETR streams large messages from the file). The same output as `dotStuff(toCrlf(message))`:
 *
 * - with `convertLf`, every bare LF becomes CRLF (Maildirs Dovecot wrote have LF line ends);
 *   without it the caller vouches that the bytes have CRLF line ends only (the Maildir name
 *   says so: S= equals W=), and only the "\n." pairs are looked for, with one search;
 * - a line that starts with "." gets another "." (also when the "\n" and the "." are in two
 *   chunks);
 * - `finish()` ends an unterminated last line with CRLF and adds the ".CRLF" terminator.
 *
 * Nothing is split into lines or strings: the bytes are searched with `indexOf` (memchr) and
 * copied in runs; lines that need nothing are not touched one by one.
 */
export class BodyEncoder {
  /** Octets of the message with CRLF line ends so far (RETR's "+OK n octets"; stuffing not counted). */
  octets = 0;
  private lineStart = true;
  private prevCR = false;
  private last = -1;

  constructor(readonly convertLf = true) {}

  /** Most bytes `encode()` writes for `n` input bytes (a byte becomes at most two). */
  static maxEncoded(n: number): number {
    return 2 * n;
  }

  /** Most bytes `finish()` writes. */
  static readonly MAX_FINISH = 5;

  /** Encodes `src` into `out` at `o` (room for `maxEncoded(src.length)` bytes). Returns the new end. */
  encode(src: Uint8Array, out: Buffer, o: number): number {
    const end = src.length;
    if (end === 0) return o;
    const data = src instanceof Buffer ? src : Buffer.from(src.buffer, src.byteOffset, src.byteLength);
    let from = 0;
    if (this.lineStart && data[0] === DOT_BYTE) out[o++] = DOT_BYTE;
    if (this.convertLf) {
      const prevCR = this.prevCR;
      for (let lf = data.indexOf(LF); lf >= 0; lf = data.indexOf(LF, lf + 1)) {
        const cr = lf > 0 ? data[lf - 1] === CR : prevCR;
        const dot = lf + 1 < end && data[lf + 1] === DOT_BYTE;
        if (cr && !dot) continue;
        o += data.copy(out, o, from, lf);
        if (!cr) {
          out[o++] = CR;
          this.octets++;
        }
        out[o++] = LF;
        if (dot) out[o++] = DOT_BYTE;
        from = lf + 1;
      }
    } else {
      for (let i = data.indexOf(LF_DOT); i >= 0; i = data.indexOf(LF_DOT, i + 2)) {
        o += data.copy(out, o, from, i + 1);
        out[o++] = DOT_BYTE;
        from = i + 1;
      }
    }
    o += data.copy(out, o, from, end);
    const last = data[end - 1]!;
    this.lineStart = last === LF;
    this.prevCR = last === CR;
    this.last = last;
    this.octets += end;
    return o;
  }

  /** Ends the last line if the message did not, and writes the terminator. Returns the new end. */
  finish(out: Buffer, o: number): number {
    if (this.octets > 0 && this.last !== LF) {
      out[o++] = CR;
      out[o++] = LF;
    }
    out[o++] = DOT_BYTE;
    out[o++] = CR;
    out[o++] = LF;
    return o;
  }
}

/**
 * A complete RETR/TOP response in one buffer: "+OK " and `statusText(octets)` (octets: the
 * message's CRLF size), then the encoded message and the terminator. Written into `scratch` when
 * it has `responseBound()` bytes (callers reuse buffers between responses), else into a new one.
 */
export function encodeResponse(
  message: Uint8Array,
  convertLf: boolean,
  statusText: (octets: number) => string,
  scratch?: Buffer | null,
): Buffer {
  // The status line needs the octet count, so it is written last, into room left before the body.
  const need = responseBound(message.length);
  const out = scratch && scratch.length >= need ? scratch : Buffer.allocUnsafeSlow(need);
  const enc = new BodyEncoder(convertLf);
  const end = enc.finish(out, enc.encode(message, out, STATUS_ROOM));
  const status = ok(statusText(enc.octets));
  const start = STATUS_ROOM - status.length;
  if (start < 0) throw new Error("status line too long");
  out.write(status, start, "latin1");
  return out.subarray(start, end);
}

/** Room for the status line of an encoded response ("+OK 4294967295 octets\r\n" is 23 bytes). */
const STATUS_ROOM = 48;

/** Size a buffer needs for `encodeResponse` of a message of `n` bytes. */
export function responseBound(n: number): number {
  return STATUS_ROOM + BodyEncoder.maxEncoded(n) + BodyEncoder.MAX_FINISH;
}

/**
 * RFC 1939 §7 TOP: the header, the blank line after it, and the first `lines` lines of the body.
 * A message without a blank line is all header. More lines than the body has give the whole
 * message.
 */
export function topOf(message: Buffer, lines: number): Buffer {
  let bodyStart: number;
  if (message.length >= 2 && message[0] === 0x0d && message[1] === 0x0a) bodyStart = 2;
  else {
    const sep = message.indexOf("\r\n\r\n");
    if (sep < 0) return message;
    bodyStart = sep + 4;
  }
  let end = bodyStart;
  for (let i = 0; i < lines; i++) {
    if (end >= message.length) return message;
    const lf = message.indexOf(0x0a, end);
    if (lf < 0) return message;
    end = lf + 1;
  }
  return message.subarray(0, end);
}

/**
 * Dovecot's default POP3 UIDL format, `pop3_uidl_format = %08Xu%08Xv`: the IMAP UID and the
 * folder's UIDVALIDITY, each as eight hex digits. Dovecot's `%X` prints lower-case hex
 * (Dovecot 2.3 answers `1 000000016b0a8ced`), so we do too: a maildrop moved from Dovecot keeps
 * its UIDLs and clients do not download everything again. Stable across sessions and restarts,
 * and it agrees with the UIDs IMAP reports.
 */
export function uidl(uid: number, uidValidity: number): string {
  const hex = (n: number) => (n >>> 0).toString(16).padStart(8, "0");
  return `${hex(uid)}${hex(uidValidity)}`;
}
