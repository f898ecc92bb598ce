/**
 * STARTTLS (RFC 3501 §6.2.1, RFC 2595). Whatever the client sent after the command in plaintext
 * has been dropped by the session (the CVE-2011-0411 class of command injection).
 */
import { ANSWERED, bad, type CommandSpec, NOT_AUTHENTICATED } from "../command";

export const starttls: CommandSpec = {
  name: "STARTTLS",
  states: NOT_AUTHENTICATED,
  args: [],
  async run(s, _args, tag) {
    if (s.secure) throw bad("TLS is already active");
    if (!s.ctx.secureContext) throw bad("TLS is not available");
    await s.startTls(tag);
    return ANSWERED;
  },
};
