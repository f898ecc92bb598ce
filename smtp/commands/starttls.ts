/** STARTTLS (RFC 3207). The session does the upgrade and discards pipelined plaintext. */
import { reply } from "../reply";
import type { Session } from "../session";

export function starttls(s: Session, arg: string) {
  if (!s.ctx.secureContext) return reply(454, "4.7.0", "TLS not available");
  if (s.secure) return reply(503, "5.5.1", "Error: TLS already active");
  if (arg !== "") return reply(501, "5.5.4", "Syntax: STARTTLS");
  s.startTls();
  return null;
}
