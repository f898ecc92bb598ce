/**
 * The IMAP command reader: pure code, no sockets. Two layers, as in WildDuck's imap-core:
 *
 *  - `Framer` cuts the byte stream into whole commands. A command is one or more lines joined by
 *    literals (`{n}` synchronizing, `{n+}` non-synchronizing, RFC 7888; `~{n}` literal8, RFC 3516).
 *    It enforces line and literal limits and tells the session when to send `+` for a
 *    synchronizing literal. It never buffers more than the limits allow.
 *  - `parseCommand` turns one framed command into a tag, a command name and a token tree
 *    (atoms, strings, lists, and `BODY[section]<partial>` forms), per RFC 3501 §9 / RFC 9051 §9.
 *
 * Command-specific grammar (sequence sets, fetch items, search keys) is checked by the command
 * modules on top of this token tree.
 */

/** One framed command: line text segments, each but the last ending in a literal marker. */
export interface Frame {
  segments: Buffer[];
  literals: Buffer[];
}

export interface FramerLimits {
  /** Longest line (one segment, without literal data). */
  maxLine: number;
  /** Largest literal, and largest sum of literals in one command. */
  maxLiteral: number;
  /**
   * Largest non-synchronizing literal the framer will read (4096 under LITERAL-, RFC 7888 §5).
   * One above `maxLiteral` but within this is refused and its bytes skipped unread; one above
   * this cannot be skipped safely and is fatal.
   */
  maxNonSync: number;
  /** Most literals in one command. */
  maxLiterals: number;
}

export type FramerEvent =
  | { type: "command"; frame: Frame }
  /** A synchronizing literal was announced and accepted: send `+ ...`. */
  | { type: "continue"; size: number }
  /** The command was refused while it was being read; answer the tag (or `*`) and carry on. */
  | { type: "reject"; tag: string | null; status: "NO" | "BAD"; code?: string; text: string }
  /** The stream cannot be resynchronized safely (data of a refused literal is on its way): close. */
  | { type: "fatal"; tag: string | null; text: string }
  /** A raw continuation line (AUTHENTICATE response, IDLE's DONE), read in `rawLine` mode. */
  | { type: "line"; line: Buffer };

const LITERAL_RE = /(~?)\{(\d{1,20})(\+?)\}$/;

export class Framer {
  private limits: FramerLimits;
  private lineChunks: Buffer[] = [];
  private lineLength = 0;
  private segments: Buffer[] = [];
  private literals: Buffer[] = [];
  private literalTotal = 0;
  /** Bytes of literal still to read (mode "literal"). */
  private literalLeft = 0;
  private literalChunks: Buffer[] = [];
  private mode: "line" | "literal" = "line";
  /** The command is refused; read to its end without keeping anything. */
  private discarding = false;
  /** While discarding a too-long line: its last bytes, to see whether a literal follows. */
  private tail = "";
  private tag: string | null = null;
  /** When set, the next line is handed over raw (no literal markers) as a `line` event. */
  rawLine = false;

  constructor(limits: FramerLimits) {
    this.limits = { ...limits };
  }

  setLimits(limits: FramerLimits): void {
    this.limits = { ...limits };
  }

  /** Throws away everything buffered, e.g. the plaintext after STARTTLS. */
  reset(): void {
    this.lineChunks = [];
    this.lineLength = 0;
    this.segments = [];
    this.literals = [];
    this.literalTotal = 0;
    this.literalLeft = 0;
    this.literalChunks = [];
    this.mode = "line";
    this.discarding = false;
    this.tail = "";
    this.tag = null;
  }

  /** Bytes currently held (for tests and accounting). */
  get buffered(): number {
    return this.lineLength + this.literalTotal + this.literalChunks.reduce((a, b) => a + b.length, 0);
  }

