/**
 * One POP3 session: the RFC 1939 state machine (AUTHORIZATION → TRANSACTION → UPDATE).
 *
 * The session does not know sockets. It gets bytes through `receive()`, answers through a
 * `SessionTransport`, and reaches mail and passwords through `MailStore` and `Authenticator`.
 * Every line passes the same gates before a command's handler runs: line length, keyword,
 * the states the command declares, its arguments. Each `-ERR` counts; after
 * `limits.badCommands` of them the session is closed. Nothing a client sends may throw out of
 * here: handler errors become `-ERR [SYS/TEMP]` replies.
 */
import type { Logger } from "pino";
import type { MailConfig } from "../config/schema";
import type { Authenticator, Mailbox, MailStore, MessageInfo } from "../store/types";
import { checkArgs, printable } from "./command";
import { COMMANDS } from "./commands";
import { type LineEvent, LineSplitter, MAX_LINE, parseCommand } from "./parser";
import { err, ok, Pop3Error, type RespCode } from "./wire";

export type State = "AUTHORIZATION" | "TRANSACTION" | "UPDATE";

/** What a session needs from its connection. server.ts implements it over net/tls sockets. */
export interface SessionTransport {
  readonly remoteAddress: string;
  /** TLS is active (pop3s, or after STLS). */
  readonly secure: boolean;
  /** STLS can be offered (a certificate is loaded and the connection is not yet secure). */
  readonly canStartTls: boolean;
  /** Resolves once the data is handed to the kernel (or the connection is gone). */
  write(data: string | Buffer): Promise<void>;
  /**
   * Nothing written is waiting in user space: read right after `write()`, true means the kernel
   * took that data at once, so its buffer may be used again.
   */
  readonly flushed: boolean;
  /**
   * Stops reading plaintext at once (bytes not yet read stay in the socket for the TLS layer)
   * and returns the step that runs the handshake. RFC 2595 §4 / CVE-2011-0411.
   */
  prepareTls(): () => Promise<void>;
  pause(): void;
  resume(): void;
  /** Flushes what was written and closes. */
  end(): void;
}

export interface SessionServices {
  config: MailConfig;
  store: MailStore;
  auth: Authenticator;
  /** Whether an address is in `trustedNetworks` (plaintext login allowed without TLS). */
  trusted(address: string): boolean;
  /** Users whose maildrop a session of this server holds (see Pop3Session.lockMaildrop). */
  lockedUsers: Set<string>;
  log: Logger;
}

/** A message as this session sees it: numbered at login, for the whole session (RFC 1939 §5). */
export interface MessageEntry {
  readonly number: number;
  readonly info: MessageInfo;
  deleted: boolean;
  /** Fully retrieved with RETR: gets \Seen at QUIT, as Dovecot does (not for TOP). */
  retrieved: boolean;
}

/** Input in arrival order; `eof` is the client's half-close, handled after the lines before it. */
type QueueItem = LineEvent | { kind: "eof" };

/** Pipelined lines queued before the socket is paused (RFC 2449 PIPELINING). */
const MAX_QUEUED_LINES = 64;
/**
 * Output buffers up to this size are kept for the next response (one per session): enough for
 * messages up to about 30 KiB (a buffer has room for the worst case, twice the message), while a
 * session holds little memory between commands.
 */
const MAX_SPARE = 64 * 1024;

/** A response built ahead of its command (RETR of the next message, see retrieve.ts). */
export interface PreparedResponse {
  readonly number: number;
  /** The message's Maildir key when it was built: the response is used only for the same message. */
  readonly key: string;
  /** The buffer `data` lies in (reused once sent). */
  readonly buffer: Buffer;
  readonly data: Buffer;
}

let nextId = 1;

