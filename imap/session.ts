/**
 * One IMAP connection: the state machine of RFC 3501 §3 (not authenticated → authenticated →
 * selected → logout). Bytes go through the Framer, commands through the Map registry and the
 * generic checks (state, arguments), then to the command modules. Responses are collected and
 * written in large chunks.
 *
 * Nothing a client sends can crash the server: every command runs inside a try/catch, parse
 * errors are answered with BAD, and repeated bad commands end the session with BYE.
 */
import { randomBytes } from "node:crypto";
import type * as net from "node:net";
import * as tls from "node:tls";
import type { Logger } from "pino";
import type { MailConfig } from "../config/schema";
import { decodeMutf7, encodeMutf7 } from "../lib/mutf7";
import type { QuotaTracker } from "../store/quota";
import type { Authenticator, Mailbox, MailStore } from "../store/types";
import { type CommandSpec, checkArgs, ImapError, type Result, type State } from "./command";
import { Chunks, IRaw, type Response, type Value, writeResponse } from "./compiler";
import {
  type Command,
  type Frame,
  Framer,
  type FramerEvent,
  type FramerLimits,
  ParseError,
  parseCommand,
  type Token,
  tokenBytes,
} from "./parser";
import { formatSeqSet } from "./seqset";
import { flagsKey, SelectedView } from "./view";

export const SYSTEM_FLAGS = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"];

/**
 * Before login, input stays small (RFC 9051 §11.2 spirit; Dovecot caps pre-login input too):
 * lines and literals up to 1024 bytes. A bigger synchronizing literal gets a tagged NO [TOOBIG]
 * and no `+`. A bigger non-synchronizing one that LITERAL- allows (RFC 7888 §5: up to 4096) is
 * refused the same way and its announced bytes are skipped unread; one above 4096 breaks
 * LITERAL- and ends the connection (BAD [TOOBIG], BYE).
 */
export const PREAUTH_LIMITS: FramerLimits = { maxLine: 1024, maxLiteral: 1024, maxNonSync: 4096, maxLiterals: 4 };

export interface ServerContext {
  config: MailConfig;
  store: MailStore;
  auth: Authenticator;
  /** Per-user quotas (`users[].quota`): APPEND and COPY that do not fit get NO [OVERQUOTA]. */
  quota: QuotaTracker;
  log: Logger;
  /** For STARTTLS; null when TLS is not available. */
  secureContext: tls.SecureContext | null;
  isTrusted(address: string): boolean;
  commands: Map<string, CommandSpec>;
  sessions: Set<Session>;
}

type Waiter = { resolve: (line: Buffer | null) => void };

export class Session {
  readonly id = randomBytes(6).toString("hex");
  readonly log: Logger;
  state: State = "notAuthenticated";
  user: string | null = null;
  selected: SelectedView | null = null;
  secure: boolean;
  readonly remoteAddress: string;
  /** ENABLEd extensions (RFC 5161): CONDSTORE, QRESYNC, IMAP4REV2, UTF8=ACCEPT. */
  readonly enabled = new Set<string>();
  /** CONDSTORE is on once any CONDSTORE-aware command was used (RFC 7162 §3.1). */
  condstore = false;
  /** SEARCHRES (RFC 5182): the UIDs saved by SEARCH RETURN (SAVE). */
  savedSearch: number[] = [];
  /** Failed logins in this session. */
  authFailures = 0;
  /** IDLE in progress (untagged updates are written at once). */
  idling = false;

  private socket: net.Socket;
  private readonly framer: Framer;
  private readonly queue: Frame[] = [];
  private busy = false;
  private closed = false;
  private badCommands = 0;
  private readonly out = new Chunks();
  private dropInput = false;
  private rawWaiter: Waiter | null = null;
  private readonly onDataBound = (chunk: Buffer) => this.onData(chunk);
  private closedHandlers: Array<() => void> = [];

  constructor(
    socket: net.Socket,
    readonly ctx: ServerContext,
    opts: { secure: boolean },
  ) {
    this.socket = socket;
    this.secure = opts.secure;
    this.remoteAddress = socket.remoteAddress ?? "";
    this.log = ctx.log.child({ session: this.id, remote: this.remoteAddress });
    this.framer = new Framer(PREAUTH_LIMITS);
    this.attach(socket);
    this.setTimeout();
  }

