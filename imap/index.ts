/**
 * The IMAP service (RFC 3501 IMAP4rev1, RFC 9051 IMAP4rev2): `listen.imap` with STARTTLS and
 * `listen.imaps` with TLS from the first byte (RFC 8314). Port 0 binds an ephemeral port; the
 * returned listeners carry the real ones. Connection limits: `limits.maxConnections` in all and
 * `limits.connectionsPerClient` per client address.
 */
import * as net from "node:net";
import * as tls from "node:tls";
import type { Endpoint, MailConfig } from "../config/schema";
import { networkMatcher } from "../lib/cidr";
import { createLogger } from "../lib/log";
import type { Listener, RunningService, StartOptions } from "../lib/service";
import { clientKey } from "../lib/throttle";
import { loadTls } from "../lib/tls";
import { MaildirStore } from "../store/mailstore";
import { QuotaTracker } from "../store/quota";
import type { Authenticator, MailStore } from "../store/types";
import { UserDb } from "../store/users";
import { commandRegistry } from "./commands";
import { type ServerContext, Session } from "./session";

export interface ImapStartOptions extends StartOptions {
  store?: MailStore;
  auth?: Authenticator;
  /** Quota usage of the users' Maildirs (default: one for dataDir; share it with SMTP in one process). */
  quota?: QuotaTracker;
}

export async function startImap(config: MailConfig, opts: ImapStartOptions = {}): Promise<RunningService> {
  const log = opts.log ?? createLogger("imap");
  const material = await loadTls(config);
  const secureContext = tls.createSecureContext({ key: material.key, cert: material.cert, minVersion: "TLSv1.2" });
  const ownStore = opts.store ? null : new MaildirStore(config.dataDir);
  const ctx: ServerContext = {
    config,
    store: opts.store ?? ownStore!,
    auth: opts.auth ?? new UserDb(config),
    quota: opts.quota ?? new QuotaTracker(config.dataDir, config.users),
    log,
    secureContext,
    isTrusted: networkMatcher(config.trustedNetworks),
    commands: commandRegistry(),
    sessions: new Set(),
  };
  const perClient = new Map<string, number>();
  const servers: net.Server[] = [];
  const listeners: Listener[] = [];

  const accept = (socket: net.Socket, secure: boolean) => {
    socket.on("error", () => undefined);
    const key = clientKey(socket.remoteAddress ?? "");
    const mine = (perClient.get(key) ?? 0) + 1;
    if (ctx.sessions.size >= config.limits.maxConnections || mine > config.limits.connectionsPerClient) {
      socket.end("* BYE Too many connections, try again later\r\n");
      setTimeout(() => socket.destroy(), 1000).unref();
      return;
    }
    perClient.set(key, mine);
    socket.setNoDelay(true);
    let session: Session;
    try {
      session = new Session(socket, ctx, { secure });
    } catch (err) {
      log.error({ err }, "session setup failed");
      socket.destroy();
      perClient.set(key, (perClient.get(key) ?? 1) - 1);
      return;
    }
    ctx.sessions.add(session);
    session.onClose(() => {
      const n = (perClient.get(key) ?? 1) - 1;
      if (n <= 0) perClient.delete(key);
      else perClient.set(key, n);
    });
    session.start();
  };

  const listen = async (name: "imap" | "imaps", ep: Endpoint) => {
    const server =
      name === "imaps"
        ? tls.createServer({ key: material.key, cert: material.cert, minVersion: "TLSv1.2" }, (s) => accept(s, true))
        : net.createServer((s) => accept(s, false));
    server.on("error", (err) => log.error({ err }, "listener error"));
    if (server instanceof tls.Server) server.on("tlsClientError", (err) => log.debug({ err: err.message }, "TLS handshake failed"));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(ep.port, ep.address, () => {
        server.off("error", reject);
        resolve();
      });
    });
    servers.push(server);
    const addr = server.address() as net.AddressInfo;
    listeners.push({ name, address: addr.address, port: addr.port, protocol: "tcp" });
  };

  try {
    if (config.listen.imap) await listen("imap", config.listen.imap);
    if (config.listen.imaps) await listen("imaps", config.listen.imaps);
  } catch (err) {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    throw err;
  }
  log.info({ listeners }, "IMAP listening");

  let closing: Promise<void> | null = null;
  return {
    name: "imap",
    listeners,
    close() {
      closing ??= (async () => {
        const stopped = Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
        for (const s of [...ctx.sessions]) s.shutdown();
        await new Promise((r) => setTimeout(r, 50));
        for (const s of [...ctx.sessions]) s.close();
        await stopped;
        if (ownStore) await ownStore.flush().catch((err: Error) => log.warn({ err: err.message }, "store flush failed"));
      })();
      return closing;
    },
  };
}
