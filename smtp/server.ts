/**
 * The SMTP service (the Postfix role): listeners on smtp (25, STARTTLS offered), submission
 * (587, STARTTLS then AUTH required) and smtps (465, implicit TLS then AUTH required, RFC 8314),
 * connection limits, and clean shutdown. Sessions live in smtp/session.ts.
 */
import * as net from "node:net";
import * as tls from "node:tls";
import type { Logger } from "pino";
import type { EndpointName, MailConfig } from "../config/schema";
import { unmapV4 } from "../lib/cidr";
import { createLogger } from "../lib/log";
import type { Listener, RunningService, StartOptions } from "../lib/service";
import { loadTls, type TlsMaterial } from "../lib/tls";
import { Spool } from "../queue/spool";
import { MaildirDelivery } from "../store/deliver";
import { ensureUserMaildir } from "../store/maildir";
import { QuotaTracker } from "../store/quota";
import type { Authenticator, Delivery } from "../store/types";
import { UserDb } from "../store/users";
import type { ListenerKind, OutboundQueue, SmtpContext } from "./context";
import { ConnectionLimiter } from "./limits";
import { Policy } from "./policy";
import { createReverseResolver } from "./resolver";
import { Session } from "./session";

export interface SmtpOptions extends StartOptions {
  /** Local delivery (default: Maildirs under dataDir). */
  delivery?: Delivery;
  /** The outbound queue for relayed and forwarded mail (default: the spool under dataDir). */
  spool?: OutboundQueue;
  /** Logins (default: the stack's users). */
  auth?: Authenticator;
  /** Certificate and key (default: lib/tls.ts loadTls). `false` runs without TLS (no STARTTLS, no smtps). */
  tls?: TlsMaterial | false;
  /** Quota usage of the users' Maildirs (default: one for dataDir; share it with IMAP in one process). */
  quota?: QuotaTracker;
}

const KINDS: ListenerKind[] = ["smtp", "submission", "smtps"];

/** Longest command line: AUTH lines may carry 12288 octets (RFC 4954 §4); far above 512. */
export const MAX_COMMAND_LINE = 12288;

export interface SmtpServerHandle extends RunningService {
  /** Sessions open right now. */
  readonly connections: number;
}

export async function startSmtpServer(config: MailConfig, opts: SmtpOptions = {}): Promise<SmtpServerHandle> {
  const log: Logger = opts.log ?? createLogger("smtp");
  const material = opts.tls === undefined ? await loadTls(config) : opts.tls;
  const secureContext = material ? tls.createSecureContext({ key: material.key, cert: material.cert, minVersion: "TLSv1.2" }) : null;
  const policy = new Policy(config);
  if (!opts.delivery) {
    // Every user's Maildir exists before the first message, so concurrent first deliveries
    // never race to create it.
    for (const u of config.users) await ensureUserMaildir(config.dataDir, u.name);
  }
  const ctx: SmtpContext = {
    config,
    log,
    policy,
    auth: opts.auth ?? new UserDb(config),
    delivery: opts.delivery ?? new MaildirDelivery(config.dataDir),
    spool: opts.spool ?? new Spool(config),
    quota: opts.quota ?? new QuotaTracker(config.dataDir, config.users),
    secureContext,
    resolver: createReverseResolver(config, log),
    maxLine: MAX_COMMAND_LINE,
  };
  const limiter = new ConnectionLimiter(config.limits.maxConnections, config.limits.connectionsPerClient, (a) => policy.isTrusted(a));
  const sessions = new Set<Session>();
  const pending = new Set<net.Socket>();
  const servers: net.Server[] = [];
  const listeners: Listener[] = [];
  let closing = false;

  const refuse = (socket: net.Socket, kind: ListenerKind, why: "total" | "client") => {
    log.info({ client: socket.remoteAddress, reason: why, active: limiter.active }, "connection refused: limit");
    socket.on("error", () => undefined);
    if (kind === "smtps") {
      socket.destroy();
      return;
    }
    const text = why === "total" ? "Error: too many connections" : "Error: too many connections from your address";
    socket.end(`421 4.7.0 ${config.hostname} ${text}\r\n`);
    setTimeout(() => socket.destroy(), 2000).unref();
  };

  const onConnection = (kind: ListenerKind, socket: net.Socket) => {
    if (closing) return void socket.destroy();
    const admission = limiter.admit(unmapV4(socket.remoteAddress ?? ""));
    if (typeof admission === "string") return refuse(socket, kind, admission);
    const start = (s: net.Socket) => {
      const session = new Session(ctx, kind, s, () => {
        sessions.delete(session);
        admission.release();
      });
      sessions.add(session);
      session.start();
    };
    if (kind !== "smtps") return start(socket);
    // Implicit TLS: the handshake comes first, within the idle timeout.
    pending.add(socket);
    const secure = new tls.TLSSocket(socket, { isServer: true, secureContext: secureContext! });
    const fail = (err?: Error) => {
      if (err) log.debug({ client: socket.remoteAddress, err: err.message }, "TLS handshake failed");
      pending.delete(socket);
      admission.release();
      secure.destroy();
      socket.destroy();
    };
    socket.setTimeout(config.limits.idleTimeout * 1000, () => fail());
    socket.on("error", () => undefined);
    secure.once("error", fail);
    secure.once("close", () => pending.has(socket) && fail());
    secure.once("secure", () => {
      pending.delete(socket);
      socket.setTimeout(0);
      secure.removeListener("error", fail);
      start(secure);
    });
  };

  try {
    for (const kind of KINDS) {
      const ep = config.listen[kind as EndpointName];
      if (!ep) continue;
      if (kind === "smtps" && !secureContext) {
        log.warn("smtps is configured but TLS is off; not listening on it");
        continue;
      }
      const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => onConnection(kind, socket));
      server.on("error", (err) => log.error({ err: err.message, listener: kind }, "listener error"));
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen({ port: ep.port, host: ep.address, backlog: 1024 }, () => {
          server.removeListener("error", reject);
          resolve();
        });
      });
      servers.push(server);
      const addr = server.address() as net.AddressInfo;
      listeners.push({ name: kind, address: addr.address, port: addr.port, protocol: "tcp" });
    }
  } catch (err) {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    throw err;
  }
  log.info({ listeners: listeners.map((l) => `${l.name} ${l.address}:${l.port}`) }, "smtp listening");

  let closed: Promise<void> | null = null;
  return {
    name: "smtp",
    listeners,
    get connections() {
      return sessions.size;
    },
    close() {
      closed ??= (async () => {
        closing = true;
        const stopped = Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
        for (const s of pending) s.destroy();
        for (const s of sessions) s.shutdown();
        // In-flight deliveries finish and are answered; idle sessions had 421 and a second to
        // go; after 10 s every socket goes.
        const started = Date.now();
        while (sessions.size > 0 && Date.now() - started < 10_000) {
          await new Promise((r) => setTimeout(r, 20));
          if (Date.now() - started > 1000) for (const s of sessions) if (!s.isBusy) s.socket.destroy();
        }
        for (const s of sessions) s.socket.destroy();
        await stopped;
        log.info("smtp stopped");
      })();
      return closed;
    },
  };
}
