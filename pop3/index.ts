/**
 * The POP3 service (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 SASL, RFC 8314 implicit TLS):
 * `listen.pop3` with STLS and `listen.pop3s` with TLS from the first byte. Port 0 binds an
 * ephemeral port; the returned listeners carry the real ones.
 */
import * as tls from "node:tls";
import type { MailConfig } from "../config/schema";
import { networkMatcher } from "../lib/cidr";
import { createLogger } from "../lib/log";
import type { RunningService, StartOptions } from "../lib/service";
import { loadTls } from "../lib/tls";
import { MaildirStore } from "../store/mailstore";
import type { Authenticator, MailStore } from "../store/types";
import { UserDb } from "../store/users";
import { Pop3Server } from "./server";

export interface Pop3StartOptions extends StartOptions {
  store?: MailStore;
  auth?: Authenticator;
}

export async function startPop3(config: MailConfig, opts: Pop3StartOptions = {}): Promise<RunningService> {
  const log = opts.log ?? createLogger("pop3");
  const material = await loadTls(config);
  const secureContext = tls.createSecureContext({ key: material.key, cert: material.cert, minVersion: "TLSv1.2" });
  const ownStore = opts.store ? null : new MaildirStore(config.dataDir);
  const server = new Pop3Server({
    services: {
      config,
      store: opts.store ?? ownStore!,
      auth: opts.auth ?? new UserDb(config),
      trusted: networkMatcher(config.trustedNetworks),
      lockedUsers: new Set(),
      log,
    },
    secureContext,
    pop3: config.listen.pop3,
    pop3s: config.listen.pop3s,
    onClosed: async () => {
      await ownStore?.flush().catch((e: Error) => log.warn({ err: e.message }, "store flush failed"));
    },
  });
  try {
    await server.listen();
  } catch (e) {
    await server.close();
    throw e;
  }
  return { name: "pop3", listeners: server.listeners, close: () => server.close() };
}