  get config(): MailConfig {
    return this.ctx.config;
  }

  get store(): MailStore {
    return this.ctx.store;
  }

  /** IMAP4rev2 was enabled (RFC 9051 behaviour: UTF-8 names, ESEARCH, no RECENT). */
  get rev2(): boolean {
    return this.enabled.has("IMAP4REV2");
  }

  /** Mailbox names and quoted strings are UTF-8 (IMAP4rev2, RFC 6855 UTF8=ACCEPT). */
  get utf8(): boolean {
    return this.enabled.has("IMAP4REV2") || this.enabled.has("UTF8=ACCEPT");
  }

  get qresync(): boolean {
    return this.enabled.has("QRESYNC");
  }

  /** Plaintext logins: over TLS, or from the trusted networks (the seed's Dovecot settings). */
  get plaintextAllowed(): boolean {
    return this.secure || this.ctx.isTrusted(this.remoteAddress);
  }

  start(): void {
    const caps = this.capabilities().join(" ");
    this.send({ tag: "*", command: "OK", code: { name: "CAPABILITY", args: [caps] }, text: "mailstack IMAP ready" });
    void this.flush();
  }

  onClose(fn: () => void): void {
    this.closedHandlers.push(fn);
  }

  // ---- capabilities ---------------------------------------------------------------------------

  capabilities(): string[] {
    const caps = ["IMAP4rev1", "IMAP4rev2"];
    if (this.state === "notAuthenticated") {
      caps.push("SASL-IR", "LITERAL-", "ID", "ENABLE", "IDLE");
      if (!this.secure && this.ctx.secureContext) caps.push("STARTTLS");
      if (this.plaintextAllowed) caps.push("AUTH=PLAIN");
      else caps.push("LOGINDISABLED");
      return caps;
    }
    caps.push(
      "LITERAL+",
      "ID",
      "ENABLE",
      "IDLE",
      "NAMESPACE",
      "UNSELECT",
      "UIDPLUS",
      "MOVE",
      "CHILDREN",
      "SPECIAL-USE",
      "LIST-EXTENDED",
      "LIST-STATUS",
      "CONDSTORE",
      "QRESYNC",
      "ESEARCH",
      "SEARCHRES",
      "BINARY",
      "STATUS=SIZE",
      "WITHIN",
      `APPENDLIMIT=${this.config.limits.messageSize}`,
    );
    return caps;
  }

  // ---- mailbox names ----------------------------------------------------------------------------

  /** The store name of a mailbox argument (modified UTF-7 → UTF-8; INBOX case-insensitive). */
  mailboxArg(t: Token): string {
    const b = tokenBytes(t);
    if (b === null) throw new ImapError("BAD", "Invalid mailbox name");
    let name: string;
    if (this.utf8) {
      name = b.toString("utf8");
      if (!Buffer.from(name, "utf8").equals(b)) throw new ImapError("BAD", "Mailbox name is not UTF-8");
    } else {
      const decoded = decodeMutf7(b.toString("latin1"));
      if (decoded === null) throw new ImapError("NO", "Mailbox name is not valid modified UTF-7", { name: "CANNOT" });
      name = decoded;
    }
    return normalizeMailboxName(name);
  }

  /** A mailbox name for the wire. */
  mailboxOut(name: string): string {
    return this.utf8 ? name : encodeMutf7(name);
  }

  // ---- output -----------------------------------------------------------------------------------

  send(r: Response): void {
    if (this.closed) return;
    writeResponse(this.out, r, { utf8: this.utf8 });
  }

  untagged(command: string, attributes?: Value[]): void {
    this.send(attributes ? { tag: "*", command, attributes } : { tag: "*", command });
  }

  /** Pre-built response text (fast paths). Must be whole lines. */
  sendRaw(text: string): void {
    if (this.closed) return;
    this.out.text(text);
  }

  get pendingOutput(): number {
    return this.out.size;
  }

