/**
 * POP3 listeners: `pop3` (plain, with STLS) and `pop3s` (implicit TLS, RFC 8314). Sockets are
 * adapted to the session's `SessionTransport`; connection limits (per client address and in
 * total, across both listeners) are enforced here, before a session exists.
 */
import { once } from "node:events";
import * as net from "node:net";
import * as tls from "node:tls";
import type { Logger } from "pino";
import type { Endpoint } from "../config/schema";
import type { Listener } from "../lib/service";
import { clientKey } from "../lib/throttle";
import { Pop3Session, type SessionServices, type SessionTransport } from "./session";
import { err } from "./wire";

/** How long a TLS handshake (pop3s or after STLS) may take. */
const HANDSHAKE_TIMEOUT_MS = 30_000;
/** What write() returns when the kernel took the data at once (most writes): no promise per write. */
const DONE: Promise<void> = Promise.resolve();

class SocketTransport implements SessionTransport {
  readonly remoteAddress: string;
  private socket: net.Socket;
  private secureNow: boolean;
  private upgrading = false;
  private handlers: { data: (chunk: Buffer) => void; end: () => void } | null = null;

  constructor(
    socket: net.Socket,
    secure: boolean,
    private readonly context: tls.SecureContext | null,
    private readonly log: Logger,
  ) {
    this.socket = socket;
    this.secureNow = secure;
    this.remoteAddress = socket.remoteAddress ?? "unknown";
  }

  get secure(): boolean {
    return this.secureNow;
  }

  get canStartTls(): boolean {
    return !this.secureNow && this.context !== null && !this.upgrading;
  }

  /** Starts delivering bytes and the client's half-close (again, after STLS, from the TLS socket). */
  attach(handlers: { data: (chunk: Buffer) => void; end: () => void }): void {
    this.handlers = handlers;
    this.socket.on("data", handlers.data);
    this.socket.on("end", handlers.end);
  }

  write(data: string | Buffer): Promise<void> {
    const socket = this.socket;
    if (socket.destroyed || !socket.writable) return DONE;
    try {
      if (socket.write(data)) return DONE;
    } catch {
      return DONE;
    }
    // Back-pressure: wait for the kernel to take it, or for the end of the connection.
    return new Promise((resolve) => {
      const done = () => {
        socket.off("close", done);
        socket.off("drain", done);
        resolve();
      };
      socket.once("drain", done);
      socket.once("close", done);
    });
  }

  get flushed(): boolean {
    return this.socket.writableLength === 0;
  }

  prepareTls(): () => Promise<void> {
    const raw = this.socket;
    if (this.handlers) {
      raw.off("data", this.handlers.data);
      raw.off("end", this.handlers.end);
    }
    // Bytes the client sends from now on stay unread in the socket: the TLS layer reads them.
    raw.pause();
    this.upgrading = true;
    return async () => {
      const secure = new tls.TLSSocket(raw, { isServer: true, secureContext: this.context! });
      secure.on("error", (e) => this.log.debug({ err: e.message }, "tls socket error"));
      const timer = setTimeout(() => secure.destroy(new Error("TLS handshake timeout")), HANDSHAKE_TIMEOUT_MS);
      try {
        await Promise.race([
          once(secure, "secure"),
          once(secure, "close").then(() => {
            throw new Error("connection closed during TLS handshake");
          }),
        ]);
      } finally {
        clearTimeout(timer);
      }
      this.socket = secure;
      this.secureNow = true;
      this.upgrading = false;
      if (this.handlers) {
        secure.on("data", this.handlers.data);
        secure.on("end", this.handlers.end);
      }
    };
  }

  pause(): void {
    if (!this.upgrading) this.socket.pause();
  }

  resume(): void {
    if (!this.upgrading) this.socket.resume();
  }

  end(): void {
    const socket = this.socket;
    socket.end();
    // A client that never reads must not keep the socket half-open forever.
    setTimeout(() => socket.destroy(), 5_000).unref();
  }
}

export interface Pop3ServerOptions {
  services: SessionServices;
  secureContext: tls.SecureContext | null;
  pop3: Endpoint | null;
  pop3s: Endpoint | null;
  /** Runs last in close(), e.g. to flush a store the service created itself. */
  onClosed?: () => Promise<void>;
}

export class Pop3Server {
  readonly listeners: Listener[] = [];
  private readonly servers: net.Server[] = [];
  private readonly sessions = new Set<Pop3Session>();
  private readonly sockets = new Set<net.Socket>();
  private readonly perClient = new Map<string, number>();
  private total = 0;
  private closing: Promise<void> | null = null;
  private readonly log: Logger;

  constructor(private readonly opts: Pop3ServerOptions) {
    this.log = opts.services.log;
  }

