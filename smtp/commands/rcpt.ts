/**
 * RCPT TO (RFC 5321 §4.1.1.3): parse, route through the policy, and refuse unknown users and
 * relaying here, at RCPT time, never with a later bounce.
 */
import { type Mailbox, parsePathArg } from "../address";
import { R, reply, SmtpError } from "../reply";
import type { Session } from "../session";

export function rcpt(s: Session, arg: string) {
  const tx = s.tx;
  if (!tx) return R.badSequence("Error: need MAIL command");
  if (tx.rcpts.length >= s.ctx.config.limits.recipients) return reply(452, "4.5.3", "Error: too many recipients");
  try {
    // "RCPT TO:<Postmaster>" without a domain must always be accepted (RFC 5321 §4.5.1).
    const postmaster = /^TO:\s*<postmaster>/i.test(arg);
    const { mailbox, params } = parsePathArg(postmaster ? arg.replace(/<postmaster>/i, "<>") : arg, "TO");
    if (params.size > 0) return reply(555, "5.5.4", `Unsupported option: ${[...params.keys()][0]}`);
    let m: Mailbox | null = mailbox;
    if (postmaster) m = { local: "postmaster", domain: s.ctx.config.domain, quoted: false, sourceRoute: false, utf8: false };
    if (!m) return reply(501, "5.1.3", "Bad recipient address syntax");
    if (m.utf8 && !tx.smtputf8) return reply(553, "5.6.7", "Non-ASCII recipient address needs SMTPUTF8");
    const route = s.ctx.policy.route(m, { trusted: s.trusted, authenticated: s.user !== null });
    const goesOut = route.kind === "relay" || route.forward.length > 0;
    if (goesOut && /[\s<>]/.test(tx.from)) return reply(553, "5.1.7", "Sender address syntax not supported for relaying");
    if (!tx.rcpts.includes(route.address)) {
      tx.rcpts.push(route.address);
      if (route.kind === "local") {
        for (const u of route.users) tx.localUsers.add(u);
        for (const f of route.forward) tx.remote.add(f);
      } else {
        tx.remote.add(route.address);
      }
    }
    return reply(250, "2.1.5", "Ok");
  } catch (err) {
    if (err instanceof SmtpError) return err.reply;
    throw err;
  }
}