  /** Writes what is collected; waits for the socket to drain when it is full. Never rejects. */
  async flush(): Promise<void> {
    if (this.out.parts.length === 0 || this.closed) return;
    const parts = this.out.take();
    const socket = this.socket;
    if (socket.destroyed) return;
    try {
      // Runs of strings are joined first: one conversion per run, not one per response piece.
      const bufs: Buffer[] = [];
      let run: string[] = [];
      for (const p of parts) {
        if (typeof p === "string") run.push(p);
        else {
          if (run.length > 0) bufs.push(Buffer.from(run.join(""), "utf8"));
          run = [];
          bufs.push(p);
        }
      }
      if (run.length > 0) bufs.push(Buffer.from(run.join(""), "utf8"));
      const buf = bufs.length === 1 ? bufs[0]! : Buffer.concat(bufs);
      if (socket.write(buf)) return;
      await new Promise<void>((resolve) => {
        const done = () => {
          socket.off("drain", done);
          socket.off("close", done);
          resolve();
        };
        socket.on("drain", done);
        socket.on("close", done);
      });
    } catch (err) {
      this.log.debug({ err }, "write failed");
      this.close();
    }
  }

  /** Flushes when a lot is collected (long FETCH responses). */
  async flushIfLarge(limit = 256 * 1024): Promise<void> {
    if (this.out.size >= limit) await this.flush();
  }

  tagged(tag: string, r: Result): void {
    const resp: Response = { tag, command: r.status, text: r.text };
    if (r.code) resp.code = r.code;
    this.send(resp);
  }

  // ---- input ------------------------------------------------------------------------------------

  private attach(socket: net.Socket): void {
    socket.on("data", this.onDataBound);
    socket.on("error", (err) => {
      this.log.debug({ err: err.message }, "socket error");
      this.close();
    });
    socket.on("close", () => this.close());
    socket.on("timeout", () => {
      this.send({ tag: "*", command: "BYE", text: "Autologout; idle for too long" });
      void this.flush().finally(() => this.end());
    });
  }

  private setTimeout(): void {
    // RFC 3501 §5.4: the autologout timer of an authenticated session is at least 30 minutes.
    const base = this.config.limits.idleTimeout * 1000;
    const ms = this.state === "notAuthenticated" ? base : Math.max(base, 30 * 60 * 1000);
    this.socket.setTimeout(ms);
  }

  private onData(chunk: Buffer): void {
    if (this.closed || this.dropInput) return;
    let events: FramerEvent[];
    try {
      ({ events } = this.framer.push(chunk, (e) => e.type === "command" && this.isStartTls(e.frame)));
    } catch (err) {
      this.log.error({ err }, "framer failure");
      this.fatal("Internal error");
      return;
    }
    for (const e of events) {
      switch (e.type) {
        case "command":
          if (this.isStartTls(e.frame)) this.dropInput = true; // RFC 3207-class injection: drop what follows
          this.queue.push(e.frame);
          break;
        case "continue":
          this.send({ tag: "+", command: "Ready for literal data" });
          void this.flush();
          break;
        case "reject":
          this.send({ tag: e.tag ?? "*", command: e.status, ...(e.code ? { code: { name: e.code } } : {}), text: e.text });
          // a refused continuation line still ends the IDLE/AUTHENTICATE exchange (as an empty line)
          if (this.rawWaiter) this.resolveRaw(Buffer.alloc(0));
          this.countBad();
          void this.flush();
          break;
        case "fatal":
          if (e.tag) this.send({ tag: e.tag, command: "BAD", code: { name: "TOOBIG" }, text: e.text });
          this.fatal(e.text);
          return;
        case "line":
          this.resolveRaw(e.line);
          break;
      }
    }
    if (this.queue.length > 16) this.socket.pause();
    void this.pump();
  }

  private isStartTls(frame: Frame): boolean {
    if (this.secure || this.state !== "notAuthenticated" || !this.ctx.secureContext) return false;
    const first = frame.segments[0];
    return frame.segments.length === 1 && first !== undefined && /^[^ ]+ starttls$/i.test(first.toString("latin1"));
  }

