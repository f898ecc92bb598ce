/**
 * LOGIN (RFC 3501 §6.2.3). Plaintext passwords only over TLS or from trusted networks
 * (LOGINDISABLED otherwise). A wrong password and an unknown user get the same answer after the
 * same delay (the Authenticator's job); the Authenticator also throttles per client address.
 */
import { type CommandSpec, NOT_AUTHENTICATED, no, type Result } from "../command";
import { tokenText } from "../parser";
import type { Session } from "../session";

export const login: CommandSpec = {
  name: "LOGIN",
  states: NOT_AUTHENTICATED,
  args: [
    { kind: "astring", name: "user name" },
    { kind: "astring", name: "password" },
  ],
  async run(s, args) {
    if (!s.plaintextAllowed) throw no("Plaintext authentication is not allowed without TLS; use STARTTLS", "PRIVACYREQUIRED");
    return authenticateUser(s, tokenText(args[0]!)!, tokenText(args[1]!)!);
  },
};

/** Shared by LOGIN and AUTHENTICATE PLAIN. */
export async function authenticateUser(s: Session, user: string, password: string): Promise<Result> {
  const result = await s.ctx.auth.authenticate(user, password, s.remoteAddress);
  if (s.isClosed) return { status: "NO", text: "Connection closed" };
  if (!result.ok) {
    s.authFailures++;
    s.log.info({ reason: result.reason }, "login failed");
    if (s.authFailures >= s.config.limits.authFailures) {
      setImmediate(() => s.fatal("Too many failed logins"));
    }
    if (result.reason === "throttled")
      return { status: "NO", code: { name: "UNAVAILABLE" }, text: "Too many failed logins from your address; try again later" };
    return { status: "NO", code: { name: "AUTHENTICATIONFAILED" }, text: "Authentication failed" };
  }
  s.loggedIn(result.user);
  return { status: "OK", code: { name: "CAPABILITY", args: [s.capabilities().join(" ")] }, text: "Logged in" };
}