export class Pop3Session {
  readonly id = nextId++;
  state: State = "AUTHORIZATION";
  /** Name given by USER, waiting for PASS. */
  pendingUser: string | null = null;
  /** The logged-in user. */
  user: string | null = null;
  mailbox: Mailbox | null = null;
  entries: MessageEntry[] = [];
  /** A response built while the client was busy reading the previous one (retrieve.ts). */
  prepared: PreparedResponse | null = null;
  readonly log: Logger;

  private readonly splitter = new LineSplitter(MAX_LINE);
  private queue: QueueItem[] = [];
  private busy = false;
  private paused = false;
  private badCommands = 0;
  private saslHandler: ((line: Buffer) => Promise<void>) | null = null;
  private releaseLock: (() => Promise<void>) | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  /** Date.now() of the client's last activity (input, or a reply that had to wait for it). */
  private lastActive = 0;
  private closing = false;
  private cleanup: Promise<void> | null = null;
  /** An output buffer the kernel has taken all of, for the next response. */
  private spare: Buffer | null = null;

  constructor(
    readonly services: SessionServices,
    readonly transport: SessionTransport,
  ) {
    this.log = services.log.child({ session: this.id, remote: transport.remoteAddress });
  }

  get closed(): boolean {
    return this.closing;
  }

  get config(): MailConfig {
    return this.services.config;
  }

  /** Plaintext logins (USER/PASS, AUTH PLAIN) only over TLS or from trusted networks. */
  get plaintextAllowed(): boolean {
    return this.transport.secure || this.services.trusted(this.transport.remoteAddress);
  }

  async start(): Promise<void> {
    this.log.debug({ secure: this.transport.secure }, "connect");
    this.touch();
    await this.send(ok(`${this.config.hostname} POP3 server ready.`));
  }

  /** Bytes from the client. Never throws. */
  receive(chunk: Buffer): void {
    if (this.closing) return;
    this.touch();
    for (const ev of this.splitter.push(chunk)) this.queue.push(ev);
    if (this.queue.length > MAX_QUEUED_LINES && !this.paused) {
      this.paused = true;
      this.transport.pause();
    }
    void this.pump();
  }

  /**
   * The client finished sending (half-close). Lines it sent before are still answered, so
   * `DELE 1 / QUIT` followed by a shutdown still reaches UPDATE; then the session closes.
   */
  inputEnded(): void {
    if (this.closing) return;
    this.queue.push({ kind: "eof" });
    void this.pump();
  }

  /** The connection is gone (client closed, reset, or we closed it). Idempotent. */
  transportClosed(): Promise<void> {
    return this.finish("connection closed");
  }

  /** Hangs up at once (e.g. a response that cannot be completed); nothing is deleted. */
  async abort(reason: string): Promise<void> {
    await this.close(reason);
  }

  /** Server shutdown: say so and close; nothing is deleted (no UPDATE state). */
  async shutdown(): Promise<void> {
    await this.closeWith(err("Server shutting down.", "SYS/TEMP"), "server shutdown");
  }

  // ---- used by command handlers -------------------------------------------------------

  /** Writes a complete reply (status line, or a multi-line response). */
  async send(data: string | Buffer): Promise<void> {
    if (this.closing) return;
    await this.transport.write(data);
    this.touch();
  }

  /**
   * A buffer of at least `size` bytes to build a response in: the last one sent with `sendFrom()`
   * when the kernel took all of it at once (no allocation, no garbage per message), or a new one.
   */
  outputBuffer(size: number): Buffer {
    const spare = this.spare;
    if (spare && spare.length >= size) {
      this.spare = null;
      return spare;
    }
    return Buffer.allocUnsafeSlow(Math.max(size, 16 * 1024));
  }

  /** Sends `data`, a part of `buffer` (from `outputBuffer()`), which is reused once the kernel has it all. */
  async sendFrom(buffer: Buffer, data: Buffer): Promise<void> {
    if (this.closing) return;
    const written = this.transport.write(data);
    // Read at once: true only when write() handed everything to the kernel synchronously.
    if (this.transport.flushed) {
      if (buffer.length <= MAX_SPARE && (this.spare === null || this.spare.length < buffer.length)) this.spare = buffer;
      // Gone out at once: the idle timer was restarted when the command came in.
      return;
    }
    await written;
    this.touch();
  }

