/**
 * One SMTP connection: the state machine. It reads command lines (smtp/parser.ts), runs them
 * through the common gates (TLS required on submission, HELO first, error count) and dispatches
 * to one handler per command (smtp/commands/). Replies to pipelined commands (RFC 2920) are
 * collected and written together. While a handler waits (delivery, AUTH), the socket is paused
 * so input queues in the kernel, not in memory.
 */
import { randomBytes } from "node:crypto";
import type { Socket } from "node:net";
import { TLSSocket } from "node:tls";
import { unmapV4 } from "../lib/cidr";
import { COMMANDS, FORBIDDEN } from "./commands";
import type { ListenerKind, SmtpContext } from "./context";
import { DataDecoder, type DataResult, LINE_TOO_LONG, LineReader } from "./parser";
import { R, type Reply, reply } from "./reply";

export interface Transaction {
  /** Envelope sender, "" for the null sender. */
  from: string;
  smtputf8: boolean;
  body: "7BIT" | "8BITMIME";
  /** Accepted recipients as given (normalised), in order. */
  rcpts: string[];
  /** Local users the message goes to (after alias expansion). */
  localUsers: Set<string>;
  /** External addresses: relayed recipients and alias forwards. */
  remote: Set<string>;
}

let sessionCounter = 0;

export class Session {
  readonly id: string;
  socket: Socket;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly trusted: boolean;
  secure: boolean;
  tls: { version: string; cipher: string } | null = null;
  helo: string | null = null;
  esmtp = false;
  /** The authenticated user, once AUTH succeeded. */
  user: string | null = null;
  tx: Transaction | null = null;
  /** Error replies so far (reset by a delivered message). */
  errors = 0;
  /** Messages accepted in this session. */
  messages = 0;
  readonly clientName: Promise<string | null> | null;

  private readonly reader: LineReader;
  private decoder: DataDecoder | null = null;
  private sasl: ((line: string) => Reply | Promise<Reply>) | null = null;
  private busy = false;
  private closed = false;
  private out: string[] = [];
  private readonly onEnd: () => void;
  private ended = false;

  constructor(
    readonly ctx: SmtpContext,
    readonly kind: ListenerKind,
    socket: Socket,
    onEnd: () => void,
  ) {
    sessionCounter = (sessionCounter + 1) % 0x1000000;
    this.id = `${process.pid.toString(36)}${sessionCounter.toString(36)}${randomBytes(2).toString("hex")}`;
    this.socket = socket;
    this.remoteAddress = unmapV4(socket.remoteAddress ?? "0.0.0.0");
    this.remotePort = socket.remotePort ?? 0;
    this.trusted = ctx.policy.isTrusted(this.remoteAddress);
    this.secure = socket instanceof TLSSocket;
    if (this.secure) this.tls = tlsInfo(socket as TLSSocket);
    this.reader = new LineReader(ctx.maxLine);
    this.onEnd = onEnd;
    this.clientName = ctx.resolver ? ctx.resolver.lookup(this.remoteAddress) : null;
  }

  /** Submission (587) and submissions (465) require AUTH before MAIL (RFC 6409 §4.3). */
  get requiresAuth(): boolean {
    return this.kind !== "smtp";
  }

  start(): void {
    this.attach(this.socket);
    this.reply(reply(220, "", `${this.ctx.config.hostname} ESMTP mailstack`));
    this.flush();
  }

  private attach(socket: Socket): void {
    socket.setNoDelay(true);
    socket.setTimeout(this.ctx.config.limits.idleTimeout * 1000);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("timeout", () => this.onTimeout());
    socket.on("error", (err) => this.ctx.log.debug({ session: this.id, err: err.message }, "connection error"));
    socket.on("close", () => this.end());
    socket.on("end", () => {
      // The client half-closed: nothing more can arrive; answer what is pending, then close.
      if (!this.busy) this.close();
    });
  }

  private onTimeout(): void {
    if (this.closed) {
      this.socket.destroy();
      return;
    }
    if (this.busy) return; // we are the slow one; the client is waiting for our reply
    this.ctx.log.info({ session: this.id, client: this.remoteAddress }, "idle timeout");
    this.reply(R.timeout(this.ctx.config.hostname));
    this.flush();
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    if (this.decoder) {
      this.feedData(chunk);
    } else {
      this.reader.append(chunk);
      this.pump();
    }
    this.flush();
  }