  /**
   * Feeds bytes and returns what they completed. `stopAfter` lets the caller stop at the first
   * command (STARTTLS must not see what follows it); the rest is returned as `rest`.
   */
  push(chunk: Buffer, stopAfter?: (e: FramerEvent) => boolean): { events: FramerEvent[]; rest: Buffer | null } {
    const events: FramerEvent[] = [];
    let pos = 0;
    while (pos < chunk.length) {
      if (this.mode === "literal") {
        const take = Math.min(this.literalLeft, chunk.length - pos);
        if (!this.discarding) this.literalChunks.push(chunk.subarray(pos, pos + take));
        pos += take;
        this.literalLeft -= take;
        if (this.literalLeft === 0) {
          if (!this.discarding) {
            const lit = Buffer.concat(this.literalChunks);
            this.literals.push(lit);
          }
          this.literalChunks = [];
          this.mode = "line";
        }
        continue;
      }
      const nl = chunk.indexOf(0x0a, pos);
      const end = nl < 0 ? chunk.length : nl;
      const piece = chunk.subarray(pos, end);
      pos = nl < 0 ? chunk.length : nl + 1;
      if (this.discarding) {
        this.tail = tailOf(this.tail + piece.toString("latin1"));
      } else if (this.lineLength + piece.length > this.limits.maxLine) {
        // Too long: answer now, then skip to the end of the line.
        if (this.segments.length === 0 && !this.rawLine) this.tag = extractTag(Buffer.concat([...this.lineChunks, piece]));
        events.push({ type: "reject", tag: this.rawLine ? null : this.tag, status: "BAD", code: "TOOBIG", text: "Line too long" });
        this.discarding = true;
        this.tail = tailOf(Buffer.concat([...this.lineChunks.slice(-2), piece]).toString("latin1"));
        this.lineChunks = [];
        this.lineLength = 0;
      } else {
        this.lineChunks.push(piece);
        this.lineLength += piece.length;
      }
      if (nl < 0) break;
      // A whole line.
      const ev = this.endOfLine();
      if (ev) {
        events.push(ev);
        if (stopAfter?.(ev)) return { events, rest: pos < chunk.length ? chunk.subarray(pos) : null };
        if (ev.type === "fatal") return { events, rest: null };
      }
    }
    return { events, rest: null };
  }

  private endOfLine(): FramerEvent | null {
    let line: Buffer;
    if (this.discarding && this.lineLength === 0) {
      line = Buffer.from(this.tail, "latin1");
    } else {
      line = this.lineChunks.length === 1 ? this.lineChunks[0]! : Buffer.concat(this.lineChunks, this.lineLength);
    }
    this.lineChunks = [];
    this.lineLength = 0;
    this.tail = "";
    if (line.length > 0 && line[line.length - 1] === 0x0d) line = line.subarray(0, line.length - 1);

    if (this.rawLine) {
      this.rawLine = false;
      if (this.discarding) {
        this.finish();
        return null;
      }
      return { type: "line", line };
    }
    // An empty line between commands is ignored (as Dovecot does).
    if (this.segments.length === 0 && !this.discarding && line.length === 0) return null;
    if (this.segments.length === 0 && !this.discarding) this.tag = extractTag(line);
    const m = LITERAL_RE.exec(line.subarray(Math.max(0, line.length - 26)).toString("latin1"));
    if (!m) {
      // The command is complete.
      if (this.discarding) {
        this.finish();
        return null;
      }
      this.segments.push(line);
      const frame: Frame = { segments: this.segments, literals: this.literals };
      this.finish();
      return { type: "command", frame };
    }
    const size = Number(m[2]);
    const nonSync = m[3] === "+";
    if (!this.discarding) this.segments.push(line);
    if (nonSync) {
      if (size > this.limits.maxNonSync) {
        // The data is on its way and more than we agreed to read; we cannot find the next
        // command safely.
        const tag = this.tag;
        this.finish();
        return { type: "fatal", tag, text: `Non-synchronizing literal too big (${size} bytes)` };
      }
      if (this.discarding) {
        // The command is already refused: skip these bytes (their number is known) unread.
        this.skipLiteral(size);
        return null;
      }
      if (this.literalTotal + size > this.limits.maxLiteral) {
        const tag = this.tag;
        this.discarding = true;
        this.segments = [];
        this.literals = [];
        this.skipLiteral(size);
        return { type: "reject", tag, status: "NO", code: "TOOBIG", text: `Literal too big (${size} bytes)` };
      }
    } else {
      if (this.discarding) {
        // The client waits for "+" that never comes; it has our tagged answer already.
        this.finish();
        return null;
      }
      if (size > this.limits.maxLiteral || this.literalTotal + size > this.limits.maxLiteral) {
        const tag = this.tag;
        this.finish();
        return { type: "reject", tag, status: "NO", code: "TOOBIG", text: `Literal too big (${size} bytes)` };
      }
    }
    if (this.literals.length + 1 > this.limits.maxLiterals) {
      const tag = this.tag;
      if (nonSync) {
        this.finish();
        return { type: "fatal", tag, text: "Too many literals" };
      }
      this.finish();
      return { type: "reject", tag, status: "BAD", text: "Too many literals" };
    }
    this.literalTotal += size;
    this.literalLeft = size;
    if (size === 0) {
      this.literals.push(Buffer.alloc(0));
    } else {
      this.mode = "literal";
    }
    return nonSync ? null : { type: "continue", size };
  }

  /** Reads the next `size` bytes as literal data without keeping them (discarding mode). */
  private skipLiteral(size: number): void {
    this.literalLeft = size;
    if (size > 0) this.mode = "literal";
  }

