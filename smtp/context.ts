/** What every SMTP session shares: config, policy and the narrow interfaces to storage. */
import type { SecureContext } from "node:tls";
import type { Logger } from "pino";
import type { MailConfig } from "../config/schema";
import type { EnqueueRequest } from "../queue/spool";
import type { QuotaTracker } from "../store/quota";
import type { Authenticator, Delivery } from "../store/types";
import type { Policy } from "./policy";

/** The producer side of the outbound queue (queue/spool.ts `Spool`). */
export interface OutboundQueue {
  /** Durably stores the message under this queue id (file and directory fsynced) before resolving. */
  enqueueAs(id: string, msg: EnqueueRequest): Promise<string>;
}

/** Reverse lookups through the configured resolvers only (never the machine's resolver). */
export interface ReverseResolver {
  /** The forward-confirmed host name of an address, or null. Never rejects. */
  lookup(address: string): Promise<string | null>;
}

export type ListenerKind = "smtp" | "submission" | "smtps";

export interface SmtpContext {
  config: MailConfig;
  log: Logger;
  policy: Policy;
  auth: Authenticator;
  delivery: Delivery;
  spool: OutboundQueue;
  /** Per-user quotas (`users[].quota`), checked at RCPT and at the end of DATA. */
  quota: QuotaTracker;
  /** null: no TLS (STARTTLS not offered). */
  secureContext: SecureContext | null;
  resolver: ReverseResolver | null;
  /** Longest command line accepted, in octets (RFC 5321 §4.5.3.1.4: at least 512; AUTH lines up to 12288, RFC 4954 §4). */
  maxLine: number;
}