  /** Runs every complete command line, one at a time. */
  private pump(): void {
    while (!this.busy && !this.closed) {
      if (this.decoder) {
        const rest = this.reader.take();
        if (rest) this.feedData(rest);
        return;
      }
      const line = this.reader.next();
      if (line === null) return;
      if (line === LINE_TOO_LONG) {
        this.sasl = null;
        this.reply(R.lineTooLong());
        continue;
      }
      let result: Reply | Promise<Reply> | null;
      try {
        result = this.dispatch(line);
      } catch (err) {
        result = this.internalError(err);
      }
      if (result instanceof Promise) {
        this.wait(result);
        return;
      }
      if (result) this.reply(result);
    }
  }

  /** Holds input while `p` runs, then sends its reply and carries on with pipelined input. */
  private wait(p: Promise<Reply>): void {
    this.busy = true;
    this.socket.pause();
    this.flush();
    void p
      .catch((err) => this.internalError(err))
      .then((r) => {
        this.busy = false;
        if (this.closed) {
          this.flush();
          return;
        }
        this.reply(r);
        if (this.draining) this.reply(R.shuttingDown(this.ctx.config.hostname));
        if (!this.closed) {
          this.resumeIfReady();
          this.pump();
        }
        this.flush();
        if (this.socket.readableEnded && !this.closed) this.close();
      })
      .catch((err) => {
        // Never an unhandled rejection: a bug here costs this session, not the process.
        this.internalError(err);
        this.socket.destroy();
      });
  }

  private internalError(err: unknown): Reply {
    this.ctx.log.error({ session: this.id, err: err instanceof Error ? err.stack : String(err) }, "internal error");
    return reply(451, "4.3.0", "Error: internal error, try again later");
  }

  private dispatch(line: Buffer): Reply | Promise<Reply> | null {
    if (this.sasl) {
      const next = this.sasl;
      this.sasl = null;
      return next(line.toString("latin1"));
    }
    const text = line.toString("utf8");
    const sp = text.indexOf(" ");
    const verb = (sp < 0 ? text : text.slice(0, sp)).toUpperCase();
    const arg = sp < 0 ? "" : text.slice(sp + 1).trim();
    const cmd = COMMANDS.get(verb);
    if (!cmd) {
      if (FORBIDDEN.has(verb)) {
        // An HTTP request or similar sent to the SMTP port by a browser or a proxy abuser.
        this.ctx.log.info({ session: this.id, client: this.remoteAddress, verb }, "non-SMTP command, disconnecting");
        return reply(521, "5.5.1", "Error: this is an SMTP server", true);
      }
      return R.notRecognized();
    }
    if (this.requiresAuth && !this.secure && !cmd.beforeTls) return R.needTls();
    if (!this.helo && !cmd.beforeHelo) return R.needHelo();
    return cmd.handler(this, arg, verb);
  }

  /** Queues a reply; counts errors and disconnects past the limit. */
  reply(r: Reply): void {
    if (this.closed) return;
    this.out.push(r.toString());
    if (r.close) {
      this.close();
      return;
    }
    if (r.isError && r.code !== 452 && r.code !== 451 && r.code !== 454) {
      this.errors++;
      if (this.errors >= this.ctx.config.limits.badCommands) {
        this.ctx.log.info({ session: this.id, client: this.remoteAddress, errors: this.errors }, "too many errors, disconnecting");
        this.out.push(R.tooManyErrors(this.ctx.config.hostname).toString());
        this.close();
      }
    }
  }

  flush(): void {
    if (this.out.length === 0) return;
    const data = this.out.length === 1 ? this.out[0]! : this.out.join("");
    this.out = [];
    if (this.socket.destroyed || !this.socket.writable) return;
    if (!this.socket.write(data) && !this.writeBlocked) {
      // A client that sends without reading its replies: stop reading until it catches up.
      this.writeBlocked = true;
      this.socket.pause();
      const socket = this.socket;
      socket.once("drain", () => {
        this.writeBlocked = false;
        if (socket === this.socket) this.resumeIfReady();
      });
    }
  }

