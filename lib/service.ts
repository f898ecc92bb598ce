/** What every service's `start()` returns, so the CLI, the tests and the containers treat them alike. */
import type { Logger } from "pino";
import type { MailConfig } from "../config/schema";
import type { QuotaTracker } from "../store/quota";
import type { Authenticator, MailStore } from "../store/types";

export interface Listener {
  /** Endpoint name from the config (`smtp`, `submission`, `imaps`, `dns`, ...). */
  name: string;
  address: string;
  /** The port actually bound (differs from the config when it asked for port 0). */
  port: number;
  protocol: "tcp" | "udp" | "tcp+udp";
}

export interface RunningService {
  name: "smtp" | "pop3" | "imap" | "dns" | "queue";
  listeners: Listener[];
  /** Stops accepting, ends sessions, releases files. Idempotent. */
  close(): Promise<void>;
}

export interface StartOptions {
  log?: Logger;
  /** Shared by every service of one process, so failed-login throttling spans protocols. */
  auth?: Authenticator;
  /** Shared by every service of one process, so they share one folder index. */
  store?: MailStore;
  /** Shared by SMTP and IMAP in one process, so quota reservations see each other. */
  quota?: QuotaTracker;
}

export type StartService = (config: MailConfig, opts?: StartOptions) => Promise<RunningService>;
