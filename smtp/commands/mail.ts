/**
 * MAIL FROM (RFC 5321 §4.1.1.2) with SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531) and
 * AUTH (RFC 4954 §5, accepted and ignored).
 */
import { formatMailbox, parsePathArg } from "../address";
import { R, reply, SmtpError } from "../reply";
import type { Session } from "../session";

export function mail(s: Session, arg: string) {
  if (s.tx) return R.badSequence("Error: nested MAIL command");
  if (s.requiresAuth && !s.user) return R.needAuth();
  try {
    const { mailbox, params } = parsePathArg(arg, "FROM");
    let smtputf8 = false;
    let body: "7BIT" | "8BITMIME" = "7BIT";
    for (const [key, value] of params) {
      switch (key) {
        case "SIZE": {
          if (value === true || !/^\d{1,20}$/.test(value)) return reply(501, "5.5.4", "Bad SIZE parameter");
          if (Number(value) > s.ctx.config.limits.messageSize) return reply(552, "5.3.4", "Message size exceeds fixed limit");
          break;
        }
        case "BODY": {
          const v = value === true ? "" : value.toUpperCase();
          if (v !== "7BIT" && v !== "8BITMIME") return reply(501, "5.5.4", "Bad BODY parameter");
          body = v;
          break;
        }
        case "SMTPUTF8":
          if (value !== true) return reply(501, "5.5.4", "SMTPUTF8 takes no value");
          smtputf8 = true;
          break;
        case "AUTH":
          break;
        default:
          return reply(555, "5.5.4", `Unsupported option: ${key}`);
      }
    }
    if (mailbox?.utf8 && !smtputf8) return reply(553, "5.6.7", "Non-ASCII sender address needs SMTPUTF8");
    s.beginTransaction({
      from: mailbox ? formatMailbox(mailbox) : "",
      smtputf8,
      body,
      rcpts: [],
      localUsers: new Set(),
      remote: new Set(),
    });
    return reply(250, "2.1.0", "Ok");
  } catch (err) {
    if (err instanceof SmtpError) return err.reply;
    throw err;
  }
}