  /**
   * The next line the client sends, raw (AUTHENTICATE responses, IDLE's DONE). A line already
   * framed as a pipelined command is taken from the queue. Resolves null when the session ends.
   */
  readRawLine(): Promise<Buffer | null> {
    const queued = this.queue.shift();
    if (queued) {
      return Promise.resolve(Buffer.concat(queued.segments));
    }
    if (this.closed) return Promise.resolve(null);
    return new Promise((resolve) => {
      this.rawWaiter = { resolve };
      this.framer.rawLine = true;
      this.socket.resume();
    });
  }

  private resolveRaw(line: Buffer | null): void {
    const w = this.rawWaiter;
    this.rawWaiter = null;
    this.framer.rawLine = false;
    w?.resolve(line);
  }

  private async pump(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      while (this.queue.length > 0 && !this.closed) {
        const frame = this.queue.shift()!;
        await this.execute(frame);
        await this.flush();
        if (this.queue.length <= 4 && !this.closed) this.socket.resume();
      }
    } catch (err) {
      // execute() answers every command itself; anything here is a bug: end this session only.
      this.log.error({ err }, "session failure");
      this.fatal("Internal error");
    } finally {
      this.busy = false;
    }
  }

  private countBad(): void {
    this.badCommands++;
    if (this.badCommands >= this.config.limits.badCommands) this.fatal("Too many invalid commands");
  }

  private async execute(frame: Frame): Promise<void> {
    let cmd: Command;
    try {
      cmd = parseCommand(frame);
    } catch (err) {
      const e = err as ParseError;
      this.send({ tag: e.tag ?? "*", command: "BAD", text: e instanceof ParseError ? e.message : "Invalid command" });
      this.countBad();
      return;
    }
    const spec = this.ctx.commands.get(cmd.name);
    if (!spec) {
      this.tagged(cmd.tag, { status: "BAD", text: `Unknown command ${cmd.name.slice(0, 40)}` });
      this.countBad();
      return;
    }
    if (!spec.states.includes(this.state)) {
      const why =
        this.state === "notAuthenticated"
          ? "Log in first"
          : this.state === "authenticated"
            ? "No mailbox selected"
            : "Not allowed in this state";
      this.tagged(cmd.tag, { status: "BAD", text: `${cmd.name} not allowed now: ${why}` });
      this.countBad();
      return;
    }
    const argErr = checkArgs(spec.args, cmd.args);
    if (argErr) {
      this.tagged(cmd.tag, { status: "BAD", text: `${cmd.name}: ${argErr}` });
      this.countBad();
      return;
    }
    let result: Result;
    try {
      const r = await spec.run(this, cmd.args, cmd.tag);
      if (r && "answered" in r) return;
      result = r ?? { status: "OK", text: `${cmd.name} completed` };
    } catch (err) {
      if (err instanceof ImapError) {
        result = { status: err.status, text: err.message };
        if (err.code) result.code = err.code;
        if (err.status === "BAD") this.countBad();
      } else if (err instanceof ParseError) {
        result = { status: "BAD", text: err.message };
        this.countBad();
      } else {
        result = storeErrorResult(err, this.log, cmd.name);
      }
    }
    if (this.closed) return;
    if (this.selected && this.state === "selected") {
      try {
        await this.syncSelected(spec.expungeAllowed !== false);
      } catch (err) {
        if ((err as Error).name === "NoSuchFolderError") {
          // Deleted or renamed by another session: IMAP4rev1 has no way to say so but BYE.
          this.tagged(cmd.tag, result);
          this.fatal("Selected mailbox was deleted or renamed");
          return;
        }
        this.log.warn({ err }, "sync failed");
      }
    }
    this.tagged(cmd.tag, result);
  }

  // ---- selected mailbox ---------------------------------------------------------------------------

  async select(mailbox: Mailbox, name: string, readOnly: boolean): Promise<SelectedView> {
    await this.unselect(true);
    this.selected = new SelectedView(mailbox, name, readOnly);
    this.state = "selected";
    return this.selected;
  }

  /**
   * Leaves the selected state. With QRESYNC or IMAP4rev2, a `[CLOSED]` tells the client the old
   * mailbox ended (RFC 7162 §3.2.11, RFC 9051 §6.3.2).
   */
  async unselect(announce = false): Promise<void> {
    const sel = this.selected;
    if (!sel) return;
    this.selected = null;
    this.state = "authenticated";
    this.savedSearch = [];
    if (announce && (this.qresync || this.rev2))
      this.send({ tag: "*", command: "OK", code: { name: "CLOSED" }, text: "Previous mailbox closed" });
    await sel.mailbox.close().catch(() => undefined);
  }

  /**
   * Catches up with changes from other sessions and processes and tells the client:
   * EXPUNGE (or VANISHED with QRESYNC), EXISTS, FETCH FLAGS (RFC 3501 §7.3, §7.4; RFC 7162 §3.2.10).
   */
  async syncSelected(expungeAllowed: boolean): Promise<void> {
    const sel = this.selected;
    if (!sel) return;
    const changes = await sel.mailbox.sync();
    if (this.selected !== sel) return;
    for (const uid of changes.removed) sel.pendingRemoved.add(uid);
    if (expungeAllowed && sel.pendingRemoved.size > 0) this.announceExpunged(sel, [...sel.pendingRemoved]);
    if (changes.added.length > 0) {
      let last = sel.maxUid;
      for (const uid of changes.added) {
        if (uid > last) {
          sel.uids.push(uid);
          last = uid;
        }
      }
      this.untagged(`${sel.count} EXISTS`);
      if (!this.rev2) this.untagged("0 RECENT");
    }
    if (changes.added.length > 0 || changes.flagsChanged.length > 0) {
      const msgs = sel.mailbox.messages();
      const touched: string[] = [];
      for (const uid of [...changes.added, ...changes.flagsChanged]) touched.push(...(sel.infoByUid(uid, msgs)?.flags ?? []));
      this.announceKeywords(sel, touched);
    }
    if (changes.flagsChanged.length > 0) {
      const msgs = sel.mailbox.messages();
      for (const uid of changes.flagsChanged) {
        const seq = sel.seqOf(uid);
        const info = sel.infoByUid(uid, msgs);
        if (!seq || !info) continue;
        const key = flagsKey(info.flags);
        if (sel.knownFlags.get(uid) === key) continue;
        const attrs: Value[] = [];
        if (this.qresync) attrs.push("UID", uid);
        attrs.push("FLAGS", info.flags.slice());
        if (this.condstore) attrs.push("MODSEQ", [info.modseq]);
        this.untagged(`${seq} FETCH`, [attrs]);
      }
    }
    sel.knownFlags.clear();
  }

  /** FLAGS and PERMANENTFLAGS again when keywords appear that the client was not told about (RFC 3501 §7.2.6). */
  announceKeywords(sel: SelectedView, flags: readonly string[]): void {
    let fresh = false;
    for (const f of flags) {
      if (f.startsWith("\\") || sel.keywords.has(f.toLowerCase())) continue;
      sel.keywords.set(f.toLowerCase(), f);
      fresh = true;
    }
    if (!fresh) return;
    const kw = [...sel.keywords.values()].sort();
    this.untagged("FLAGS", [new IRaw(`(${[...SYSTEM_FLAGS, ...kw].join(" ")})`)]);
    if (!sel.readOnly)
      this.send({
        tag: "*",
        command: "OK",
        code: { name: "PERMANENTFLAGS", args: [new IRaw(`(${[...SYSTEM_FLAGS, ...kw, "\\*"].join(" ")})`)] },
        text: "Flags permitted",
      });
  }

  /** Tells the client about expunged messages and takes them out of the sequence space. */
  announceExpunged(sel: SelectedView, uids: number[]): void {
    const gone = new Set<number>();
    const seqs: number[] = [];
    for (const uid of uids) {
      sel.pendingRemoved.delete(uid);
      const seq = sel.seqOf(uid);
      if (seq > 0 && !gone.has(uid)) {
        gone.add(uid);
        seqs.push(seq);
      }
    }
    if (seqs.length === 0) return;
    if (this.qresync) {
      this.untagged("VANISHED", [formatSeqSet([...gone])]);
    } else {
      // Highest first, so each number is still right when the client reads it.
      seqs.sort((a, b) => b - a);
      for (const s of seqs) this.sendRaw(`* ${s} EXPUNGE\r\n`);
    }
    sel.uids = sel.uids.filter((u) => !gone.has(u));
  }

  // ---- state changes ------------------------------------------------------------------------------

  loggedIn(user: string): void {
    this.user = user;
    this.state = "authenticated";
    const lineLimit = this.config.limits.imapLineLength;
    const literal = Math.max(this.config.limits.messageSize, lineLimit);
    // After login: LITERAL+ up to the message size limit (RFC 7888 §4, RFC 7889 APPENDLIMIT).
    this.framer.setLimits({ maxLine: lineLimit, maxLiteral: literal, maxNonSync: literal, maxLiterals: 1000 });
    this.setTimeout();
    this.log.info({ user }, "logged in");
  }

  /** STARTTLS: answer OK, then hand the socket to TLS. Buffered plaintext is already dropped. */
  async startTls(tag: string): Promise<void> {
    const ctx = this.ctx.secureContext;
    if (!ctx) throw new ImapError("NO", "TLS is not available");
    this.framer.reset();
    this.queue.length = 0;
    this.tagged(tag, { status: "OK", text: "Begin TLS negotiation now" });
    await this.flush();
    const plain = this.socket;
    plain.off("data", this.onDataBound);
    const secure = new tls.TLSSocket(plain, { isServer: true, secureContext: ctx });
    this.socket = secure;
    secure.on("error", (err) => {
      this.log.debug({ err: err.message }, "TLS error");
      this.close();
    });
    secure.on("close", () => this.close());
    secure.on("secure", () => {
      this.secure = true;
      this.dropInput = false;
      this.framer.reset();
      secure.on("data", this.onDataBound);
    });
  }

  /** Ends the session with a BYE. */
  fatal(text: string): void {
    if (this.closed) return;
    this.send({ tag: "*", command: "BYE", text });
    void this.flush().finally(() => this.end());
  }

  end(): void {
    if (this.closed) return;
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 2000).unref();
    this.close();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.queue.length = 0;
    this.resolveRaw(null);
    const sel = this.selected;
    this.selected = null;
    if (sel) void sel.mailbox.close().catch(() => undefined);
    this.ctx.sessions.delete(this);
    for (const fn of this.closedHandlers) {
      try {
        fn();
      } catch {
        // ignore
      }
    }
    this.closedHandlers = [];
    if (!this.socket.destroyed) {
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 1000).unref();
    }
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** The server is shutting down. */
  shutdown(): void {
    this.fatal("Server shutting down");
  }
}

