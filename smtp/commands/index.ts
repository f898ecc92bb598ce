/**
 * The command table: each verb with the gates it passes and its handler, one module per command
 * (as WildDuck's imap-core registers its commands). The session enforces the gates.
 */
import type { Reply } from "../reply";
import type { Session } from "../session";
import { auth } from "./auth";
import { data } from "./data";
import { ehlo, helo } from "./helo";
import { mail } from "./mail";
import { expn, help, noop, quit, rset, vrfy } from "./misc";
import { rcpt } from "./rcpt";
import { starttls } from "./starttls";

export type Handler = (s: Session, arg: string, verb: string) => Reply | Promise<Reply> | null;

export interface Command {
  handler: Handler;
  /** Allowed before HELO/EHLO. */
  beforeHelo?: boolean;
  /** Allowed on submission ports before STARTTLS. */
  beforeTls?: boolean;
}

export const COMMANDS: ReadonlyMap<string, Command> = new Map<string, Command>([
  ["EHLO", { handler: ehlo, beforeHelo: true, beforeTls: true }],
  ["HELO", { handler: helo, beforeHelo: true, beforeTls: true }],
  ["STARTTLS", { handler: starttls, beforeTls: true }],
  // AUTH passes the submission ports' TLS gate so that it can answer 538 5.7.11 itself (RFC 4954 §6).
  ["AUTH", { handler: auth, beforeTls: true }],
  ["MAIL", { handler: mail }],
  ["RCPT", { handler: rcpt }],
  ["DATA", { handler: data }],
  ["RSET", { handler: rset, beforeHelo: true, beforeTls: true }],
  ["NOOP", { handler: noop, beforeHelo: true, beforeTls: true }],
  ["QUIT", { handler: quit, beforeHelo: true, beforeTls: true }],
  ["HELP", { handler: help, beforeHelo: true, beforeTls: true }],
  ["VRFY", { handler: vrfy, beforeHelo: true }],
  ["EXPN", { handler: expn, beforeHelo: true }],
]);

/**
 * Verbs that show the client is not speaking SMTP at all (Postfix's smtpd_forbidden_commands):
 * an HTTP request, e.g. from a browser tricked into cross-protocol requests.
 */
export const FORBIDDEN: ReadonlySet<string> = new Set(["GET", "POST", "HEAD", "PUT", "OPTIONS", "CONNECT", "HOST:", "USER-AGENT:"]);
