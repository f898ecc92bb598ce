/**
 * The SMTP client side of the queue: one session to one next hop, carrying one or more
 * transactions (connection reuse), built on nodemailer's SMTPConnection.
 *
 * - Opportunistic STARTTLS without certificate checks (Postfix's `smtp_tls_security_level = may`);
 *   a failed TLS handshake is retried once in plaintext, as Postfix does.
 * - PIPELINING when offered (SMTPConnection sends MAIL, RCPTs and DATA in one batch).
 * - Dot-stuffing and CRLF line ends (SMTPConnection's DataStream).
 * - 8BITMIME / SMTPUTF8 honesty: 8-bit data only to a server that offered 8BITMIME (otherwise
 *   the body is downgraded to quoted-printable, RFC 6152 §3), non-ASCII addresses only with SMTPUTF8.
 * - Per-recipient results: 2xx delivered, 4xx deferred, 5xx bounced.
 */
import { isIP } from "node:net";
import SMTPConnection from "nodemailer/lib/smtp-connection";
import { downgrade8bit } from "./mime";
import type { Hop } from "./nexthop";

export interface RecipientResult {
  address: string;
  outcome: "delivered" | "deferred" | "failed";
  /** RFC 3463 enhanced status, e.g. `2.0.0`, `4.4.1`, `5.1.1`. */
  status: string;
  /** The server's reply (or our own explanation). */
  response: string;
  /** True when `response` is the remote server's SMTP reply. */
  fromServer: boolean;
  remoteMta?: string;
}

export interface OutboundMessage {
  from: string;
  recipients: string[];
  data: Buffer;
  eightBit: boolean;
  eightBitHeaders: boolean;
}

export interface SessionOptions {
  /** EHLO name (config.hostname). */
  heloName: string;
  /** Source address to bind, if any (same family only). */
  localAddress?: string;
  auth?: { user: string; pass: string };
  /** Implicit TLS (port 465 relayhosts). */
  secure?: boolean;
  connectTimeoutMs?: number;
  commandTimeoutMs?: number;
}

export class SessionError extends Error {
  constructor(
    message: string,
    /** "permanent": a 5xx that speaks for the whole destination (MAIL FROM refused, ...). */
    readonly permanent: boolean,
    readonly status: string,
    readonly fromServer: boolean,
    readonly remoteMta?: string,
  ) {
    super(message);
    this.name = "SessionError";
  }
}

interface NmError extends Error {
  code?: string;
  response?: string;
  responseCode?: number;
  command?: string;
  rejectedErrors?: NmError[];
  recipient?: string;
}

/** SMTPConnection's own bookkeeping that its type definitions keep private. */
interface ConnInternals {
  _supportedExtensions: string[];
  _maxAllowedSize?: number;
  _envelope?: { accepted?: string[]; rejected?: string[]; rejectedErrors?: NmError[] } | false;
}

/** The enhanced status code in a reply, or a default derived from the basic code. */
export function enhancedStatus(reply: string | undefined, basic?: number): string {
  const m = reply ? /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b/.exec(reply) : null;
  if (m) return m[1]!;
  const c = basic ?? Number(reply?.slice(0, 3));
  if (c >= 500) return "5.0.0";
  if (c >= 400) return "4.0.0";
  if (c >= 200 && c < 300) return "2.0.0";
  return "4.4.2";
}

function oneLine(s: string | undefined): string {
  return (s ?? "").replace(/\r?\n/g, " ").trim();
}

function isLoopback(addr: string): boolean {
  return addr.startsWith("127.") || addr === "::1";
}

/** A connected SMTP session to one address of one hop. */
export class SmtpSession {
  private conn: SMTPConnection | null = null;
  private broken = false;
  /** Called when the connection ends (a transaction in flight then fails). */
  private onEnd: (() => void) | null = null;
  private failure: NmError | null = null;
  /**
   * The STARTTLS handshake itself failed. SMTPConnection reports only a refused STARTTLS or a
   * close mid-handshake as ETLS; a TLS error on the socket (a bad record, a reset) is ESOCKET.
   */
  private tlsHandshakeFailed = false;
  /** `mx.example.org[192.0.2.1]:25`, as Postfix logs the relay. */
  readonly relay: string;

