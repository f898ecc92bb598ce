/**
 * SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 2034, RFC 3463). Handlers return
 * or throw a `Reply`; the session writes it. An error carries its own reply code, as mox's
 * smtpserver errors do, so policy code never formats protocol text itself.
 */

export class Reply {
  constructor(
    /** Three-digit reply code. */
    readonly code: number,
    /** RFC 3463 enhanced status code (`2.1.0`), or "" where none is sent (greeting, EHLO). */
    readonly status: string,
    /** One or more text lines. */
    readonly lines: string | readonly string[],
    /** Close the connection after sending (421, 221, 521). */
    readonly close = false,
  ) {}

  get isError(): boolean {
    return this.code >= 400;
  }

  /** Wire form: each line `code-status text`, the last with a space after the code, CRLF-ended. */
  toString(): string {
    const lines = typeof this.lines === "string" ? [this.lines] : this.lines;
    const prefix = this.status ? `${this.status} ` : "";
    let out = "";
    lines.forEach((line, i) => {
      // A reply line never carries control characters: it may echo client input.
      const text = line.replace(/[\x00-\x1f\x7f]/g, " ");
      out += `${this.code}${i < lines.length - 1 ? "-" : " "}${prefix}${text}\r\n`;
    });
    return out;
  }
}

/** A reply thrown by a handler or policy check (4xx/5xx). */
export class SmtpError extends Error {
  readonly reply: Reply;
  constructor(code: number, status: string, text: string, close = false) {
    super(`${code} ${status} ${text}`);
    this.name = "SmtpError";
    this.reply = new Reply(code, status, text, close);
  }
}

export const reply = (code: number, status: string, text: string | readonly string[], close = false) =>
  new Reply(code, status, text, close);

/** Replies used from more than one place. */
export const R = {
  ok: () => reply(250, "2.0.0", "Ok"),
  badSequence: (text = "Error: bad sequence of commands") => reply(503, "5.5.1", text),
  syntax: (text = "Error: syntax error") => reply(501, "5.5.4", text),
  notRecognized: () => reply(500, "5.5.2", "Error: command not recognized"),
  lineTooLong: () => reply(500, "5.5.2", "Error: line too long"),
  tooManyErrors: (host: string) => reply(421, "4.7.0", `${host} Error: too many errors`, true),
  timeout: (host: string) => reply(421, "4.4.2", `${host} Error: timeout exceeded`, true),
  shuttingDown: (host: string) => reply(421, "4.3.2", `${host} Service shutting down, closing transmission channel`, true),
  needHelo: () => reply(503, "5.5.1", "Error: send HELO/EHLO first"),
  needTls: () => reply(530, "5.7.0", "Must issue a STARTTLS command first"),
  needAuth: () => reply(530, "5.7.0", "Authentication required"),
  /** A mailbox at or over its quota (RFC 3463 X.2.2), as Postfix virtual and Dovecot LMTP answer. */
  mailboxFull: (address: string) => reply(552, "5.2.2", `<${address}>: Mailbox full`),
  tempFailure: () => reply(451, "4.3.0", "Error: temporary failure storing the message, try again later"),
} as const;
