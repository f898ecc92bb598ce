/**
 * RCPT TO (RFC 5321 §4.1.1.3): parse, route through the policy, and refuse unknown users and
 * relaying here, at RCPT time, never with a later bounce; and a local mailbox already at or over
 * its quota (552 5.2.2, store/quota.ts).
 */
import { type Mailbox, parsePathArg } from "../address";
import type { RcptRoute } from "../policy";
import { R, type Reply, reply, SmtpError } from "../reply";
import type { Session, Transaction } from "../session";

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
    if (route.kind === "local" && !tx.rcpts.includes(route.address) && s.ctx.quota.applies(route.users)) return checkQuota(s, tx, route);
    return accept(tx, route);
  } catch (err) {
    if (err instanceof SmtpError) return err.reply;
    throw err;
  }
}

function accept(tx: Transaction, route: RcptRoute): Reply {
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
}

/**
 * A local recipient whose mailbox (any of them, for an alias) is already at or over quota is
 * refused here, as Postfix with a quota policy service or Dovecot LMTP answers RCPT. RFC 5321
 * §4.5.3.1.10: clients treat 552 at RCPT as the temporary 452, so the sender retries later.
 */
async function checkQuota(s: Session, tx: Transaction, route: RcptRoute & { kind: "local" }): Promise<Reply> {
  const full = await s.ctx.quota.firstFull(route.users);
  if (full) {
    s.ctx.log.info(
      { session: s.id, client: s.remoteAddress, rcpt: route.address, user: full.user, usage: full.usage, quota: full.limit },
      "recipient refused: over quota",
    );
    return R.mailboxFull(route.address);
  }
  return accept(tx, route);
}