  private constructor(
    readonly hop: Hop,
    readonly address: string,
    private readonly opts: SessionOptions,
  ) {
    this.relay = `${hop.host}[${address}]:${hop.port}`;
  }

  /**
   * Connects to the first hop/address that completes a handshake (RFC 5321 §5.1: try the next
   * address, then the next MX). Throws a SessionError describing the last failure.
   */
  static async open(hops: Hop[], opts: SessionOptions): Promise<SmtpSession> {
    let last: SessionError | null = null;
    for (const hop of hops) {
      for (const address of hop.addresses) {
        const s = new SmtpSession(hop, address, opts);
        try {
          await s.connect(false);
          return s;
        } catch (err) {
          const e = err as NmError;
          if (e.code === "ETLS" || s.tlsHandshakeFailed) {
            // Opportunistic TLS: a failed handshake is retried without TLS (Postfix does the same).
            const plain = new SmtpSession(hop, address, opts);
            try {
              await plain.connect(true);
              return plain;
            } catch (err2) {
              last = toSessionError(err2 as NmError, s.relay);
              continue;
            }
          }
          last = toSessionError(e, s.relay);
          // An AUTH rejection is the same on every host of a relayhost.
          if (e.code === "EAUTH") throw last;
        }
      }
    }
    throw last ?? new SessionError("no addresses to connect to", false, "4.4.1", false);
  }