  /** Client input is waiting to be handled (pipelined commands): no time for work ahead. */
  get inputWaiting(): boolean {
    return this.queue.length > 0;
  }

  /** The non-deleted message `n`, or `-ERR No such message.` (RFC 1939 §5). */
  message(n: number): MessageEntry {
    const e = this.entries[n - 1];
    if (!e || n < 1) throw new Pop3Error(`There's no message ${n}.`);
    if (e.deleted) throw new Pop3Error("Message is deleted.");
    return e;
  }

  /** Non-deleted messages and their total size. */
  maildropSummary(): { count: number; size: number } {
    let count = 0;
    let size = 0;
    for (const e of this.entries)
      if (!e.deleted) {
        count++;
        size += e.info.size;
      }
    return { count, size };
  }

  /** The next line is a SASL response (RFC 5034 §4), not a command. */
  expectSaslResponse(handler: (line: Buffer) => Promise<void>): void {
    this.saslHandler = handler;
  }

  /**
   * Checks a login and opens the maildrop. Every failure looks the same to the client
   * (`-ERR [AUTH] Authentication failed.`); UserDb gives unknown users and wrong passwords
   * the same delay, and throttles addresses that fail too often.
   */
  async authenticate(login: string, password: string, authzid = ""): Promise<void> {
    const result = await this.services.auth.authenticate(login, password, this.transport.remoteAddress);
    const authzOk = result.ok && (authzid === "" || authzid.toLowerCase() === login.toLowerCase() || authzid.toLowerCase() === result.user);
    if (!result.ok || !authzOk) {
      this.log.warn({ user: printable(login), reason: result.ok ? "authzid" : result.reason }, "login failed");
      throw new Pop3Error("Authentication failed.", "AUTH");
    }
    await this.openMaildrop(result.user);
    if (this.closing) return;
    const { count, size } = this.maildropSummary();
    this.log.info({ user: result.user, messages: count }, "login");
    await this.send(ok(`Logged in. ${count} message${count === 1 ? "" : "s"} (${size} octets).`));
  }

  /**
   * RFC 2595 §4: "+OK", then TLS. Plaintext that arrived behind the STLS line (queued lines and
   * a partial line) is thrown away, never run as if it came over TLS. Afterwards the session is
   * as new: no USER given (RFC 2595: the client must forget what it learnt before).
   */
  async startTls(): Promise<void> {
    const handshake = this.transport.prepareTls();
    this.queue = [];
    this.splitter.reset();
    this.pendingUser = null;
    await this.send(ok("Begin TLS negotiation now."));
    try {
      await handshake();
      this.log.debug("tls started");
    } catch (e) {
      this.log.info({ err: (e as Error).message }, "STLS handshake failed");
      await this.close("tls handshake failed");
    }
  }

  /**
   * QUIT. From TRANSACTION: the UPDATE state (RFC 1939 §6) removes the messages marked deleted
   * and marks fully retrieved ones \Seen. Only here is anything changed in the maildrop.
   */
  async quit(): Promise<void> {
    if (this.state !== "TRANSACTION" || !this.mailbox) {
      await this.send(ok("Logging out."));
      await this.close("quit");
      return;
    }
    this.state = "UPDATE";
    const mailbox = this.mailbox;
    const deleted = this.entries.filter((e) => e.deleted).map((e) => e.info.uid);
    const seen = this.entries.filter((e) => e.retrieved && !e.deleted && !e.info.flags.includes("\\Seen")).map((e) => e.info.uid);
    let reply: string;
    try {
      if (deleted.length > 0) await mailbox.expunge(deleted);
      reply = ok(deleted.length > 0 ? "Logging out, messages deleted." : "Logging out.");
      this.log.info({ user: this.user, deleted: deleted.length }, "update");
    } catch (e) {
      this.log.error({ err: (e as Error).message, user: this.user }, "expunge failed");
      reply = err("Some deleted messages were not removed.", "SYS/TEMP");
    }
    if (seen.length > 0) {
      try {
        await mailbox.setFlags(seen, "add", ["\\Seen"]);
      } catch (e) {
        this.log.warn({ err: (e as Error).message }, "could not set \\Seen");
      }
    }
    // Unlock before the reply: a client that logs in again right after QUIT must not get IN-USE.
    await this.releaseMaildrop();
    await this.send(reply);
    await this.close("quit");
  }