  private finish(): void {
    this.segments = [];
    this.literals = [];
    this.literalTotal = 0;
    this.discarding = false;
    this.tag = null;
  }
}

function tailOf(s: string): string {
  return s.length > 40 ? s.slice(-40) : s;
}

/** The tag of a command line, if it has a plausible one. */
export function extractTag(line: Buffer): string | null {
  const sp = line.indexOf(0x20);
  const t = line.subarray(0, sp < 0 ? Math.min(line.length, 64) : Math.min(sp, 64)).toString("latin1");
  return isValidTag(t) ? t : null;
}

export function isValidTag(t: string): boolean {
  return /^[\x21\x23\x24\x26\x27\x2c-\x5b\x5d-\x7a\x7c\x7e]+$/.test(t) && !t.includes("+");
}

// ---------------------------------------------------------------------------------------------
// Tokens

export interface AtomToken {
  type: "atom";
  value: string;
  /** `BODY[...]`: the tokens between the brackets. */
  section?: Token[];
  /** `<start.length>` after a section (RFC 3501 fetch-att). */
  partial?: { start: number; length?: number };
}
export interface StringToken {
  type: "string";
  value: Buffer;
  literal: boolean;
  /** A literal8 (`~{n}`, RFC 3516). */
  binary?: boolean;
}
export interface ListToken {
  type: "list";
  items: Token[];
}
export type Token = AtomToken | StringToken | ListToken;

export interface Command {
  tag: string;
  /** Upper-cased command name; `UID FETCH` etc. for the UID forms. */
  name: string;
  args: Token[];
}

export class ParseError extends Error {
  constructor(
    message: string,
    readonly tag: string | null = null,
  ) {
    super(message);
    this.name = "ParseError";
  }
}

/** Atoms that may be followed directly by `[section]` (RFC 3501 fetch-att, RFC 3516). */
const SECTION_ATOMS = new Set(["BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"]);

const SP = 0x20;

class Tokenizer {
  private seg = 0;
  private pos = 0;
  private lit = 0;

  constructor(private readonly frame: Frame) {}

  private get line(): Buffer {
    return this.frame.segments[this.seg]!;
  }

  atEnd(): boolean {
    return this.seg === this.frame.segments.length - 1 && this.pos >= this.line.length;
  }

  peek(): number {
    return this.pos < this.line.length ? this.line[this.pos]! : -1;
  }

  expectSpace(): void {
    if (this.peek() !== SP) throw new ParseError("Expected a space");
    this.pos++;
  }

  /** Reads tokens until `)` (inside a list) or the end, each separated by one space. */
  readList(closing: number): Token[] {
    const items: Token[] = [];
    let first = true;
    for (;;) {
      const c = this.peek();
      if (c === closing && closing !== -1) {
        this.pos++;
        return items;
      }
      if (c === -1 && this.seg === this.frame.segments.length - 1) {
        if (closing === -1) return items;
        throw new ParseError("Unexpected end of command, expected ')'");
      }
      if (!first) {
        this.expectSpace();
        if (this.peek() === closing && closing !== -1) throw new ParseError("Unexpected space before ')'");
      }
      first = false;
      items.push(this.readToken(closing));
    }
  }

  readToken(closing: number): Token {
    const c = this.peek();
    if (c === 0x28 /* ( */) {
      this.pos++;
      return { type: "list", items: this.readList(0x29) };
    }
    if (c === 0x22 /* " */) return this.readQuoted();
    if (c === 0x7b /* { */ || (c === 0x7e /* ~ */ && this.line[this.pos + 1] === 0x7b)) return this.readLiteral();
    if (c === -1) throw new ParseError("Missing argument");
    return this.readAtom(closing);
  }

  private readQuoted(): StringToken {
    const line = this.line;
    let i = this.pos + 1;
    const out: number[] = [];
    for (;;) {
      if (i >= line.length) throw new ParseError("Unterminated quoted string");
      const b = line[i]!;
      if (b === 0x22) break;
      if (b === 0x5c /* \ */) {
        const n = line[i + 1];
        if (n !== 0x22 && n !== 0x5c) throw new ParseError("Invalid escape in quoted string");
        out.push(n);
        i += 2;
        continue;
      }
      if (b === 0x00 || b === 0x0d || b === 0x0a) throw new ParseError("Invalid character in quoted string");
      out.push(b);
      i++;
    }
    this.pos = i + 1;
    return { type: "string", value: Buffer.from(out), literal: false };
  }

  private readLiteral(): StringToken {
    const rest = this.line.subarray(this.pos).toString("latin1");
    const m = /^(~?)\{(\d{1,20})\+?\}$/.exec(rest);
    if (!m || this.seg >= this.frame.segments.length - 1) throw new ParseError("Invalid literal");
    const value = this.frame.literals[this.lit];
    if (value === undefined || value.length !== Number(m[2])) throw new ParseError("Invalid literal");
    this.lit++;
    this.seg++;
    this.pos = 0;
    const tok: StringToken = { type: "string", value, literal: true };
    if (m[1] === "~") tok.binary = true;
    return tok;
  }