/** IMAP names: `/` separator, INBOX case-insensitive, no trailing separator (RFC 3501 §5.1). */
export function normalizeMailboxName(name: string): string {
  let n = name;
  if (n.length > 1 && n.endsWith("/")) n = n.slice(0, -1);
  if (/^inbox$/i.test(n)) return "INBOX";
  if (/^inbox\//i.test(n)) return `INBOX/${n.slice(6)}`;
  return n;
}

/** Store failures as tagged responses; unexpected ones are logged and reported as SERVERBUG. */
export function storeErrorResult(err: unknown, log: Logger, command: string): Result {
  const e = err as { name?: string; code?: string; message?: string };
  if (e?.name === "NoSuchFolderError") return { status: "NO", code: { name: "NONEXISTENT" }, text: "No such mailbox" };
  if (e?.code === "EXPUNGED" || e?.name === "ExpungedError")
    return { status: "NO", code: { name: "EXPUNGEISSUED" }, text: "Some of the requested messages no longer exist" };
  if (e?.code === "ENOSPC" || e?.code === "EDQUOT") return { status: "NO", code: { name: "OVERQUOTA" }, text: "Out of space" };
  // Races with another session (created or removed meanwhile) reach us as the store's plain errors.
  if (/already exists/i.test(e?.message ?? "")) return { status: "NO", code: { name: "ALREADYEXISTS" }, text: "Mailbox already exists" };
  if (/invalid folder name/i.test(e?.message ?? "")) return { status: "NO", code: { name: "CANNOT" }, text: "Invalid mailbox name" };
  log.error({ err, command }, "command failed");
  return { status: "NO", code: { name: "SERVERBUG" }, text: "Internal error; try again later" };
}
