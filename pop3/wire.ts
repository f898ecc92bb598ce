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
 * message lacks one, and the ".CRLF" terminator follows.
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
