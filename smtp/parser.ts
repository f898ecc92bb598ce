/**
 * The SMTP input parser: command lines, and the DATA byte stream. Pure (no sockets), so both
 * are tested alone with exact byte sequences and fuzzed.
 *
 * DATA ends only on <CRLF>.<CRLF> (RFC 5321 §4.1.1.4): the "." must follow a real CRLF and be
 * followed by a real CRLF. A bare LF or bare CR anywhere (RFC 5321 §2.3.8 forbids both) is
 * normalised to CRLF inside the message and never ends it, so `\n.\n`, `\r.\r`, `\r\n.\n` and
 * `\n.\r\n` stay message content: no second message can be smuggled (Postfix's
 * `smtpd_forbid_bare_newline = normalize`). Dot-stuffing is undone only at real line starts.
 */

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const CRLF = Buffer.from("\r\n");
const DOT_ONLY = Buffer.from(".");
const DOT_CRLF = Buffer.from(".\r\n");

export const LINE_TOO_LONG = Symbol("line too long");

/**
 * Splits command input at LF (a CR before it is dropped; a bare LF ends a command line as well,
 * as Postfix accepts it). Lines longer than `maxLine` octets are reported once and skipped up to
 * their end, so a client can never make the buffer grow without bound.
 */
export class LineReader {
  private buf: Buffer | null = null;
  private skipping = false;

  constructor(public maxLine: number) {}

  append(chunk: Buffer): void {
    this.buf = this.buf && this.buf.length > 0 ? Buffer.concat([this.buf, chunk]) : chunk;
  }

  get buffered(): number {
    return this.buf?.length ?? 0;
  }

  /** The next complete line without its line end, null when none is complete yet. */
  next(): Buffer | null | typeof LINE_TOO_LONG {
    while (this.buf && this.buf.length > 0) {
      const lf = this.buf.indexOf(LF);
      if (lf < 0) {
        if (this.buf.length > this.maxLine) {
          // Drop what we have and keep dropping up to the next LF.
          this.buf = null;
          const wasSkipping = this.skipping;
          this.skipping = true;
          if (!wasSkipping) return LINE_TOO_LONG;
        }
        return null;
      }
      const end = lf > 0 && this.buf[lf - 1] === CR ? lf - 1 : lf;
      const line = this.buf.subarray(0, end);
      this.buf = lf + 1 < this.buf.length ? this.buf.subarray(lf + 1) : null;
      if (this.skipping) {
        this.skipping = false;
        continue;
      }
      if (line.length > this.maxLine) return LINE_TOO_LONG;
      return line;
    }
    return null;
  }

  /** Everything buffered and not yet returned (the start of DATA, or input to discard). */
  take(): Buffer | null {
    const rest = this.buf;
    this.buf = null;
    this.skipping = false;
    return rest && rest.length > 0 ? rest : null;
  }
}

enum S {
  /** At the start of a line that follows a real CRLF (or the start of DATA). */
  LineStart,
  /** Inside a line. */
  Mid,
  /** A CR is pending: CRLF if LF follows, else a bare CR. */
  Cr,
  /** A "." at a real line start is pending. */
  Dot,
  /** ".\r" at a real line start is pending: the terminator if LF follows. */
  DotCr,
}

export interface DataResult {
  /** The message with dot-stuffing undone and line ends normalised to CRLF. */
  data: Buffer;
  /** Bytes of the message (counted even past the size limit). */
  size: number;
  /** The message was larger than the limit; `data` is empty then. */
  oversized: boolean;
  /** Number of bare CR or LF line ends that were normalised. */
  bareLineEnds: number;
}

/**
 * Decodes the DATA stream. Feed it chunks with `push`; it returns the bytes that follow the
 * terminator once the terminator was seen (possibly an empty buffer), else null.
 */
export class DataDecoder {
  private state = S.LineStart;
  private parts: Buffer[] = [];
  private size = 0;
  private oversized = false;
  private bare = 0;
  private finished = false;

  constructor(private readonly maxSize: number) {}

  private emit(b: Buffer): void {
    if (b.length === 0) return;
    this.size += b.length;
    if (this.oversized) return;
    if (this.size > this.maxSize) {
      // Keep scanning for the terminator, but stop holding the message in memory.
      this.oversized = true;
      this.parts = [];
      return;
    }
    this.parts.push(b);
  }

  /** Bytes of message so far (for progress and limits). */
  get received(): number {
    return this.size;
  }

  push(chunk: Buffer): Buffer | null {
    if (this.finished) throw new Error("DataDecoder: push after the end of DATA");
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      switch (this.state) {
        case S.LineStart:
          if (chunk[i] === DOT) {
            this.state = S.Dot;
            i++;
          } else {
            this.state = S.Mid;
          }
          break;
        case S.Mid: {
          // Fast path: copy up to the next CR or LF in one slice.
          let j = i;
          while (j < n) {
            const c = chunk[j];
            if (c === CR || c === LF) break;
            j++;
          }
          if (j > i) this.emit(chunk.subarray(i, j));
          i = j;
          if (i >= n) break;
          if (chunk[i] === CR) {
            this.state = S.Cr;
          } else {
            // Bare LF: a line end in the message, never a place where DATA can end.
            this.emit(CRLF);
            this.bare++;
            this.state = S.Mid;
          }
          i++;
          break;
        }
        case S.Cr:
          if (chunk[i] === LF) {
            this.emit(CRLF);
            this.state = S.LineStart;
            i++;
          } else {
            // Bare CR (followed by anything, including another CR): normalise, not a line start.
            this.emit(CRLF);
            this.bare++;
            this.state = S.Mid;
          }
          break;
        case S.Dot:
          if (chunk[i] === CR) {
            this.state = S.DotCr;
            i++;
          } else if (chunk[i] === DOT) {
            // Dot-stuffing (RFC 5321 §4.5.2): ".." at a line start is one ".".
            this.emit(DOT_ONLY);
            this.state = S.Mid;
            i++;
          } else {
            // A lone "." followed by text or a bare LF: content; the LF is handled in Mid.
            this.emit(DOT_ONLY);
            this.state = S.Mid;
          }
          break;
        case S.DotCr:
          if (chunk[i] === LF) {
            this.finished = true;
            return chunk.subarray(i + 1);
          }
          // ".\r" + anything else: a "." line ended by a bare CR.
          this.emit(DOT_CRLF);
          this.bare++;
          this.state = S.Mid;
          if (chunk[i] === CR) {
            this.state = S.Cr;
            i++;
          }
          break;
      }
    }
    return null;
  }

  /** The decoded message; only after `push` returned non-null. */
  result(): DataResult {
    if (!this.finished) throw new Error("DataDecoder: DATA has not ended");
    return {
      data: this.oversized ? Buffer.alloc(0) : Buffer.concat(this.parts, this.size),
      size: this.size,
      oversized: this.oversized,
      bareLineEnds: this.bare,
    };
  }
}