  private connect(ignoreTLS: boolean): Promise<void> {
    const family = isIP(this.address);
    const local = this.opts.localAddress && isIP(this.opts.localAddress) === family ? this.opts.localAddress : undefined;
    const conn = new SMTPConnection({
      host: this.address,
      port: this.hop.port,
      name: this.opts.heloName,
      secure: this.opts.secure ?? false,
      ignoreTLS,
      opportunisticTLS: true,
      servername: isIP(this.hop.host) ? undefined : this.hop.host,
      tls: { rejectUnauthorized: false, ...(isIP(this.hop.host) ? {} : { servername: this.hop.host }) },
      ...(local ? { localAddress: local } : {}),
      connectionTimeout: this.opts.connectTimeoutMs ?? 30_000,
      greetingTimeout: this.opts.commandTimeoutMs ?? 60_000,
      socketTimeout: this.opts.commandTimeoutMs ?? 300_000,
      socketCloseTimeout: 1000,
      logger: false,
    });
    this.conn = conn;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      conn.on("error", (err: NmError) => {
        if (conn.upgrading) this.tlsHandshakeFailed = true;
        this.broken = true;
        this.failure = err;
        if (!settled) {
          settled = true;
          reject(err);
        }
      });
      conn.on("end", () => {
        this.broken = true;
        this.onEnd?.();
        if (!settled) {
          settled = true;
          const e: NmError = new Error("connection closed before the greeting");
          e.code = "ECONNECTION";
          reject(e);
        }
      });
      conn.connect(() => {
        if (settled) return;
        const auth = this.opts.auth;
        if (!auth) {
          settled = true;
          resolve();
          return;
        }
        if (!conn.secure && !isLoopback(this.address)) {
          settled = true;
          const e: NmError = new Error("relayhost did not offer TLS; refusing to send credentials in plaintext");
          e.code = "EAUTHTLS";
          conn.close();
          reject(e);
          return;
        }
        conn.login({ user: auth.user, pass: auth.pass }, (err) => {
          if (settled) return;
          settled = true;
          if (err) {
            conn.close();
            reject(err);
          } else resolve();
        });
      });
    });
  }

  get usable(): boolean {
    return this.conn !== null && !this.broken;
  }

  get tls(): boolean {
    return this.conn?.secure ?? false;
  }

  private get internals(): ConnInternals {
    return this.conn as unknown as ConnInternals;
  }

  hasExtension(name: string): boolean {
    return this.internals._supportedExtensions?.includes(name) ?? false;
  }

  /**
   * One transaction for all of `msg.recipients`. Never throws: every recipient gets a result.
   * After a connection failure the session is unusable (`usable` false).
   */
  async send(msg: OutboundMessage): Promise<RecipientResult[]> {
    const conn = this.conn;
    const relay = this.relay;
    const all = (outcome: RecipientResult["outcome"], status: string, response: string, fromServer: boolean) =>
      msg.recipients.map((address) => ({ address, outcome, status, response, fromServer, remoteMta: this.hop.host }));
    if (!conn || this.broken) return all("deferred", "4.4.2", `lost connection with ${relay}`, false);

    // SMTPUTF8 (RFC 6531 §3.4): an internationalised address needs the extension.
    const utf8Envelope = /[^\x00-\x7f]/.test(msg.from) || msg.recipients.some((r) => /[^\x00-\x7f]/.test(r));
    if (utf8Envelope && !this.hasExtension("SMTPUTF8"))
      return all("failed", "5.6.7", `SMTPUTF8 is required, but was not offered by host ${relay}`, false);

    let data = msg.data;
    let use8Bit = false;
    if (msg.eightBit) {
      if (this.hasExtension("8BITMIME")) use8Bit = true;
      else if (msg.eightBitHeaders && !this.hasExtension("SMTPUTF8"))
        return all("failed", "5.6.7", `message has 8-bit headers, but host ${relay} offers neither 8BITMIME nor SMTPUTF8`, false);
      else {
        // RFC 6152 §3: a relay that cannot deliver 8-bit data downgrades it (to quoted-printable).
        const down = downgrade8bit(data);
        if (!down)
          return all(
            "failed",
            "5.6.3",
            `message has 8-bit content that cannot be converted to 7-bit for host ${relay}, which does not offer 8BITMIME`,
            false,
          );
        data = down;
      }
    }

    const max = this.internals._maxAllowedSize;
    if (max && data.length > max)
      return all("failed", "5.3.4", `message size ${data.length} exceeds size limit ${max} of server ${relay}`, false);

    const envelope: SMTPConnection.Envelope = {
      from: msg.from === "" ? false : msg.from,
      to: msg.recipients,
      size: data.length,
      use8BitMime: use8Bit,
    };
    const outcome = await new Promise<{ err: NmError | null; info?: SMTPConnection.SentMessageInfo }>((resolve) => {
      let done = false;
      const finish = (err: NmError | null, info?: SMTPConnection.SentMessageInfo) => {
        if (done) return;
        done = true;
        resolve({ err, ...(info ? { info } : {}) });
      };
      this.onEnd = () => finish(this.failure ?? Object.assign(new Error("connection closed"), { code: "ECONNECTION" }));
      conn.send(envelope, data, (err, info) => finish(err as NmError | null, info));
    });
    this.onEnd = null;

    const results = new Map<string, RecipientResult>();
    const fromReply = (address: string, reply: string | undefined, code: number | undefined): RecipientResult => {
      const c = code ?? Number(reply?.slice(0, 3));
      const status = enhancedStatus(reply, c);
      return {
        address,
        outcome: c >= 200 && c < 300 ? "delivered" : c >= 500 ? "failed" : "deferred",
        status: c >= 500 && status.startsWith("4") ? "5.0.0" : c >= 400 && c < 500 && status.startsWith("5") ? "4.0.0" : status,
        response: oneLine(reply),
        fromServer: true,
        remoteMta: this.hop.host,
      };
    };

    if (!outcome.err && outcome.info) {
      const info = outcome.info;
      for (const e of (info.rejectedErrors ?? []) as NmError[])
        if (e.recipient) results.set(e.recipient, fromReply(e.recipient, e.response, e.responseCode));
      for (const a of info.accepted as string[]) results.set(a, fromReply(a, info.response, Number(info.response.slice(0, 3)) || 250));
    } else {
      const err = outcome.err!;
      const env = this.internals._envelope || {};
      for (const e of [...(err.rejectedErrors ?? []), ...(env.rejectedErrors ?? [])])
        if (e.recipient && !results.has(e.recipient)) results.set(e.recipient, fromReply(e.recipient, e.response, e.responseCode));
      if (err.responseCode && (err.command === "MAIL FROM" || err.command === "DATA" || err.code === "EMESSAGE")) {
        // A reply to MAIL FROM, DATA or the final dot speaks for every recipient not yet decided.
        for (const r of msg.recipients) if (!results.has(r)) results.set(r, fromReply(r, err.response, err.responseCode));
        // After the final dot the transaction is over; anything earlier is ended with RSET.
        if (err.code !== "EMESSAGE") this.resetAfterError();
      } else if (err.code === "EENVELOPE" && err.rejectedErrors) {
        this.resetAfterError();
      } else {
        // Connection trouble: everything not decided is deferred (if the final dot was sent and the
        // reply lost, the message may arrive twice: at least once, never lost).
        this.broken = true;
        const why =
          err.code === "ETIMEDOUT"
            ? `conversation with ${relay} timed out`
            : `lost connection with ${relay}${err.command ? ` while sending ${err.command}` : ""}: ${oneLine(err.message)}`;
        for (const r of msg.recipients)
          if (!results.has(r))
            results.set(r, {
              address: r,
              outcome: "deferred",
              status: "4.4.2",
              response: why,
              fromServer: false,
              remoteMta: this.hop.host,
            });
      }
    }
    return msg.recipients.map(
      (r) =>
        results.get(r) ?? {
          address: r,
          outcome: "deferred",
          status: "4.4.2",
          response: `no reply from ${relay} for this recipient`,
          fromServer: false,
          remoteMta: this.hop.host,
        },
    );
  }

  private resetAfterError(): void {
    const conn = this.conn;
    if (!conn || this.broken) return;
    // The next transaction waits for the RSET reply; SMTPConnection queues commands in order.
    this.resetting = new Promise<void>((resolve) => {
      conn.reset((err) => {
        if (err) this.broken = true;
        resolve();
      });
    });
  }

  private resetting: Promise<void> | null = null;

  /** Waits for a pending RSET before the next transaction. */
  async ready(): Promise<boolean> {
    if (this.resetting) {
      await this.resetting;
      this.resetting = null;
    }
    return this.usable;
  }

  close(): void {
    const conn = this.conn;
    if (!conn) return;
    this.conn = null;
    if (this.broken) {
      conn.close();
      return;
    }
    this.broken = true;
    try {
      conn.quit();
    } catch {
      conn.close();
    }
    // Never wait long for the peer's reply to QUIT.
    setTimeout(() => conn.close(), 1000).unref();
  }
}

function toSessionError(e: NmError, relay: string): SessionError {
  const reply = e.response ? oneLine(e.response) : "";
  if (e.code === "EAUTH")
    return new SessionError(`SASL authentication failed; server ${relay} said: ${reply || e.message}`, false, "4.7.0", !!reply, relay);
  if (e.code === "EAUTHTLS") return new SessionError(`${relay}: ${e.message}`, false, "4.7.0", false, relay);
  if (reply) {
    // A greeting or EHLO refusal: try the next host, and if none works, defer (Postfix treats a
    // 5xx greeting from one MX as a reason to try the next, then as a hard error for the last).
    const permanent = (e.responseCode ?? 0) >= 500;
    return new SessionError(`host ${relay} refused to talk to me: ${reply}`, permanent, enhancedStatus(reply, e.responseCode), true, relay);
  }
  const sys = (e as NmError & { originalCode?: string }).originalCode ?? e.code ?? "";
  const what =
    sys === "ECONNREFUSED"
      ? "Connection refused"
      : e.code === "ETIMEDOUT" || sys === "ETIMEDOUT"
        ? "Connection timed out"
        : oneLine(e.message);
  return new SessionError(`connect to ${relay}: ${what}`, false, "4.4.1", false, relay);
}
