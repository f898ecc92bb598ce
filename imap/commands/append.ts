/**
 * APPEND (RFC 3501 §6.3.11) with flags, date-time and a literal (or literal8, RFC 3516), answered
 * with APPENDUID (RFC 4315). The size limit is APPENDLIMIT (RFC 7889) = limits.messageSize; a
 * missing mailbox is NO [TRYCREATE]. A message that does not fit in the user's quota
 * (`users[].quota`, store/quota.ts) is NO [OVERQUOTA] (RFC 5530, RFC 9208 §4.3).
 */

import { isOverQuota, type Reservation } from "../../store/quota";
import type { Mailbox } from "../../store/types";
import { AUTHENTICATED, bad, type CommandSpec, no, ok } from "../command";
import { parseDateTime } from "../compiler";
import { parseFlags } from "../flags";
import { checkName } from "../names";
import type { Token } from "../parser";
import type { Session } from "../session";

export const append: CommandSpec = {
  name: "APPEND",
  states: AUTHENTICATED,
  args: [
    { kind: "mailbox", name: "mailbox" },
    { kind: "any", name: "message", rest: true },
  ],
  async run(s, args) {
    const name = s.mailboxArg(args[0]!);
    const rest = args.slice(1);
    let flags: string[] = [];
    let date: Date | undefined;
    let i = 0;
    if (rest[i]?.type === "list") {
      flags = parseFlags((rest[i] as { items: Token[] }).items);
      i++;
    }
    const maybeDate = rest[i];
    if (maybeDate && maybeDate.type === "string" && !maybeDate.literal && rest.length > i + 1) {
      const d = parseDateTime(maybeDate.value.toString("latin1"));
      if (!d) throw bad("Invalid date-time");
      date = d;
      i++;
    }
    const msg = rest[i];
    if (msg?.type !== "string") throw bad("APPEND needs the message as a literal");
    if (rest.length > i + 1) throw bad("MULTIAPPEND is not supported");
    if (msg.value.length === 0) throw no("Cannot append an empty message");
    if (msg.value.length > s.config.limits.messageSize) throw no("Message too big", "TOOBIG");
    if (name !== "INBOX") checkName(name);
    let mailbox: Mailbox;
    try {
      mailbox = await s.store.open(s.user!, name);
    } catch (err) {
      if ((err as Error).name === "NoSuchFolderError") throw no("Mailbox does not exist", "TRYCREATE");
      throw err;
    }
    try {
      const reservation = await reserveQuota(s, msg.value.length);
      let uid: number;
      try {
        uid = await mailbox.append(msg.value, flags, date);
      } catch (err) {
        reservation.release();
        throw err;
      }
      reservation.commit();
      return ok("APPEND completed", "APPENDUID", [mailbox.uidValidity, uid]);
    } finally {
      await mailbox.close();
    }
  },
};

/**
 * Holds `bytes` of the session user's quota for a write, or throws NO [OVERQUOTA] when they do
 * not fit (Dovecot's "Quota exceeded (mailbox for user is full)").
 */
export async function reserveQuota(s: Session, bytes: number): Promise<Reservation> {
  const r = await s.ctx.quota.reserve([s.user!], bytes);
  if (!isOverQuota(r)) return r;
  s.log.info({ user: r.user, usage: r.usage, quota: r.limit, adding: bytes }, "refused: over quota");
  throw no("Quota exceeded (mailbox for user is full)", "OVERQUOTA");
}