  private writeBlocked = false;

  private resumeIfReady(): void {
    if (!this.busy && !this.writeBlocked && !this.closed) this.socket.resume();
  }

  /** Stops reading, sends what is queued, and ends the connection. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.decoder = null;
    this.sasl = null;
    this.flush();
    if (!this.socket.destroyed) {
      this.socket.end();
      // A client that never closes its side is cut off shortly after.
      setTimeout(() => this.socket.destroy(), 5000).unref();
    }
  }

  private end(): void {
    this.closed = true;
    this.decoder = null;
    if (this.ended) return;
    this.ended = true;
    this.onEnd();
  }

  /**
   * The server is stopping: idle clients get 421 at once; a session whose message is being
   * stored gets its answer first, then 421.
   */
  shutdown(): void {
    this.draining = true;
    if (this.busy) return;
    if (!this.decoder) this.reply(R.shuttingDown(this.ctx.config.hostname));
    this.close();
  }

  private draining = false;

  get isBusy(): boolean {
    return this.busy;
  }

  // --- used by command handlers ---

  /** Starts a new envelope. */
  beginTransaction(tx: Transaction): void {
    this.tx = tx;
  }

  resetTransaction(): void {
    this.tx = null;
  }

  /** The next input line goes to `next` instead of being parsed as a command (SASL). */
  expectLine(next: (line: string) => Reply | Promise<Reply>): void {
    this.sasl = next;
  }

  /** Switches to DATA mode; the message ends with CRLF.CRLF and is handed to `commit`. */
  startData(commit: (result: DataResult) => Promise<Reply>): void {
    this.decoder = new DataDecoder(this.ctx.config.limits.messageSize);
    this.commit = commit;
  }

  private commit: ((result: DataResult) => Promise<Reply>) | null = null;

  private feedData(chunk: Buffer): void {
    const decoder = this.decoder!;
    const rest = decoder.push(chunk);
    if (rest === null) return;
    this.decoder = null;
    if (rest.length > 0) this.reader.append(rest);
    const commit = this.commit!;
    this.commit = null;
    this.wait(commit(decoder.result()));
  }

  /**
   * STARTTLS (RFC 3207): answer 220, throw away anything the client pipelined after the command
   * (CVE-2011-0411 class injection), and restart the session over TLS: no HELO, no AUTH, no
   * envelope survive.
   */
  startTls(): void {
    const raw = this.socket;
    const discarded = this.reader.take();
    if (discarded)
      this.ctx.log.info(
        { session: this.id, client: this.remoteAddress, bytes: discarded.length },
        "discarded plaintext pipelined after STARTTLS",
      );
    this.reply(reply(220, "2.0.0", "Ready to start TLS"));
    this.flush();
    raw.removeAllListeners("data");
    raw.removeAllListeners("timeout");
    raw.removeAllListeners("end");
    raw.removeAllListeners("close");
    raw.setTimeout(0);
    raw.on("close", () => this.end());
    const secure = new TLSSocket(raw, { isServer: true, secureContext: this.ctx.secureContext! });
    this.socket = secure;
    this.busy = true; // nothing is read until the handshake is done
    secure.setTimeout(this.ctx.config.limits.idleTimeout * 1000);
    secure.once("timeout", () => secure.destroy());
    secure.on("error", (err) => {
      this.ctx.log.info({ session: this.id, client: this.remoteAddress, err: err.message }, "TLS handshake failed");
      secure.destroy();
    });
    secure.once("secure", () => {
      secure.removeAllListeners("timeout");
      secure.removeAllListeners("error");
      this.busy = false;
      this.writeBlocked = false;
      this.secure = true;
      this.tls = tlsInfo(secure);
      this.helo = null;
      this.esmtp = false;
      this.user = null;
      this.tx = null;
      this.attach(secure);
    });
  }
}

function tlsInfo(s: TLSSocket): { version: string; cipher: string } {
  return { version: s.getProtocol() ?? "TLS", cipher: s.getCipher()?.name ?? "unknown" };
}
