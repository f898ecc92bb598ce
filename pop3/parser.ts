/**
 * The POP3 input side, pure: bytes → lines → commands. No sockets, no state beyond the bytes of
 * an unfinished line, so it is tested on its own (test/pop3-parser.test.ts).
 *
 * Limits:
 * - RFC 2449 §4: a command line is at most 255 octets including the CRLF.
 * - RFC 5034 §4: SASL client responses are not bound by that limit; we accept lines up to
 *   `MAX_LINE` octets so a response line fits, and anything longer is an error for every line.
 */

/** RFC 2449 §4: "the maximum length of a command line is 255 octets, including the terminating CRLF". */
export const MAX_COMMAND_LINE = 255;
/** Hard limit for any line (SASL responses included), CRLF included. */
export const MAX_LINE = 8192;

export type LineEvent =
  /** A complete line without its line end. `octets` counts the line end too. */
  | { kind: "line"; line: Buffer; octets: number }
  /** A line that exceeded `maxLine`; its bytes are dropped up to the next LF. */
  | { kind: "too-long" };

/**
 * Splits a byte stream into lines ending in CRLF (a bare LF is accepted too, as Dovecot does).
 * Over-long lines are reported once and skipped to their end, so one bad line never takes the
 * following ones with it, and memory stays bounded by `maxLine`.
 */
export class LineSplitter {
  private parts: Buffer[] = [];
  private buffered = 0;
  private discarding = false;

  constructor(readonly maxLine: number = MAX_LINE) {}

  /** Bytes of an unfinished line held back. */
  get pending(): number {
    return this.buffered;
  }

  /** Forgets any partial line (STLS: plaintext received before the handshake must not survive). */
  reset(): void {
    this.parts = [];
    this.buffered = 0;
    this.discarding = false;
  }

  push(chunk: Uint8Array): LineEvent[] {
    const events: LineEvent[] = [];
    let data = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    while (data.length > 0) {
      const lf = data.indexOf(0x0a);
      if (lf < 0) {
        if (!this.discarding) {
          if (this.buffered + data.length >= this.maxLine) {
            // Cannot end within the limit any more (the LF alone would be one octet past it).
            events.push({ kind: "too-long" });
            this.discarding = true;
            this.parts = [];
            this.buffered = 0;
          } else {
            this.parts.push(Buffer.from(data)); // copy: the caller may reuse its buffer
            this.buffered += data.length;
          }
        }
        break;
      }
      const piece = data.subarray(0, lf);
      data = data.subarray(lf + 1);
      if (this.discarding) {
        this.discarding = false;
        continue;
      }
      const octets = this.buffered + piece.length + 1;
      if (octets > this.maxLine) {
        this.parts = [];
        this.buffered = 0;
        events.push({ kind: "too-long" });
        continue;
      }
      let line = this.parts.length > 0 ? Buffer.concat([...this.parts, piece]) : Buffer.from(piece);
      this.parts = [];
      this.buffered = 0;
      if (line.length > 0 && line[line.length - 1] === 0x0d) line = line.subarray(0, line.length - 1);
      events.push({ kind: "line", line, octets });
    }
    return events;
  }
}

export interface ParsedCommand {
  /** Upper-cased keyword. */
  name: string;
  /** Arguments split on spaces (RFC 1939 §3: separated by a single space; runs are tolerated). */
  args: string[];
  /** Everything after the keyword and its one space, verbatim (PASS takes passwords with spaces). */
  rest: string;
}

export type CommandParse = { ok: true; command: ParsedCommand } | { ok: false; error: string };

/**
 * A command line → keyword and arguments. RFC 1939 §3: keywords are three or four printable
 * ASCII characters, case-insensitive; arguments are printable text separated by spaces.
 */
export function parseCommand(line: Buffer, octets = line.length + 2): CommandParse {
  if (octets > MAX_COMMAND_LINE) return { ok: false, error: "Line too long." };
  if (line.length === 0) return { ok: false, error: "Unknown command." };
  const text = line.toString("utf8");
  const space = text.indexOf(" ");
  const keyword = space < 0 ? text : text.slice(0, space);
  if (!/^[A-Za-z]{3,4}$/.test(keyword)) return { ok: false, error: "Unknown command." };
  // Controls other than TAB are never valid in a command line (NUL, ESC, bare CR, ...).
  if (/[\x00-\x08\x0a-\x1f\x7f]/.test(text)) return { ok: false, error: "Invalid characters in command." };
  const rest = space < 0 ? "" : text.slice(space + 1);
  const trimmed = rest.replace(/ +$/, "");
  const args = trimmed === "" ? [] : trimmed.replace(/^ +/, "").split(/ +/);
  return { ok: true, command: { name: keyword.toUpperCase(), args, rest } };
}
