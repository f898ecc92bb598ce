/** HELO and EHLO (RFC 5321 §4.1.1.1): greet, reset the transaction, list the extensions. */
import { reply } from "../reply";
import type { Session } from "../session";

function greet(s: Session, arg: string, verb: string): string | null {
  const name = arg.split(" ")[0] ?? "";
  if (name === "" || name.length > 255) return null;
  s.resetTransaction();
  s.helo = name;
  s.esmtp = verb === "EHLO";
  return name;
}

export function helo(s: Session, arg: string, verb: string) {
  if (greet(s, arg, verb) === null) return reply(501, "5.5.4", "Syntax: HELO hostname");
  return reply(250, "", s.ctx.config.hostname);
}

export function ehlo(s: Session, arg: string, verb: string) {
  if (greet(s, arg, verb) === null) return reply(501, "5.5.4", "Syntax: EHLO hostname");
  const { config, secureContext, policy } = s.ctx;
  const lines = [config.hostname, "PIPELINING", `SIZE ${config.limits.messageSize}`];
  if (!s.secure && secureContext) lines.push("STARTTLS");
  // AUTH is offered only where it may be used (Postfix's smtpd_tls_auth_only): on submission
  // ports after STARTTLS, elsewhere over TLS or from trusted networks.
  const authOk = policy.authAllowed(s.secure, s.trusted) && (!s.requiresAuth || s.secure);
  if (authOk) lines.push("AUTH PLAIN LOGIN", "AUTH=PLAIN LOGIN");
  lines.push("ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8");
  return reply(250, "", lines);
}
