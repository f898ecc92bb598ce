/**
 * AUTH (RFC 4954) with the SASL mechanisms PLAIN (RFC 4616) and LOGIN. Both send the password
 * in the clear, so they are allowed only over TLS or from trusted networks; anywhere else the
 * answer is 538 5.7.11 (RFC 4954 §6), on the submission port too. A trusted client on the
 * submission port still needs STARTTLS first (530 5.7.0), as for every other command there. An unknown user and a wrong password get the same answer
 * after the same delay (store/users.ts).
 */
import { R, type Reply, reply } from "../reply";
import type { Session } from "../session";

const USERNAME = Buffer.from("Username:").toString("base64");
const PASSWORD = Buffer.from("Password:").toString("base64");

export function auth(s: Session, arg: string): Reply | Promise<Reply> | null {
  if (s.user) return R.badSequence("Error: already authenticated");
  if (s.tx) return R.badSequence("Error: MAIL transaction in progress");
  const [mechRaw, initial, extra] = arg.split(" ");
  if (!mechRaw || extra !== undefined) return reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]");
  const mech = mechRaw.toUpperCase();
  if (mech !== "PLAIN" && mech !== "LOGIN") return reply(504, "5.5.4", "Unrecognized authentication mechanism");
  if (!s.ctx.policy.authAllowed(s.secure, s.trusted))
    return reply(538, "5.7.11", "Encryption required for requested authentication mechanism");
  // Submission (587) takes nothing but EHLO/STARTTLS before TLS, from trusted networks too
  // (Postfix's smtpd_tls_security_level = encrypt there).
  if (s.requiresAuth && !s.secure) return R.needTls();

  if (mech === "PLAIN") {
    if (initial !== undefined) return plain(s, initial);
    s.expectLine((line) => plain(s, line));
    return reply(334, "", "");
  }
  // LOGIN: username, then password, each base64 on its own line.
  const askPassword = (userB64: string): Reply => {
    const user = decode(userB64);
    if (typeof user !== "string") return user;
    s.expectLine((line) => {
      const password = decode(line);
      if (typeof password !== "string") return password;
      return check(s, user, password);
    });
    return reply(334, "", PASSWORD);
  };
  if (initial !== undefined) return askPassword(initial);
  s.expectLine(askPassword);
  return reply(334, "", USERNAME);
}

function plain(s: Session, response: string): Reply | Promise<Reply> {
  const text = decode(response === "=" ? "" : response);
  if (typeof text !== "string") return text;
  const parts = text.split("\0");
  if (parts.length !== 3) return reply(501, "5.5.2", "Error: malformed PLAIN response");
  const [authzid, authcid, password] = parts as [string, string, string];
  // No proxy authorisation: the identity to act as must be the one that logged in (or empty).
  if (authzid !== "" && authzid.toLowerCase() !== authcid.toLowerCase()) return check(s, authcid, "\0invalid\0");
  return check(s, authcid, password);
}

/** base64 (RFC 4648, padded) to text; "*" cancels (RFC 4954 §4). */
function decode(line: string): string | Reply {
  const b64 = line.trim();
  if (b64 === "*") return reply(501, "5.0.0", "Authentication aborted");
  if (b64.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(b64)) return reply(501, "5.5.2", "Error: cannot decode response");
  return Buffer.from(b64, "base64").toString("utf8");
}

async function check(s: Session, login: string, password: string): Promise<Reply> {
  const result = await s.ctx.auth.authenticate(login, password, s.remoteAddress);
  const shown = login.replace(/[^\x21-\x7e]/g, "?").slice(0, 64);
  if (result.ok) {
    s.user = result.user;
    s.ctx.log.info({ session: s.id, client: s.remoteAddress, user: result.user }, "authenticated");
    return reply(235, "2.7.0", "Authentication successful");
  }
  s.ctx.log.info({ session: s.id, client: s.remoteAddress, login: shown, reason: result.reason }, "authentication failed");
  if (result.reason === "throttled") return reply(454, "4.7.0", "Temporary authentication failure, try again later");
  return reply(535, "5.7.8", "Error: authentication failed");
}