  capabilities(): string[] {
    const caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"];
    if (this.state === "AUTHORIZATION") {
      if (this.plaintextAllowed) caps.push("USER", "SASL PLAIN");
      if (this.transport.canStartTls) caps.push("STLS");
    }
    caps.push("IMPLEMENTATION mailstack");
    return caps;
  }

  // ---- internals -------------------------------------------------------------------------

  private async pump(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      while (this.queue.length > 0 && !this.closing) {
        const ev = this.queue.shift()!;
        await this.handle(ev);
      }
    } catch (e) {
      // handle() catches everything; this is the last guard.
      this.log.error({ err: (e as Error).message }, "session failure");
      await this.close("internal error");
    } finally {
      this.busy = false;
      if (this.paused && !this.closing) {
        this.paused = false;
        this.transport.resume();
      }
    }
  }

  private async handle(ev: QueueItem): Promise<void> {
    if (ev.kind === "eof") {
      await this.close("client closed");
      return;
    }
    const sasl = this.saslHandler;
    this.saslHandler = null;
    if (ev.kind === "too-long") {
      await this.fail(sasl ? "Authentication response too long." : "Line too long.");
      return;
    }
    try {
      if (sasl) {
        await sasl(ev.line);
        return;
      }
      const parsed = parseCommand(ev.line, ev.octets);
      if (!parsed.ok) {
        await this.fail(parsed.error);
        return;
      }
      const cmd = parsed.command;
      const spec = COMMANDS.get(cmd.name);
      if (!spec) {
        await this.fail("Unknown command.");
        return;
      }
      if (!spec.states.includes(this.state)) {
        await this.fail(
          this.state === "AUTHORIZATION" ? "Not logged in." : this.state === "TRANSACTION" ? "Already logged in." : "Logging out.",
        );
        return;
      }
      const checked = checkArgs(spec, cmd);
      if (!checked.ok) {
        await this.fail(checked.error);
        return;
      }
      await spec.run(this, checked.values);
    } catch (e) {
      if (e instanceof Pop3Error) await this.fail(e.message, e.code);
      else {
        this.log.error({ err: (e as Error)?.message ?? String(e) }, "command failed");
        await this.fail("Internal error.", "SYS/TEMP");
      }
    }
  }

  /** An `-ERR` reply. Counts toward `limits.badCommands`; at the limit the session ends. */
  private async fail(message: string, code?: RespCode): Promise<void> {
    await this.send(err(message, code));
    this.badCommands++;
    if (this.badCommands >= this.config.limits.badCommands && !this.closing) {
      this.log.info({ errors: this.badCommands }, "too many bad commands");
      await this.closeWith(err("Too many bad commands, closing connection."), "too many bad commands");
    }
  }

  /**
   * RFC 1939 §8 maildrop lock: the store's lock file (across processes) plus this server's own
   * set of locked users. When the disk is full the lock file cannot be written; the in-process
   * lock alone then still keeps two sessions of this server apart, and users can read (and
   * delete) mail, which is how a full disk gets emptied.
   */
  private async lockMaildrop(user: string): Promise<(() => Promise<void>) | null> {
    const held = this.services.lockedUsers;
    if (held.has(user)) return null;
    held.add(user);
    let fileRelease: (() => Promise<void>) | null = null;
    try {
      fileRelease = await this.services.store.lockMaildrop(user);
      if (!fileRelease) {
        held.delete(user);
        return null;
      }
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== "ENOSPC" && code !== "EDQUOT") {
        held.delete(user);
        throw e;
      }
      this.log.warn({ user, err: (e as Error).message }, "disk full: maildrop locked in this process only");
    }
    return async () => {
      held.delete(user);
      if (fileRelease) await fileRelease();
    };
  }

  private async openMaildrop(user: string): Promise<void> {
    let release: (() => Promise<void>) | null;
    try {
      release = await this.lockMaildrop(user);
    } catch (e) {
      this.log.error({ err: (e as Error).message, user }, "lock failed");
      throw new Pop3Error("Unable to lock the mailbox.", "SYS/TEMP");
    }
    if (!release) throw new Pop3Error("Mailbox is locked by another POP3 session.", "IN-USE");
    if (this.closing) {
      await release().catch(() => undefined);
      return;
    }
    this.releaseLock = release;
    try {
      const mailbox = await this.services.store.open(user, "INBOX");
      this.mailbox = mailbox;
      await mailbox.sync();
      this.entries = mailbox.messages().map((info, i) => ({ number: i + 1, info, deleted: false, retrieved: false }));
    } catch (e) {
      this.log.error({ err: (e as Error).message, user }, "open failed");
      await this.releaseMaildrop();
      throw new Pop3Error("Unable to open the mailbox.", "SYS/TEMP");
    }
    if (this.closing) {
      await this.releaseMaildrop();
      return;
    }
    this.user = user;
    this.pendingUser = null;
    this.state = "TRANSACTION";
  }

  private async releaseMaildrop(): Promise<void> {
    const mailbox = this.mailbox;
    const release = this.releaseLock;
    this.mailbox = null;
    this.releaseLock = null;
    if (mailbox) await mailbox.close().catch((e: Error) => this.log.warn({ err: e.message }, "mailbox close failed"));
    if (release) await release().catch((e: Error) => this.log.warn({ err: e.message }, "unlock failed"));
  }

  /**
   * Client activity: restarts the autologout clock. Only a time is noted; the one timer, when it
   * fires, sets itself again for what is left (no timer work per command).
   */
  private touch(): void {
    if (this.closing) return;
    this.lastActive = Date.now();
    if (!this.idleTimer) this.armIdle(this.config.limits.idleTimeout * 1000);
  }

  private armIdle(ms: number): void {
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      if (this.closing) return;
      const left = this.lastActive + this.config.limits.idleTimeout * 1000 - Date.now();
      if (left > 0) this.armIdle(left);
      else void this.idle();
    }, ms);
  }

  /** RFC 1939 §3: the autologout timer closes without entering UPDATE. */
  private async idle(): Promise<void> {
    if (this.closing) return;
    this.log.info("idle timeout");
    await this.closeWith(err("Disconnected for inactivity."), "idle timeout");
  }

  /**
   * A last line, then close. The write is not awaited: a client that stopped reading must not
   * keep the session (and its maildrop lock) alive; `end()` destroys the socket after a grace.
   */
  private async closeWith(line: string, reason: string): Promise<void> {
    if (this.closing) return;
    void this.transport.write(line);
    await this.close(reason);
  }

  private async close(reason: string): Promise<void> {
    if (!this.closing) this.transport.end();
    await this.finish(reason);
  }

  private finish(reason: string): Promise<void> {
    if (!this.cleanup) {
      this.closing = true;
      this.queue = [];
      this.saslHandler = null;
      this.prepared = null;
      this.spare = null;
      if (this.idleTimer) clearTimeout(this.idleTimer);
      this.idleTimer = null;
      this.log.debug({ reason, state: this.state }, "disconnect");
      // A dropped TRANSACTION deletes nothing: the marks live only in this object.
      this.cleanup = this.releaseMaildrop();
    }
    return this.cleanup;
  }
}