  async listen(): Promise<void> {
    const { pop3, pop3s, secureContext } = this.opts;
    // Half-open: a client may send "QUIT" and shut its side at once; the QUIT is still answered.
    const options = { allowHalfOpen: true };
    if (pop3)
      await this.bind(
        "pop3",
        pop3,
        net.createServer(options, (s) => this.accept(s, false)),
      );
    if (pop3s) {
      if (!secureContext) throw new Error("pop3s needs a TLS certificate");
      await this.bind(
        "pop3s",
        pop3s,
        net.createServer(options, (s) => this.accept(s, true)),
      );
    }
  }

  private async bind(name: string, ep: Endpoint, server: net.Server): Promise<void> {
    server.on("error", (e) => this.log.error({ err: e.message, listener: name }, "listener error"));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(ep.port, ep.address, () => {
        server.off("error", reject);
        resolve();
      });
    });
    const addr = server.address() as net.AddressInfo;
    this.servers.push(server);
    this.listeners.push({ name, address: addr.address, port: addr.port, protocol: "tcp" });
    this.log.info({ listener: name, address: addr.address, port: addr.port }, "listening");
  }

  private accept(raw: net.Socket, implicitTls: boolean): void {
    raw.on("error", (e) => this.log.debug({ err: e.message }, "socket error"));
    if (this.closing) {
      raw.destroy();
      return;
    }
    const limits = this.opts.services.config.limits;
    const key = clientKey(raw.remoteAddress ?? "unknown");
    const mine = this.perClient.get(key) ?? 0;
    if (this.total >= limits.maxConnections || mine >= limits.connectionsPerClient) {
      this.log.warn({ remote: raw.remoteAddress, total: this.total, fromClient: mine }, "connection limit");
      // Over implicit TLS nothing can be said before a handshake we do not want to pay for.
      if (implicitTls) raw.destroy();
      else {
        raw.end(err(mine >= limits.connectionsPerClient ? "Too many connections from your address." : "Too many connections.", "SYS/TEMP"));
        setTimeout(() => raw.destroy(), 5_000).unref();
      }
      return;
    }
    this.total++;
    this.perClient.set(key, mine + 1);
    this.sockets.add(raw);
    raw.once("close", () => {
      this.sockets.delete(raw);
      this.total--;
      const n = (this.perClient.get(key) ?? 1) - 1;
      if (n <= 0) this.perClient.delete(key);
      else this.perClient.set(key, n);
    });
    raw.setNoDelay(true);
    if (implicitTls) void this.startImplicitTls(raw);
    else void this.startSession(raw, raw, false);
  }

  private async startImplicitTls(raw: net.Socket): Promise<void> {
    const secure = new tls.TLSSocket(raw, { isServer: true, secureContext: this.opts.secureContext! });
    secure.on("error", (e) => this.log.debug({ err: e.message }, "tls error"));
    const timer = setTimeout(() => secure.destroy(), HANDSHAKE_TIMEOUT_MS);
    try {
      await Promise.race([
        once(secure, "secure"),
        once(secure, "close").then(() => {
          throw new Error("closed during handshake");
        }),
      ]);
    } catch {
      raw.destroy();
      return;
    } finally {
      clearTimeout(timer);
    }
    await this.startSession(secure, raw, true);
  }

  private async startSession(socket: net.Socket, raw: net.Socket, secure: boolean): Promise<void> {
    const transport = new SocketTransport(socket, secure, secure ? null : this.opts.secureContext, this.log);
    const session = new Pop3Session(this.opts.services, transport);
    this.sessions.add(session);
    raw.once("close", () => {
      void session.transportClosed().finally(() => this.sessions.delete(session));
    });
    if (raw.destroyed) {
      await session.transportClosed();
      this.sessions.delete(session);
      return;
    }
    transport.attach({ data: (chunk) => session.receive(chunk), end: () => session.inputEnded() });
    try {
      await session.start();
    } catch (e) {
      this.log.error({ err: (e as Error).message }, "session start failed");
      socket.destroy();
    }
  }

  /** Stops listening, ends every session (nothing is deleted), releases maildrop locks. Idempotent. */
  close(): Promise<void> {
    if (!this.closing) {
      this.closing = (async () => {
        const stopped = this.servers.map((s) => new Promise<void>((r) => s.close(() => r())));
        await Promise.all([...this.sessions].map((s) => s.shutdown().catch(() => undefined)));
        // Give the goodbye lines a moment to leave, then cut whatever is left.
        const sockets = [...this.sockets];
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          Promise.all(sockets.map((sock) => (sock.destroyed ? undefined : once(sock, "close").catch(() => undefined)))),
          new Promise((r) => {
            timer = setTimeout(r, 1000);
          }),
        ]);
        clearTimeout(timer);
        for (const sock of this.sockets) sock.destroy();
        await Promise.all([...this.sessions].map((s) => s.transportClosed()));
        await Promise.all(stopped);
        await this.opts.onClosed?.();
      })();
    }
    return this.closing;
  }
}
