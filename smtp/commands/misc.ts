/** RSET, NOOP, QUIT, HELP, VRFY and EXPN (RFC 5321 §4.1.1.5-10). */
import { R, reply } from "../reply";
import type { Session } from "../session";

export function rset(s: Session) {
  s.resetTransaction();
  return R.ok();
}

export function noop() {
  return R.ok();
}

export function quit(s: Session) {
  return reply(221, "2.0.0", `${s.ctx.config.hostname} Bye`, true);
}

export function help() {
  return reply(214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT STARTTLS AUTH HELP");
}

/** VRFY would confirm which users exist; disabled (Postfix's disable_vrfy_command = yes). */
export function vrfy() {
  return reply(502, "5.5.1", "VRFY command is disabled");
}

/** EXPN would list alias members; not offered. */
export function expn() {
  return reply(502, "5.5.1", "EXPN command is disabled");
}