  private readAtom(closing: number): AtomToken {
    const line = this.line;
    const start = this.pos;
    let i = start;
    for (; i < line.length; i++) {
      const b = line[i]!;
      if (b === SP || b === 0x28 || b === 0x29) break;
      if (b === 0x5d /* ] */ && closing === 0x5d) break;
      if (b === 0x5b /* [ */ && SECTION_ATOMS.has(line.toString("latin1", start, i).toUpperCase())) break;
      if (b < 0x20 || b === 0x7f || b === 0x22 || b === 0x7b) throw new ParseError("Invalid character in atom");
    }
    if (i === start) throw new ParseError("Empty atom");
    const atom: AtomToken = { type: "atom", value: line.toString("utf8", start, i) };
    this.pos = i;
    if (line[i] === 0x5b) {
      this.pos++;
      atom.section = this.readList(0x5d);
      if (line[this.pos] === 0x3c /* < */) {
        const m = /^<(\d{1,10})(?:\.(\d{1,10}))?>/.exec(line.toString("latin1", this.pos, this.pos + 25));
        if (!m) throw new ParseError("Invalid partial");
        atom.partial = { start: Number(m[1]) };
        if (m[2] !== undefined) atom.partial.length = Number(m[2]);
        this.pos += m[0].length;
      }
    }
    return atom;
  }

  /** The command tag and name. */
  readHead(): { tag: string; name: string } {
    const line = this.line;
    let sp = line.indexOf(SP);
    if (sp < 0) sp = line.length;
    const tag = line.toString("latin1", 0, sp);
    if (!isValidTag(tag)) throw new ParseError("Invalid tag");
    this.pos = sp;
    if (this.peek() !== SP) throw new ParseError("Missing command", tag);
    this.pos++;
    let name = this.readWord(tag);
    if (name === "UID") {
      if (this.peek() !== SP) throw new ParseError("Missing command after UID", tag);
      this.pos++;
      name = `UID ${this.readWord(tag)}`;
    }
    return { tag, name };
  }

  private readWord(tag: string): string {
    const line = this.line;
    const start = this.pos;
    let i = start;
    while (i < line.length && line[i] !== SP) {
      const b = line[i]!;
      if (!((b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) || b === 0x2d || b === 0x2e || b === 0x5f))
        throw new ParseError("Invalid command name", tag);
      i++;
    }
    if (i === start) throw new ParseError("Missing command", tag);
    this.pos = i;
    return line.toString("latin1", start, i).toUpperCase();
  }
}

/** Parses a framed command. Throws `ParseError` (with the tag when it was readable). */
export function parseCommand(frame: Frame): Command {
  const t = new Tokenizer(frame);
  const head = t.readHead();
  try {
    let args: Token[] = [];
    if (!t.atEnd()) {
      t.expectSpace();
      args = t.readList(-1);
    }
    return { tag: head.tag, name: head.name, args };
  } catch (err) {
    if (err instanceof ParseError) throw new ParseError(err.message, head.tag);
    throw err;
  }
}

/** Convenience for tests: a whole command as one buffer with its literals inline. */
export function frameFromBytes(data: Buffer | string): Frame[] {
  const f = new Framer({ maxLine: 1 << 20, maxLiteral: 1 << 26, maxNonSync: 1 << 26, maxLiterals: 1000 });
  const { events } = f.push(Buffer.isBuffer(data) ? data : Buffer.from(data, "utf8"));
  return events.filter((e): e is { type: "command"; frame: Frame } => e.type === "command").map((e) => e.frame);
}

// ---------------------------------------------------------------------------------------------
// Token helpers used by the argument checker and the commands

export function isAtom(t: Token | undefined, value?: string): t is AtomToken {
  return t !== undefined && t.type === "atom" && t.section === undefined && (value === undefined || t.value.toUpperCase() === value);
}

/** astring / string / atom as text (UTF-8). */
export function tokenText(t: Token): string | null {
  if (t.type === "atom") return t.section === undefined ? t.value : null;
  if (t.type === "string") return t.value.toString("utf8");
  return null;
}

export function tokenBytes(t: Token): Buffer | null {
  if (t.type === "atom") return t.section === undefined ? Buffer.from(t.value, "utf8") : null;
  if (t.type === "string") return t.value;
  return null;
}

export function isNil(t: Token | undefined): boolean {
  return t !== undefined && t.type === "atom" && t.section === undefined && t.value.toUpperCase() === "NIL";
}
